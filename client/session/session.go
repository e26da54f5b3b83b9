package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/flynn/noise"
	"github.com/parlance-chat/parlance/protocol"
)

// Preamble is what the initiator writes before the handshake.
const Preamble = "\x00PRLNC1\n"

// Errors callers branch on; errors.Is finds them in what Client, Server and
// the Conn methods return.
var (
	// ErrKeyMismatch: the peer proved an identity key other than the one
	// the caller expected.
	ErrKeyMismatch = errors.New("session: identity key mismatch")
	// ErrHandshake: the handshake failed (bad frame, bad payload, a
	// signature that does not bind the static key, timeout, EOF).
	ErrHandshake = errors.New("session: handshake failed")
	// ErrTampered: a message failed to authenticate: altered, dropped,
	// repeated, reordered or from another session.
	ErrTampered = errors.New("session: message failed authentication")
)

var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// Sizes on the wire.
const (
	maxFrame = noise.MaxMsgLen    // bytes after the 2-byte length
	tagSize  = 16                 // ChaChaPoly tag
	maxChunk = maxFrame - tagSize // plaintext bytes per transport frame
	dhLen    = protocol.StaticKeySize
	// maxHandshakeFrame is the longest handshake message: the second,
	// with e, the encrypted s and the encrypted payload.
	maxHandshakeFrame = dhLen + (dhLen + tagSize) + (protocol.MaxHandshakePayloadSize + tagSize)
)

// Local is this node as it presents itself in handshakes: its identity
// key, a Noise static key pair made by NewLocal, and the encoded payload
// that binds the two. One Local serves any number of concurrent
// handshakes.
type Local struct {
	self    Peer
	static  noise.DHKey
	payload []byte
	rng     io.Reader
	// seeded, with a seeded reader, gives each handshake its own stream
	// for its ephemeral key (see seededRand); nil with crypto/rand.
	seeded *seededRand
}

// NewLocal makes the Noise static key pair for this run of the node and
// signs it with id. rng feeds the static and every ephemeral key; nil means
// crypto/rand. A seeded reader makes simulations repeatable and must never
// be used outside them: whoever knows the seed knows every key, and a node
// restarted with the same seed repeats its ephemeral keys, so a captured
// handshake could be replayed to it.
func NewLocal(id ed25519.PrivateKey, nickname, instance string, rng io.Reader) (*Local, error) {
	if len(id) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("session: identity key of %d bytes, want %d", len(id), ed25519.PrivateKeySize)
	}
	var seeded *seededRand
	if rng == nil || rng == rand.Reader {
		rng = rand.Reader
	} else {
		rng = &lockedReader{r: rng}
		seeded = &seededRand{count: make(map[string]uint64)}
		if _, err := io.ReadFull(rng, seeded.seed[:]); err != nil {
			return nil, fmt.Errorf("session: seed: %w", err)
		}
	}
	static, err := suite.GenerateKeypair(rng)
	if err != nil {
		return nil, fmt.Errorf("session: make static key: %w", err)
	}
	p := &protocol.HandshakePayload{Nickname: nickname, Instance: instance}
	p.SignStatic(id, static.Public)
	payload, err := protocol.EncodeHandshakePayload(p)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	pub := id.Public().(ed25519.PublicKey)
	return &Local{
		self:    Peer{Key: pub, Nickname: nickname, Instance: instance},
		static:  static,
		payload: payload,
		rng:     rng,
		seeded:  seeded,
	}, nil
}

// Peer returns what this node proves to the other side of a handshake.
func (l *Local) Peer() Peer { return l.self }

// seededRand gives each handshake of a simulation its own random stream,
// derived from a seed drawn once from the seeded reader, the conn's
// addresses, and how many handshakes this Local ran on those addresses
// before. Handshakes that run at once (a room member dials every other
// member at one instant) would otherwise draw their ephemeral keys from
// one shared reader in goroutine order, and a run's ciphertexts would not
// repeat by seed. It is only for seeded readers, which are only for
// simulations; with crypto/rand every handshake reads crypto/rand.
type seededRand struct {
	seed  [32]byte
	mu    sync.Mutex
	count map[string]uint64
}

// reader returns the stream of a handshake on c.
func (s *seededRand) reader(c net.Conn) io.Reader {
	addrs := c.LocalAddr().String() + " " + c.RemoteAddr().String()
	s.mu.Lock()
	n := s.count[addrs]
	s.count[addrs]++
	s.mu.Unlock()
	h := sha256.New()
	h.Write(s.seed[:])
	fmt.Fprintf(h, "%s %d", addrs, n)
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return mrand.NewChaCha8(key)
}

// lockedReader lets concurrent handshakes share a reader that is not safe
// for concurrent use (a seeded generator).
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (r *lockedReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Read(p)
}

// Peer is what the other side of a handshake proved: the identity key that
// signed its Noise static key, and the nickname and instance it signed
// with it. Instance is empty if the peer sent none.
type Peer struct {
	Key      ed25519.PublicKey
	Nickname string
	Instance string
}

// Client runs the handshake as initiator over c: it writes Preamble, then
// the Noise_XX messages. If expect is not nil and the responder proves
// another identity key, it fails with ErrKeyMismatch before revealing this
// node's identity. The handshake honours ctx. On success the Conn owns c;
// on failure c is closed.
func Client(ctx context.Context, c net.Conn, l *Local, expect ed25519.PublicKey) (*Conn, error) {
	return handshake(ctx, c, l, true, expect)
}

// Server runs the handshake as responder over c, whose Preamble Sniff has
// already consumed. The handshake honours ctx. On success the Conn owns c;
// on failure c is closed.
func Server(ctx context.Context, c net.Conn, l *Local) (*Conn, error) {
	return handshake(ctx, c, l, false, nil)
}

func handshake(ctx context.Context, c net.Conn, l *Local, initiator bool, expect ed25519.PublicKey) (_ *Conn, err error) {
	role := "server"
	if initiator {
		role = "client"
	}
	if err := ctx.Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %s side, peer %s: %w", ErrHandshake, role, c.RemoteAddr(), err)
	}
	// ctx bounds the handshake through the conn's deadline; cancelling
	// ctx moves the deadline into the past, which interrupts any read or
	// write in progress.
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		c.SetDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-interrupted
		}
		if err != nil {
			c.Close()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					err = fmt.Errorf("%w: %w", err, context.Cause(ctx))
				} else if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
					err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
				}
			}
			return
		}
		c.SetDeadline(time.Time{})
	}()

	random := l.rng
	if l.seeded != nil {
		random = l.seeded.reader(c)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Random:        random,
		Pattern:       noise.HandshakeXX,
		Initiator:     initiator,
		Prologue:      []byte(Preamble),
		StaticKeypair: l.static,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s side, peer %s: %w", ErrHandshake, role, c.RemoteAddr(), err)
	}
	h := &handshaker{c: c, hs: hs, role: role}
	var peer Peer
	var send, recv *noise.CipherState
	if initiator {
		// The preamble goes out with the first message.
		h.prefix = []byte(Preamble)
		if err := h.write(nil); err != nil { // -> e
			return nil, err
		}
		payload, _, _, err := h.read() // <- e, ee, s, es, payload
		if err != nil {
			return nil, err
		}
		if peer, err = h.verify(payload); err != nil {
			return nil, err
		}
		if expect != nil && !peer.Key.Equal(expect) {
			return nil, fmt.Errorf("%w: peer %s proved key %s, expected %s",
				ErrKeyMismatch, c.RemoteAddr(), protocol.ShortFingerprint(peer.Key), protocol.ShortFingerprint(expect))
		}
		if send, recv, err = h.writeFinal(l.payload); err != nil { // -> s, se, payload
			return nil, err
		}
	} else {
		payload, _, _, err := h.read() // -> e
		if err != nil {
			return nil, err
		}
		if len(payload) != 0 {
			return nil, h.fail("read first message", fmt.Errorf("unexpected %d-byte payload", len(payload)))
		}
		if err := h.write(l.payload); err != nil { // <- e, ee, s, es, payload
			return nil, err
		}
		payload, cs1, cs2, err := h.read() // -> s, se, payload
		if err != nil {
			return nil, err
		}
		if cs1 == nil || cs2 == nil {
			return nil, h.fail("read last message", errors.New("handshake did not complete"))
		}
		if peer, err = h.verify(payload); err != nil {
			return nil, err
		}
		send, recv = cs2, cs1
	}
	return newConn(c, peer, send, recv), nil
}

// handshaker reads and writes the framed handshake messages of one side.
type handshaker struct {
	c      net.Conn
	hs     *noise.HandshakeState
	role   string
	prefix []byte // written before the next message
}

func (h *handshaker) fail(op string, err error) error {
	return fmt.Errorf("%w: %s side, peer %s: %s: %w", ErrHandshake, h.role, h.c.RemoteAddr(), op, err)
}

func (h *handshaker) write(payload []byte) error {
	_, _, err := h.writeMsg(payload)
	return err
}

// writeFinal writes the initiator's last message and returns its cipher
// states: the first encrypts initiator to responder.
func (h *handshaker) writeFinal(payload []byte) (send, recv *noise.CipherState, err error) {
	cs1, cs2, err := h.writeMsg(payload)
	if err == nil && (cs1 == nil || cs2 == nil) {
		err = h.fail("write last message", errors.New("handshake did not complete"))
	}
	return cs1, cs2, err
}

func (h *handshaker) writeMsg(payload []byte) (cs1, cs2 *noise.CipherState, err error) {
	start := len(h.prefix)
	out := append(h.prefix, 0, 0)
	h.prefix = nil
	out, cs1, cs2, err = h.hs.WriteMessage(out, payload)
	if err != nil {
		return nil, nil, h.fail("write message", err)
	}
	binary.BigEndian.PutUint16(out[start:], uint16(len(out)-start-2))
	if _, err := h.c.Write(out); err != nil {
		return nil, nil, h.fail("write message", err)
	}
	return cs1, cs2, nil
}

// read reads one handshake message of at most maxHandshakeFrame bytes and
// returns its payload.
func (h *handshaker) read() ([]byte, *noise.CipherState, *noise.CipherState, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(h.c, hdr[:]); err != nil {
		return nil, nil, nil, h.fail("read message", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > maxHandshakeFrame {
		return nil, nil, nil, h.fail("read message", fmt.Errorf("%d-byte message exceeds the limit of %d bytes", n, maxHandshakeFrame))
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(h.c, msg); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, nil, nil, h.fail("read message", err)
	}
	payload, cs1, cs2, err := h.hs.ReadMessage(nil, msg)
	if err != nil {
		if errors.Is(err, noise.ErrShortMessage) {
			return nil, nil, nil, h.fail("read message", err)
		}
		return nil, nil, nil, h.fail("read message", fmt.Errorf("%w: %v", ErrTampered, err))
	}
	return payload, cs1, cs2, nil
}

// verify decodes the peer's payload and checks that it binds the peer's
// identity key to the static key it proved in the handshake.
func (h *handshaker) verify(payload []byte) (Peer, error) {
	p, err := protocol.DecodeHandshakePayload(payload)
	if err != nil {
		return Peer{}, h.fail("peer payload", err)
	}
	static := h.hs.PeerStatic()
	if len(static) != dhLen {
		return Peer{}, h.fail("peer payload", errors.New("peer sent no static key"))
	}
	key, err := p.VerifyStatic(bytes.Clone(static))
	if err != nil {
		return Peer{}, h.fail("peer payload", err)
	}
	return Peer{Key: key, Nickname: p.Nickname, Instance: p.Instance}, nil
}

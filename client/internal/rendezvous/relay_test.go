package rendezvous_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/protocol"
)

// relayNode is a rendezvous client that accepts relayed streams; the
// streams offered to it arrive on incoming.
type relayNode struct {
	*node
	cfg      rendezvous.Config
	incoming chan rendezvous.Incoming
}

func (w *world) runRelay(name, ip string, seed uint64, opts ...func(*rendezvous.Config)) *relayNode {
	rn := &relayNode{incoming: make(chan rendezvous.Incoming, 8)}
	opts = append(opts, func(cfg *rendezvous.Config) {
		cfg.Relay = true
		cfg.OnRelayIncoming = func(in rendezvous.Incoming) {
			select {
			case rn.incoming <- in:
			default: // must not block: drop what the test does not take
			}
		}
		rn.cfg = *cfg
	})
	rn.node = w.run(name, ip, 4000, seed, opts...)
	return rn
}

// token returns the relay token of the node's current registration.
func (n *node) token() string {
	_, tok := n.relay()
	return tok
}

// relay returns the server of the node's current registration and its
// relay token there.
func (n *node) relay() (server, token string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range n.updates {
		if u.Kind == rendezvous.Registered {
			server, token = u.Server, u.RelayToken
		}
	}
	return server, token
}

// relayPair opens a relayed stream from a to b and returns both ends.
func relayPair(t *testing.T, a, b *relayNode) (ac, bc net.Conn) {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		in := <-b.incoming
		server, token := b.relay()
		switch {
		case in.From != a.selfID():
			accepted <- result{nil, errors.New("relay_incoming from " + in.From + ", want " + a.selfID())}
			return
		case in.Server != server || in.Token != token:
			accepted <- result{nil, fmt.Errorf("relay_incoming for %s with token %q, want the current registration's: %s, %q", in.Server, in.Token, server, token)}
			return
		}
		c, err := rendezvous.AcceptRelay(t.Context(), b.cfg, in)
		accepted <- result{c, err}
	}()
	server, token := a.relay()
	ac, err := rendezvous.DialRelay(t.Context(), a.cfg, server, token, b.selfID())
	if err != nil {
		t.Fatalf("DialRelay: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatalf("AcceptRelay: %v", r.err)
	}
	t.Cleanup(func() { ac.Close(); r.c.Close() })
	return ac, r.c
}

func TestRelayedNoiseSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		alice := w.runRelay("alice", "192.0.2.1", 1)
		bob := w.runRelay("bob", "198.51.100.2", 2)
		time.Sleep(time.Second)
		if !protocol.ValidRelayToken(alice.token()) || !protocol.ValidRelayToken(bob.token()) {
			t.Fatalf("relay tokens %q and %q", alice.token(), bob.token())
		}
		ac, bc := relayPair(t, alice, bob)

		aliceID := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
		bobID := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
		al, err := session.NewLocal(aliceID, "alice", "a1", rand.NewChaCha8([32]byte{1}))
		if err != nil {
			t.Fatal(err)
		}
		bl, err := session.NewLocal(bobID, "bob", "b1", rand.NewChaCha8([32]byte{2}))
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan *session.Conn, 1)
		go func() {
			enc, plain, err := session.Sniff(bc)
			if err != nil || !enc {
				t.Errorf("Sniff: %v, %v", enc, err)
				served <- nil
				return
			}
			sc, err := session.Server(t.Context(), plain, bl)
			if err != nil {
				t.Errorf("session.Server: %v", err)
			}
			served <- sc
		}()
		as, err := session.Client(t.Context(), ac, al, bobID.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatalf("session.Client: %v", err)
		}
		bs := <-served
		if bs == nil {
			t.FailNow()
		}
		if got := bs.Remote().Nickname; got != "alice" {
			t.Fatalf("bob's session is with %q, want alice", got)
		}

		// 1 MiB each way at once, through the session inside the relay.
		const size = 1 << 20
		data := func(seed uint64) []byte {
			b := make([]byte, size)
			r := rand.New(rand.NewPCG(seed, 0))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			return b
		}
		toBob, toAlice := data(1), data(2)
		errs := make(chan error, 2)
		go func() { _, err := as.Write(toBob); errs <- err }()
		go func() { _, err := bs.Write(toAlice); errs <- err }()
		gotBob, gotAlice := make([]byte, size), make([]byte, size)
		if _, err := io.ReadFull(bs, gotBob); err != nil {
			t.Fatalf("bob reads: %v", err)
		}
		if _, err := io.ReadFull(as, gotAlice); err != nil {
			t.Fatalf("alice reads: %v", err)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		if !bytes.Equal(gotBob, toBob) || !bytes.Equal(gotAlice, toAlice) {
			t.Fatal("the bytes differ from those sent")
		}

		// Closing one end is EOF at the other.
		as.Close()
		if n, err := bs.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after alice closed, bob reads %d, %v; want EOF", n, err)
		}
	})
}

func TestRelayConnIsANetConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		alice := w.runRelay("alice", "192.0.2.1", 1)
		bob := w.runRelay("bob", "198.51.100.2", 2)
		time.Sleep(time.Second)
		ac, bc := relayPair(t, alice, bob)

		// A write larger than a frame arrives whole, in order.
		big := bytes.Repeat([]byte("0123456789abcdef"), protocol.MaxRelayFrameSize/16*3+1)
		go ac.Write(big)
		got := make([]byte, len(big))
		if _, err := io.ReadFull(bc, got); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read %v; bytes equal %v", err, bytes.Equal(got, big))
		}
		// A read deadline fails the read with a timeout.
		start := time.Now()
		bc.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := bc.Read(make([]byte, 10))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%v is not a timeout net.Error", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("timed out after %v, want 3s", d)
		}
		if ac.RemoteAddr().Network() != "relay" {
			t.Errorf("RemoteAddr network %q", ac.RemoteAddr().Network())
		}
	})
}

func TestRelayRefusalsReachTheCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		alice := w.runRelay("alice", "192.0.2.1", 1)
		bob := w.runRelay("bob", "198.51.100.2", 2)
		orig := w.run("original", "203.0.113.3", 4003, 3) // no relay
		time.Sleep(time.Second)
		if orig.token() != "" {
			t.Fatalf("a client without Relay got a relay token")
		}
		for _, tc := range []struct {
			name, peer, text string
		}{
			{"unknown peer", "no-such-peer", "Unknown peer"},
			{"peer without the relay", orig.selfID(), "Peer does not accept relayed streams"},
		} {
			t.Logf("step: %s", tc.name)
			_, err := rendezvous.DialRelay(t.Context(), alice.cfg, serverURL(serverIP), alice.token(), tc.peer)
			if !errors.Is(err, rendezvous.ErrRelayRefused) || err.Error() != `rendezvous: relay refused: "`+tc.text+`"` {
				t.Fatalf("DialRelay: %v, want %q refused", err, tc.text)
			}
		}
		t.Logf("step: the context bounds the wait for the peer")
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := rendezvous.DialRelay(ctx, alice.cfg, serverURL(serverIP), alice.token(), bob.selfID())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("DialRelay that bob never accepts: %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("gave up after %v, want 2s", d)
		}
		<-bob.incoming // it was offered
		t.Logf("step: the server's accept timeout")
		_, err = rendezvous.DialRelay(t.Context(), alice.cfg, serverURL(serverIP), alice.token(), bob.selfID())
		if !errors.Is(err, rendezvous.ErrRelayRefused) {
			t.Fatalf("DialRelay that bob never accepts: %v, want the server's refusal", err)
		}
		t.Logf("step: a stale token")
		alice.stop()
		_, err = rendezvous.DialRelay(t.Context(), alice.cfg, serverURL(serverIP), alice.token(), bob.selfID())
		if !errors.Is(err, rendezvous.ErrRelayRefused) {
			t.Fatalf("DialRelay with the token of an ended registration: %v", err)
		}
	})
}

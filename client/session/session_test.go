package session

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// testIdentity is a fixed identity key derived from seed.
func testIdentity(seed uint64) ed25519.PrivateKey {
	var s [ed25519.SeedSize]byte
	binary.BigEndian.PutUint64(s[:], seed)
	return ed25519.NewKeyFromSeed(s[:])
}

// testLocal is a Local with a fixed identity whose Noise keys come from a
// ChaCha8 stream seeded with seed, so runs repeat.
func testLocal(t testing.TB, nick string, seed uint64) *Local {
	t.Helper()
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	l, err := NewLocal(testIdentity(seed), nick, fmt.Sprintf("%s-%d", nick, seed), rand.NewChaCha8(s))
	if err != nil {
		t.Fatalf("NewLocal(%s): %v", nick, err)
	}
	return l
}

// result is what one side of a handshake returned.
type result struct {
	conn *Conn
	err  error
}

// connect runs Client over cc and Sniff then Server over sc at once, and
// returns both results. The conns it returns are closed at cleanup.
func connect(t *testing.T, cc, sc net.Conn, client, server *Local, expect ed25519.PublicKey) (cli, srv result) {
	t.Helper()
	ctx := t.Context()
	done := make(chan result, 1)
	go func() {
		encrypted, plain, err := Sniff(sc)
		if err != nil {
			sc.Close()
			done <- result{err: err}
			return
		}
		if !encrypted {
			sc.Close()
			done <- result{err: errors.New("sniff: the client's preamble was not recognised")}
			return
		}
		c, err := Server(ctx, plain, server)
		done <- result{c, err}
	}()
	c, err := Client(ctx, cc, client, expect)
	cli, srv = result{c, err}, <-done
	for _, r := range []result{cli, srv} {
		if r.conn != nil {
			t.Cleanup(func() { r.conn.Close() })
		}
	}
	return cli, srv
}

// pipePair is an established session over net.Pipe between alice (the
// client) and bob.
func pipePair(t *testing.T) (alice, bob *Conn) {
	t.Helper()
	cc, sc := net.Pipe()
	cli, srv := connect(t, cc, sc, testLocal(t, "alice", 1), testLocal(t, "bob", 2), nil)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
	}
	return cli.conn, srv.conn
}

// tapConn records everything written to the conn it wraps.
type tapConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

// splitFrames cuts b into length-prefixed frames, each with its header.
func splitFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var frames [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("stray byte after the last frame")
		}
		n := 2 + int(binary.BigEndian.Uint16(b))
		if n > len(b) {
			t.Fatalf("frame of %d bytes with %d left", n, len(b))
		}
		frames = append(frames, b[:n])
		b = b[n:]
	}
	return frames
}

func TestRoundTrip(t *testing.T) {
	sizes := []struct {
		name   string
		size   int
		frames int
	}{
		{"one byte", 1, 1},
		{"a chat line", 200, 1},
		{"one full frame", maxChunk, 1},
		{"64 KiB, split over two frames", 64 << 10, 2},
		{"1 MiB", 1 << 20, (1<<20 + maxChunk - 1) / maxChunk},
	}
	for _, sz := range sizes {
		for _, dir := range []string{"client to server", "server to client"} {
			t.Run(sz.name+" "+dir, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					cc, sc := net.Pipe()
					var tap *tapConn
					var cliConn, srvConn net.Conn = cc, sc
					if dir == "client to server" {
						tap = &tapConn{Conn: cc}
						cliConn = tap
					} else {
						tap = &tapConn{Conn: sc}
						srvConn = tap
					}
					cli, srv := connect(t, cliConn, srvConn, testLocal(t, "alice", 1), testLocal(t, "bob", 2), nil)
					if cli.err != nil || srv.err != nil {
						t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
					}
					from, to := cli.conn, srv.conn
					if dir == "server to client" {
						from, to = to, from
					}
					handshakeBytes := len(tap.written())

					msg := make([]byte, sz.size)
					for i := range msg {
						msg[i] = byte(i * 7)
					}
					werr := make(chan error, 1)
					go func() {
						n, err := from.Write(msg)
						if err == nil && n != len(msg) {
							err = fmt.Errorf("wrote %d of %d bytes", n, len(msg))
						}
						werr <- err
					}()
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(to, got); err != nil {
						t.Fatalf("read: %v", err)
					}
					if err := <-werr; err != nil {
						t.Fatalf("write: %v", err)
					}
					if !bytes.Equal(got, msg) {
						t.Fatal("the plaintext changed on the way")
					}
					frames := splitFrames(t, tap.written()[handshakeBytes:])
					if len(frames) != sz.frames {
						t.Errorf("%d bytes went in %d frames, want %d", sz.size, len(frames), sz.frames)
					}
					for i, f := range frames {
						if len(f) > 2+maxFrame {
							t.Errorf("frame %d is %d bytes", i, len(f))
						}
						if bytes.Contains(f, msg[:min(len(msg), 16)]) && sz.size >= 16 {
							t.Errorf("frame %d carries plaintext", i)
						}
					}
				})
			})
		}
	}
}

func TestPeersLearnEachOther(t *testing.T) {
	tests := []struct {
		name string
		side func(cli, srv *Conn) *Conn
		want string
	}{
		{"the client learns the server's key, nickname and instance", func(cli, srv *Conn) *Conn { return cli }, "bob"},
		{"the server learns the client's key, nickname and instance", func(cli, srv *Conn) *Conn { return srv }, "alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				locals := map[string]*Local{"alice": testLocal(t, "alice", 1), "bob": testLocal(t, "bob", 2)}
				cc, sc := net.Pipe()
				cli, srv := connect(t, cc, sc, locals["alice"], locals["bob"], nil)
				if cli.err != nil || srv.err != nil {
					t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
				}
				got, want := tt.side(cli.conn, srv.conn).Remote(), locals[tt.want].Peer()
				if !got.Key.Equal(want.Key) || got.Nickname != want.Nickname || got.Instance != want.Instance {
					t.Errorf("got %s %q %q, want %s %q %q",
						protocol.ShortFingerprint(got.Key), got.Nickname, got.Instance,
						protocol.ShortFingerprint(want.Key), want.Nickname, want.Instance)
				}
			})
		})
	}
}

func TestExpectedKey(t *testing.T) {
	bob := testLocal(t, "bob", 2)
	mallory := testIdentity(3).Public().(ed25519.PublicKey)
	tests := []struct {
		name   string
		expect ed25519.PublicKey
		want   error
	}{
		{"no expectation accepts any key", nil, nil},
		{"the expected key is accepted", bob.Peer().Key, nil},
		{"another key is refused", mallory, ErrKeyMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cc, sc := net.Pipe()
				cli, srv := connect(t, cc, sc, testLocal(t, "alice", 1), bob, tt.expect)
				if !errors.Is(cli.err, tt.want) || (tt.want == nil) != (cli.err == nil) {
					t.Fatalf("client: %v, want %v", cli.err, tt.want)
				}
				if tt.want == nil {
					return
				}
				for _, fp := range []string{protocol.ShortFingerprint(bob.Peer().Key), protocol.ShortFingerprint(mallory)} {
					if !strings.Contains(cli.err.Error(), fp) {
						t.Errorf("the error %q does not name %s", cli.err, fp)
					}
				}
				if cli.conn != nil || srv.conn != nil {
					t.Fatal("a session was established")
				}
				// The client stops before its last message: the server
				// never learns who called.
				if !errors.Is(srv.err, ErrHandshake) || !errors.Is(srv.err, io.EOF) {
					t.Errorf("server: %v, want ErrHandshake at EOF", srv.err)
				}
				if _, err := cc.Write([]byte{0}); !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("the client's conn is still open: write gave %v", err)
				}
			})
		})
	}
}

// withPayload returns a copy of l that sends payload in handshakes.
func withPayload(l *Local, payload []byte) *Local {
	bad := *l
	bad.payload = payload
	return &bad
}

func TestPayloadMustBindTheStaticKey(t *testing.T) {
	alice := testLocal(t, "alice", 1)
	encode := func(p *protocol.HandshakePayload) []byte {
		b, err := protocol.EncodeHandshakePayload(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherStatic := testLocal(t, "alice", 9).static.Public
	overOtherStatic := &protocol.HandshakePayload{Nickname: "alice"}
	overOtherStatic.SignStatic(testIdentity(1), otherStatic)
	// mallory presents alice's identity key with mallory's signature.
	stolenKey := &protocol.HandshakePayload{Nickname: "alice"}
	stolenKey.SignStatic(testIdentity(3), alice.static.Public)
	stolenKey.Key = protocol.EncodePublicKey(alice.Peer().Key)
	bigNick := `{"key":"` + protocol.EncodePublicKey(alice.Peer().Key) + `","sig":"` + strings.Repeat("A", 86) + `==","nickname":"` + strings.Repeat("a", 1100) + `"}`

	bads := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"a signature over another static key", encode(overOtherStatic), protocol.ErrBadSignature},
		{"a signature by another identity key", encode(stolenKey), protocol.ErrBadSignature},
		{"a payload that is not JSON", []byte("hello"), protocol.ErrMalformed},
		{"an empty payload", nil, protocol.ErrMalformed},
		{"a payload over 1 KiB", []byte(bigNick), ErrHandshake},
	}
	for _, bad := range bads {
		for _, role := range []string{"from the server", "from the client"} {
			t.Run(bad.name+" "+role, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					client, server := testLocal(t, "alice", 1), testLocal(t, "bob", 2)
					if role == "from the server" {
						server = withPayload(server, bad.payload)
					} else {
						client = withPayload(client, bad.payload)
					}
					cc, sc := net.Pipe()
					cli, srv := connect(t, cc, sc, client, server, nil)
					refuser := cli
					if role == "from the client" {
						refuser = srv
					}
					if !errors.Is(refuser.err, ErrHandshake) || !errors.Is(refuser.err, bad.want) {
						t.Errorf("refused with %v, want ErrHandshake and %v", refuser.err, bad.want)
					}
					if srv.conn != nil {
						t.Fatal("the server has a session")
					}
					// The client cannot tell that the server refused its
					// last message; its session reads nothing but EOF.
					if cli.conn != nil {
						if n, err := cli.conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
							t.Errorf("the client's session read %d bytes, %v; want EOF", n, err)
						}
					}
				})
			})
		}
	}
}

func TestHandshakeHonoursContext(t *testing.T) {
	tests := []struct {
		name  string
		role  string
		ctx   func(context.Context) (context.Context, context.CancelFunc)
		want  error
		after time.Duration
	}{
		{"a client whose server never answers stops at the deadline", "client",
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 5*time.Second)
			},
			context.DeadlineExceeded, 5 * time.Second},
		{"a server whose client never writes stops at the deadline", "server",
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 5*time.Second)
			},
			context.DeadlineExceeded, 5 * time.Second},
		{"cancelling interrupts a waiting client", "client",
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(2*time.Second, cancel)
				return ctx, cancel
			},
			context.Canceled, 2 * time.Second},
		{"cancelling interrupts a waiting server", "server",
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				time.AfterFunc(2*time.Second, cancel)
				return ctx, cancel
			},
			context.Canceled, 2 * time.Second},
		{"a cancelled context stops before anything is sent", "client",
			func(ctx context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				return ctx, cancel
			},
			context.Canceled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, silent := net.Pipe()
				// The other side reads everything and never writes.
				drained := make(chan struct{})
				go func() {
					defer close(drained)
					io.Copy(io.Discard, silent)
				}()
				ctx, cancel := tt.ctx(t.Context())
				defer cancel()
				start := time.Now()
				var err error
				if tt.role == "client" {
					_, err = Client(ctx, c, testLocal(t, "alice", 1), nil)
				} else {
					_, err = Server(ctx, c, testLocal(t, "bob", 2))
				}
				if !errors.Is(err, ErrHandshake) || !errors.Is(err, tt.want) {
					t.Errorf("handshake returned %v, want ErrHandshake and %v", err, tt.want)
				}
				if took := time.Since(start); took != tt.after {
					t.Errorf("handshake returned after %v, want %v", took, tt.after)
				}
				<-drained // the conn was closed
				silent.Close()
			})
		})
	}
}

func TestSniff(t *testing.T) {
	line := `{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n"
	tests := []struct {
		name      string
		sent      string
		encrypted bool
		rest      string // what reading the returned conn gives
		want      error
	}{
		{"a plaintext JSON line comes back intact", line, false, line, nil},
		{"a one-byte plaintext stream comes back intact", "{", false, "{", nil},
		{"the preamble is consumed and nothing after it", Preamble + "\x00\x20noise", true, "\x00\x20noise", nil},
		{"another preamble version is refused", "\x00PRLNC2\n", false, "", ErrHandshake},
		{"a stream that ends inside the preamble is refused", "\x00PRL", false, "", io.ErrUnexpectedEOF},
		{"an empty stream is an EOF", "", false, "", io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, peer := net.Pipe()
				go func() {
					io.WriteString(peer, tt.sent)
					peer.Close()
				}()
				defer c.Close()
				encrypted, plain, err := Sniff(c)
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("Sniff: %v, want %v", err, tt.want)
				}
				if err != nil {
					return
				}
				if encrypted != tt.encrypted {
					t.Errorf("encrypted = %v, want %v", encrypted, tt.encrypted)
				}
				got, err := io.ReadAll(plain)
				if err != nil || string(got) != tt.rest {
					t.Errorf("the conn then reads %q, %v; want %q", got, err, tt.rest)
				}
			})
		})
	}
}

// One goroutine per side writes while another reads: the two directions
// do not wait on each other.
func TestFullDuplex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alice, bob := pipePair(t)
		const size = 300 << 10
		msg := bytes.Repeat([]byte("duplex "), size/7)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for _, c := range []*Conn{alice, bob} {
			wg.Go(func() {
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("write: %w", err)
				}
			})
			wg.Go(func() {
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- fmt.Errorf("read: %w", err)
				} else if !bytes.Equal(got, msg) {
					errs <- errors.New("read altered bytes")
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// splitConn, once split is set, writes each buffer in two halves two
// seconds apart.
type splitConn struct {
	net.Conn
	split atomic.Bool
}

func (c *splitConn) Write(p []byte) (int, error) {
	if !c.split.Load() || len(p) < 2 {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(2 * time.Second)
	m, err := c.Conn.Write(p[len(p)/2:])
	return n + m, err
}

func TestTimeouts(t *testing.T) {
	t.Run("a read timeout before a frame is not fatal", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			alice, bob := pipePair(t)
			bob.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			n, err := bob.Read(buf)
			if ne, ok := err.(net.Error); n != 0 || !ok || !ne.Timeout() {
				t.Fatalf("read with nothing sent: %d, %v; want a net.Error timeout", n, err)
			}
			bob.SetReadDeadline(time.Time{})
			go alice.Write([]byte("after the timeout"))
			n, err = bob.Read(buf)
			if err != nil || string(buf[:n]) != "after the timeout" {
				t.Fatalf("read after the timeout: %q, %v", buf[:n], err)
			}
		})
	})
	t.Run("a read timeout inside a frame keeps the part already read", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cc, sc := net.Pipe()
			split := &splitConn{Conn: cc}
			cli, srv := connect(t, split, sc, testLocal(t, "alice", 1), testLocal(t, "bob", 2), nil)
			if cli.err != nil || srv.err != nil {
				t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
			}
			split.split.Store(true)
			go cli.conn.Write([]byte("sent in two halves"))
			srv.conn.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64)
			if n, err := srv.conn.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read of half a frame: %d, %v; want a timeout", n, err)
			}
			srv.conn.SetReadDeadline(time.Time{})
			n, err := srv.conn.Read(buf)
			if err != nil || string(buf[:n]) != "sent in two halves" {
				t.Fatalf("read after the timeout: %q, %v", buf[:n], err)
			}
		})
	})
	t.Run("a write timeout is final for writes and reads go on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			alice, bob := pipePair(t)
			alice.SetWriteDeadline(time.Now().Add(time.Second))
			_, err := alice.Write([]byte("nobody reads this"))
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("write with no reader: %v; want a net.Error timeout", err)
			}
			alice.SetWriteDeadline(time.Time{})
			if _, err2 := alice.Write([]byte("again")); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("write after the timeout: %v; want the same error", err2)
			}
			go bob.Write([]byte("bob still talks"))
			buf := make([]byte, 64)
			n, err := alice.Read(buf)
			if err != nil || string(buf[:n]) != "bob still talks" {
				t.Fatalf("read after the write timeout: %q, %v", buf[:n], err)
			}
		})
	})
}

func TestCloseEndsTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alice, bob := pipePair(t)
		go func() {
			alice.Write([]byte("last words"))
			alice.Close()
		}()
		got, err := io.ReadAll(bob)
		if err != nil || string(got) != "last words" {
			t.Fatalf("ReadAll: %q, %v", got, err)
		}
		if _, err := bob.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read after EOF: %v, want io.EOF again", err)
		}
		if _, err := alice.Write([]byte("x")); err == nil {
			t.Error("write after Close succeeded")
		}
	})
}

// The session runs over a netsim TCP stream, next to an original peer's
// plaintext line on the same listener.
func TestOverNetsim(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		ah, bh, oh := nw.AddHost("alice", lan), nw.AddHost("bob", lan), nw.AddHost("orig", lan)
		nw.SetDefaultLink(netsim.Link{Latency: time.Millisecond})
		alice, bob := testLocal(t, "alice", 1), testLocal(t, "bob", 2)
		ln, err := bh.Listen(bh.Context(), "tcp", ":7000")
		if err != nil {
			t.Fatal(err)
		}
		type got struct {
			encrypted bool
			peer      Peer
			line      string
			err       error
		}
		gots := make(chan got, 2)
		bh.Go(func(ctx context.Context) {
			defer ln.Close()
			for range 2 {
				c, err := ln.Accept()
				if err != nil {
					gots <- got{err: err}
					return
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				encrypted, plain, err := Sniff(c)
				if err != nil {
					c.Close()
					gots <- got{err: err}
					continue
				}
				g := got{encrypted: encrypted}
				r := plain
				if encrypted {
					sc, err := Server(ctx, plain, bob)
					if err != nil {
						gots <- got{err: err}
						continue
					}
					g.peer, r = sc.Remote(), sc
					sc.Write([]byte("hi alice\n"))
				}
				g.line, g.err = bufio.NewReader(r).ReadString('\n')
				r.Close()
				gots <- g
			}
		})
		reply := make(chan string, 1)
		ah.Go(func(ctx context.Context) {
			c, err := ah.DialContext(ctx, "tcp", bh.IP().String()+":7000")
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			sc, err := Client(ctx, c, alice, bob.Peer().Key)
			if err != nil {
				t.Errorf("client: %v", err)
				return
			}
			defer sc.Close()
			buf := make([]byte, 64)
			n, _ := sc.Read(buf)
			reply <- string(buf[:n])
			sc.Write([]byte("hi bob\n"))
			sc.Read(buf) // until bob closes
		})
		const plainLine = `{"from":"carol","content":"hello","timestamp":1}` + "\n"
		nw.RunFor(time.Second) // the session first, then the original peer
		oh.Go(func(ctx context.Context) {
			c, err := oh.DialContext(ctx, "tcp", bh.IP().String()+":7000")
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			io.WriteString(c, plainLine)
			c.Read(make([]byte, 1)) // until bob closes
		})
		enc, orig := <-gots, <-gots
		if enc.err != nil || !enc.encrypted || enc.line != "hi bob\n" || enc.peer.Nickname != "alice" || !enc.peer.Key.Equal(alice.Peer().Key) {
			t.Errorf("bob's session: %+v", enc)
		}
		if r := <-reply; r != "hi alice\n" {
			t.Errorf("alice read %q", r)
		}
		if orig.err != nil || orig.encrypted || orig.line != plainLine {
			t.Errorf("the original peer's line: %+v", orig)
		}
		nw.RunFor(time.Second)
	})
}

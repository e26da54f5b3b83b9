package session

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	mrand "math/rand/v2"
	"net"
	"testing"
)

// addrConn is a net.Conn that only has addresses.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func tcp(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }

func draw(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A seeded Local gives each handshake a stream of its own, a function of
// the seed, the conn's addresses and the handshakes before on them, so
// that concurrent handshakes do not take keys in goroutine order; with
// crypto/rand every handshake reads crypto/rand.
func TestSeededHandshakeRandom(t *testing.T) {
	_, id, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []io.Reader{nil, rand.Reader} {
		l, err := NewLocal(id, "alice", "", r)
		if err != nil {
			t.Fatal(err)
		}
		if l.seeded != nil || l.rng != rand.Reader {
			t.Fatalf("NewLocal with %v: seeded streams, or not crypto/rand", r)
		}
	}
	local := func() *Local {
		l, err := NewLocal(id, "alice", "", mrand.NewChaCha8([32]byte{7}))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := local(), local()
	c1 := addrConn{local: tcp("10.0.0.1:40000"), remote: tcp("10.0.0.2:7000")}
	c2 := addrConn{local: tcp("10.0.0.1:40001"), remote: tcp("10.0.0.3:7000")}
	// a draws for c1 then c2; b for c2 then c1: the same streams.
	a1, a2 := draw(t, a.seeded.reader(c1)), draw(t, a.seeded.reader(c2))
	b2, b1 := draw(t, b.seeded.reader(c2)), draw(t, b.seeded.reader(c1))
	if !bytes.Equal(a1, b1) || !bytes.Equal(a2, b2) {
		t.Fatal("a handshake's stream depends on the order of the handshakes on other conns")
	}
	if bytes.Equal(a1, a2) {
		t.Fatal("two conns got the same stream")
	}
	if again := draw(t, a.seeded.reader(c1)); bytes.Equal(again, a1) {
		t.Fatal("a second handshake on the same addresses got the first one's stream")
	}
}

package rendezvous_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/protocol"
)

// identity returns a fixed Ed25519 key made from seed.
func identity(seed byte) ed25519.PrivateKey {
	var s [ed25519.SeedSize]byte
	s[0] = seed
	return ed25519.NewKeyFromSeed(s[:])
}

func keyOf(priv ed25519.PrivateKey) string {
	return protocol.EncodePublicKey(priv.Public().(ed25519.PublicKey))
}

func withIdentity(priv ed25519.PrivateKey) func(*rendezvous.Config) {
	return func(c *rendezvous.Config) { c.Identity = priv }
}

// keys maps the nicknames n sees to the keys listed with them.
func (n *node) keys() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := map[string]string{}
	for _, p := range n.peers {
		m[p.Nickname] = p.Key
	}
	return m
}

// Our server checks the signature and lists the key; an unsigned client
// next to it is listed without one.
func TestSignedRegisterListsTheKeyThroughOurServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		alice := w.run("alice", "192.0.2.1", 4001, 1, withIdentity(identity(1)))
		bob := w.run("bob", "192.0.2.2", 4002, 2)
		time.Sleep(time.Second)
		if got := bob.keys(); len(got) != 1 || got["alice"] != keyOf(identity(1)) {
			t.Fatalf("bob sees %v, want alice with key %s", got, keyOf(identity(1)))
		}
		if got := alice.keys(); len(got) != 1 || got["bob"] != "" {
			t.Fatalf("alice sees %v, want bob without a key", got)
		}
		// A registration made again after a server restart is signed
		// afresh and listed with the key again.
		w.stopServer()
		w.startServer(2)
		time.Sleep(rendezvous.ReconnectWithin + time.Second)
		if got := bob.keys(); got["alice"] != keyOf(identity(1)) {
			t.Fatalf("after a restart bob sees %v, want alice with her key", got)
		}
	})
}

// Every register is signed when it is sent: each one the server decodes
// verifies, with the identity's key and a ts of its sending, so a
// reconnect never repeats an old signature.
func TestEveryRegisterIsSignedWhenSent(t *testing.T) {
	for _, tc := range []struct {
		name string
		priv ed25519.PrivateKey
	}{
		{"with an identity", identity(7)},
		{"without an identity, as the original", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t)
				orig := &originalServer{hangUp: true}
				w.startHandler(orig)
				alice := w.run("alice", "192.0.2.1", 4001, 1, withIdentity(tc.priv))
				time.Sleep(10 * time.Second) // several reconnects (backoff from 1 s)
				alice.stop()
				regs := orig.received()
				if len(regs) < 3 {
					t.Fatalf("%d registers in 10 s of reconnects, want at least 3", len(regs))
				}
				for i, r := range regs {
					if tc.priv == nil {
						if r.msg.Signed() || r.msg.TS != 0 || r.msg.Sig != "" {
							t.Fatalf("register %d carries a signature without an identity: %+v", i, r.msg.Signature)
						}
						continue
					}
					if err := r.msg.Verify(); err != nil {
						t.Fatalf("register %d: %v", i, err)
					}
					if r.msg.Key != keyOf(tc.priv) {
						t.Fatalf("register %d has key %s, want %s", i, r.msg.Key, keyOf(tc.priv))
					}
					if d := r.at.Sub(r.msg.Time()); d < 0 || d > time.Second {
						t.Fatalf("register %d signed at %v, received at %v: want signed when sent", i, r.msg.Time(), r.at)
					}
					if i > 0 && r.msg.TS <= regs[i-1].msg.TS {
						t.Fatalf("register %d has ts %d, not after the previous %d", i, r.msg.TS, regs[i-1].msg.TS)
					}
				}
			})
		})
	}
}

func TestIdentityMustBeAKey(t *testing.T) {
	err := rendezvous.Run(context.Background(), rendezvous.Config{
		URLs:     []string{"ws://10.0.0.1:8080/"},
		Nickname: "alice",
		Dial: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("no network in this test")
		},
		Rand:     rand.New(rand.NewPCG(1, 0)),
		Identity: ed25519.PrivateKey(make([]byte, 10)),
	})
	if err == nil || !strings.Contains(err.Error(), "Identity") {
		t.Fatalf("Run with a 10-byte identity: %v, want a Config error", err)
	}
}

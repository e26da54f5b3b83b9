package rendezvous

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

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

// signedRegister is a register signed by priv at time at.
func signedRegister(nick string, port int, priv ed25519.PrivateKey, at time.Time, caps ...string) *protocol.Register {
	m := &protocol.Register{Nickname: nick, LocalAddr: fmt.Sprintf("0.0.0.0:%d", port), Caps: caps}
	m.Sign(priv, at)
	return m
}

// registerWith sends m and expects registered.
func (c *client) registerWith(m *protocol.Register) *protocol.Registered {
	c.t.Helper()
	c.send(m)
	got := c.recv()
	r, ok := got.(*protocol.Registered)
	if !ok {
		c.t.Fatalf("got %#v, want registered", got)
	}
	return r
}

// byID returns the entry of peer id in peers.
func byID(t *testing.T, peers []protocol.PeerInfo, id string) protocol.PeerInfo {
	t.Helper()
	for _, p := range peers {
		if p.PeerID == id {
			return p
		}
	}
	t.Fatalf("peer %s not in %+v", id, peers)
	return protocol.PeerInfo{}
}

// errorsOfKind reads parlance_bootstrap_errors_total{kind}.
func errorsOfKind(t *testing.T, s *Server, kind string) float64 {
	t.Helper()
	mfs, err := s.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parlance_bootstrap_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return value(m)
				}
			}
		}
	}
	return 0
}

func TestSignedRegisterIsListedWithItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		alice, bob := identity(1), identity(2)
		watcher := dial(t, sim, "192.0.2.1")
		watcher.register("watcher", 1000, protocol.CapPush)
		watcher.recv() // the snapshot

		a := dial(t, sim, "192.0.2.10")
		ra := a.registerWith(signedRegister("alice", 4001, alice, time.Now()))
		if ap, err := netip.ParseAddrPort(ra.Observed); err != nil || ap.Addr().String() != "192.0.2.10" || ap.Port() == 0 {
			t.Errorf("registered says observed %q, want 192.0.2.10 and the connection's port", ra.Observed)
		}
		j := watcher.recv().(*protocol.PeerJoined)
		if j.Peer.PeerID != ra.PeerID || j.Peer.Key != keyOf(alice) {
			t.Fatalf("peer_joined %+v, want alice with key %s", j.Peer, keyOf(alice))
		}
		// A ts at the edge of the window, either way, is ordinary skew.
		b := dial(t, sim, "192.0.2.11")
		rb := b.registerWith(signedRegister("bob", 4002, bob, time.Now().Add(SignatureWindow), protocol.CapNoise))
		watcher.recv()
		c := dial(t, sim, "192.0.2.12")
		mc := signedRegister("carol", 4003, identity(3), time.Now().Add(-SignatureWindow))
		mc.Addrs = []string{"10.0.0.7:4003", "192.168.1.7:4003"}
		mc.Sign(identity(3), time.Now().Add(-SignatureWindow))
		rc := c.registerWith(mc)
		watcher.recv()

		peers := watcher.list()
		if p := byID(t, peers, ra.PeerID); p.Key != keyOf(alice) || p.Nickname != "alice" || p.PublicAddr != "192.0.2.10:4001" {
			t.Errorf("alice's entry %+v, want her key", p)
		}
		if p := byID(t, peers, rb.PeerID); p.Key != keyOf(bob) || !protocol.HasCap(p.Caps, protocol.CapNoise) {
			t.Errorf("bob's entry %+v, want his key and caps", p)
		}
		if p := byID(t, peers, rc.PeerID); p.Key != keyOf(identity(3)) || len(p.Addrs) != 2 || p.Addrs[1] != "192.168.1.7:4003" {
			t.Errorf("carol's entry %+v, want her key and her own addresses", p)
		}
	})
}

func TestUnsignedRegisterIsListedWithoutKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		orig := dial(t, sim, "192.0.2.10")
		r := orig.register("original", 4001)
		if p := byID(t, dial(t, sim, "192.0.2.11").list(), r.PeerID); p.Key != "" {
			t.Fatalf("an unsigned register is listed with key %q", p.Key)
		}
		if n := errorsOfKind(t, s, errKindBadSignature) + errorsOfKind(t, s, errKindStaleSignature); n != 0 {
			t.Fatalf("%v signature errors for an unsigned register", n)
		}
	})
}

func TestRefusedSignedRegisters(t *testing.T) {
	forged := func() *protocol.Register {
		m := signedRegister("alice", 4001, identity(1), time.Now())
		m.LocalAddr = "0.0.0.0:6666" // changed after signing
		return m
	}
	otherKey := func() *protocol.Register {
		m := signedRegister("alice", 4001, identity(1), time.Now())
		m.Key = keyOf(identity(2)) // a signature by someone else
		return m
	}
	tsChanged := func() *protocol.Register {
		m := signedRegister("alice", 4001, identity(1), time.Now())
		m.TS++ // ts is signed too
		return m
	}
	stale := fmt.Sprintf(ErrTextStaleSignature, SignatureWindow)
	for _, tc := range []struct {
		name string
		msg  func() *protocol.Register
		kind string
		text string
	}{
		{"a field changed after signing", forged, errKindBadSignature, ErrTextBadSignature},
		{"another key than the signer's", otherKey, errKindBadSignature, ErrTextBadSignature},
		{"a ts changed after signing", tsChanged, errKindBadSignature, ErrTextBadSignature},
		{"a ts older than the window", func() *protocol.Register {
			return signedRegister("alice", 4001, identity(1), time.Now().Add(-SignatureWindow-time.Millisecond))
		}, errKindStaleSignature, stale},
		{"a ts beyond the window ahead", func() *protocol.Register {
			return signedRegister("alice", 4001, identity(1), time.Now().Add(SignatureWindow+time.Second))
		}, errKindStaleSignature, stale},
		{"a ts of 1970", func() *protocol.Register {
			return signedRegister("alice", 4001, identity(1), time.UnixMilli(1))
		}, errKindStaleSignature, stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, sim := testServer(t, Config{})
				other := dial(t, sim, "192.0.2.1")
				other.register("other", 1000)

				c := dial(t, sim, "192.0.2.10")
				c.send(tc.msg())
				c.wantError(protocol.ErrTextInvalidPrefix + tc.text)
				if peers := other.list(); len(peers) != 1 || peers[0].Nickname != "other" {
					t.Fatalf("after a refused register the list is %+v, want only other", peers)
				}
				// The connection is not registered, and stays usable.
				c.send(&protocol.Heartbeat{})
				c.wantError(protocol.ErrTextNotRegistered)
				if got := errorsOfKind(t, s, tc.kind); got != 1 {
					t.Errorf("errors_total{kind=%q} = %v, want 1", tc.kind, got)
				}
				c.register("alice", 4001)
			})
		})
	}
}

// A register refused for its signature changes nothing, like a malformed
// one: the connection's earlier registration stays, key and all.
func TestRefusedReRegisterKeepsTheFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		r := c.registerWith(signedRegister("alice", 4001, identity(1), time.Now()))
		bad := signedRegister("mallory", 4001, identity(2), time.Now())
		bad.Nickname = "alice"
		c.send(bad)
		c.wantError(protocol.ErrTextInvalidPrefix + ErrTextBadSignature)
		peers := c.list()
		if len(peers) != 1 || peers[0].PeerID != r.PeerID || peers[0].Key != keyOf(identity(1)) {
			t.Fatalf("list %+v, want the first registration with its key", peers)
		}
	})
}

func TestReRegisterReplacesTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		watcher := dial(t, sim, "192.0.2.1")
		watcher.register("watcher", 1000, protocol.CapPush)
		watcher.recv() // the snapshot

		c := dial(t, sim, "192.0.2.10")
		first := c.registerWith(signedRegister("alice", 4001, identity(1), time.Now()))
		watcher.recv() // joined
		time.Sleep(time.Second)
		second := c.registerWith(signedRegister("alice", 4001, identity(2), time.Now()))
		if l := watcher.recv().(*protocol.PeerLeft); l.PeerID != first.PeerID {
			t.Fatalf("peer_left %q, want the first registration %q", l.PeerID, first.PeerID)
		}
		if j := watcher.recv().(*protocol.PeerJoined); j.Peer.PeerID != second.PeerID || j.Peer.Key != keyOf(identity(2)) {
			t.Fatalf("peer_joined %+v, want the second registration with the new key", j.Peer)
		}
		// And back to unsigned: no key is left behind.
		third := c.register("alice", 4001)
		watcher.recv() // left
		watcher.recv() // joined
		peers := watcher.list()
		if p := byID(t, peers, third.PeerID); p.Key != "" || len(peers) != 2 {
			t.Fatalf("list %+v, want watcher and an unsigned alice", peers)
		}
	})
}

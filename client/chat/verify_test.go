package chat_test

import (
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// Forged discovery datagrams, sent from bob's own host (so from bob's
// address, as a LAN attacker spoofing it would), change nothing alice
// knows of bob: a goodbye or announce without bob's signature, one signed
// by another key, a replay of an old one.
func TestForgedDiscoveryRefused(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		bobKey := ed25519.NewKeyFromSeed(make([]byte, 32))
		_, mallory, _ := ed25519.GenerateKey(nil)
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bh := nw.AddHost("b", lan)
		bob := start(t, bh, "bob", 2, func(c *chat.Config) { c.Identity = bobKey })
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("alice did not discover bob")
		}
		bobAt := func() registry.Peer {
			for _, p := range alice.Peers() {
				if p.Nickname == "bob" {
					return p
				}
			}
			return registry.Peer{}
		}
		want := bobAt()
		if want.PubKey != protocol.EncodePublicKey(bobKey.Public().(ed25519.PublicKey)) {
			t.Fatalf("alice lists bob with key %q", want.PubKey)
		}
		old := &protocol.Announce{Nickname: "bob", TCPPort: bob.Port(), Instance: bob.Instance(), Caps: chat.Caps()}
		old.Sign(bobKey, time.Now().Add(-time.Minute))

		pc, err := bh.ListenPacket(bh.Context(), "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		forge := func(d protocol.Datagram) {
			b, err := protocol.EncodeDatagram(d)
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteTo(b, chat.GroupAddr())
			nw.RunFor(50 * time.Millisecond)
		}
		otherKey := &protocol.Announce{Nickname: "bob", TCPPort: bob.Port(), Instance: bob.Instance(), Caps: chat.Caps()}
		otherKey.Sign(mallory, time.Now())
		badSig := &protocol.Announce{Nickname: "bob", TCPPort: bob.Port() + 1, Instance: bob.Instance(), Caps: chat.Caps()}
		badSig.Sign(bobKey, time.Now())
		badSig.TCPPort++ // signed for another port
		otherGoodbye := &protocol.Goodbye{Nickname: "bob", Instance: bob.Instance()}
		otherGoodbye.Sign(mallory, time.Now())
		tests := []struct {
			name string
			d    protocol.Datagram
		}{
			{"unsigned goodbye", &protocol.Goodbye{Nickname: "bob", Instance: bob.Instance()}},
			{"goodbye signed by another key", otherGoodbye},
			{"announce with the key stripped, to a new port", &protocol.Announce{Nickname: "bob", TCPPort: bob.Port() + 7, Instance: bob.Instance(), Caps: []string{protocol.CapAck}}},
			{"announce with the key stripped", &protocol.Announce{Nickname: "bob", TCPPort: bob.Port(), Instance: bob.Instance()}},
			{"announce signed by another key", otherKey},
			{"announce whose signature does not cover it", badSig},
			{"replayed old announce", old},
		}
		// (A synctest bubble forbids t.Run: the name goes in each message.)
		for _, tt := range tests {
			forge(tt.d)
			got := bobAt()
			if got.Key != want.Key || got.PubKey != want.PubKey || got.Addr != want.Addr || got.Instance != want.Instance {
				t.Errorf("%s: bob at alice is now %+v, was %+v", tt.name, got, want)
			}
			for _, p := range alice.Peers() {
				if p.Nickname == "bob" && p.Key != want.Key {
					t.Errorf("%s: a second bob appeared: %+v", tt.name, p)
				}
			}
		}
		// bob's own goodbye still works at once.
		bob.close()
		nw.RunFor(50 * time.Millisecond)
		if hasPeer(alice, "bob") {
			t.Error("bob's own signed goodbye did not remove him")
		}
	})
}

// A change of rooms is no refresh: an announce that changes only bob's
// room tags needs his valid signature like any other change, or anyone
// could forge tags into (or out of) a peer's entry.
func TestForgedRoomsRefused(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		const tagA, tagB = "0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"
		lan := nw.AddSegment("lan")
		bobKey := ed25519.NewKeyFromSeed(make([]byte, 32))
		_, mallory, _ := ed25519.GenerateKey(nil)
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bh := nw.AddHost("b", lan)
		bob := start(t, bh, "bob", 2, func(c *chat.Config) { c.Identity = bobKey })
		bob.SetRoomTagsForTest([]string{tagA})
		bobRooms := func() []string {
			p, _ := peerNamed(alice, "bob")
			return p.Rooms
		}
		if !nw.RunUntil(func() bool { return slices.Equal(bobRooms(), []string{tagA}) }, time.Second) {
			t.Fatalf("alice lists bob with rooms %q, want %q", bobRooms(), []string{tagA})
		}
		pc, err := bh.ListenPacket(bh.Context(), "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		announce := func(rooms ...string) *protocol.Announce {
			return &protocol.Announce{Nickname: "bob", TCPPort: bob.Port(), Instance: bob.Instance(), Caps: chat.Caps(), Rooms: rooms}
		}
		// Each is signed when it is sent, a while after bob's last
		// signed change: newer than anything alice saw, so only the
		// signature check can refuse it.
		signedThen := func(rooms []string, by ed25519.PrivateKey, after []string) *protocol.Announce {
			a := announce(rooms...)
			a.Sign(by, time.Now())
			a.Rooms = after
			return a
		}
		for _, tt := range []struct {
			name string
			a    func() *protocol.Announce
		}{
			{"a tag swapped after signing", func() *protocol.Announce { return signedThen([]string{tagA}, bobKey, []string{tagB}) }},
			{"a tag added after signing", func() *protocol.Announce { return signedThen([]string{tagA}, bobKey, []string{tagA, tagB}) }},
			// Back to the v1 bytes, which bob did not sign.
			{"every tag stripped after signing", func() *protocol.Announce { return signedThen([]string{tagA}, bobKey, nil) }},
			{"signed by another key under bob's", func() *protocol.Announce {
				a := signedThen([]string{tagB}, mallory, []string{tagB})
				a.Key = bob.PublicKey()
				return a
			}},
			{"unsigned with other tags", func() *protocol.Announce { return announce(tagB) }},
		} {
			nw.RunFor(time.Second)
			b, err := protocol.EncodeDatagram(tt.a())
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteTo(b, chat.GroupAddr())
			nw.RunFor(50 * time.Millisecond)
			if got := bobRooms(); !slices.Equal(got, []string{tagA}) {
				t.Errorf("%s: alice lists bob with rooms %q, want %q", tt.name, got, []string{tagA})
			}
		}
		// bob's own change still goes through.
		bob.SetRoomTagsForTest([]string{tagA, tagB})
		if !nw.RunUntil(func() bool { return slices.Equal(bobRooms(), []string{tagA, tagB}) }, time.Second) {
			t.Fatalf("alice lists bob with rooms %q after his own change", bobRooms())
		}
	})
}

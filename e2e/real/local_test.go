package real

import (
	"slices"
	"testing"
)

// Three parlance processes on one host share the discovery port
// (SO_REUSEPORT): each sees the other two, every pair chats both ways
// with the right sender and text, /peers lists the others, and one that
// reaches the end of its input exits 0 and is gone from the others at
// once (its goodbye), not after the 15 s timeout.
func TestRealLocalThreePeers(t *testing.T) {
	s := newScene(t)
	alice := s.startLocal("alice")
	bob := s.startLocal("bob")
	carol := s.startLocal("carol")
	all := []*peer{alice, bob, carol}

	for _, p := range all {
		for _, o := range all {
			if o != p {
				p.waitJoined(0, o.nick)
			}
		}
		// Every process holds the group port itself.
		if ports := udpPorts(t, p.Pid()); !slices.Contains(ports, 6789) {
			t.Errorf("%s: UDP ports %v, want 6789 (the discovery port, shared)", p.nick, ports)
		}
	}
	for _, p := range all {
		for _, r := range all {
			if r != p {
				chat(p, r, "hello "+r.nick+", this is "+p.nick)
			}
		}
	}
	alice.wantPeers("bob", "carol")
	bob.wantPeers("alice", "carol")
	carol.wantPeers("alice", "bob")

	ma, mb := alice.Mark(), bob.Mark()
	carol.quit()
	alice.waitLeft(ma, "carol")
	bob.waitLeft(mb, "carol")
	alice.wantPeers("bob")
	chat(alice, bob, "still here after carol left")

	mb = bob.Mark()
	alice.quit()
	bob.waitLeft(mb, "alice")
	bob.wantPeers()
	bob.quit()
	noTerminalControls(t, all...)
}

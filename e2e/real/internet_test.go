package real

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// Internet mode against a real bootstrap-server: three clients find each
// other and chat both ways; one that quits is gone from the others'
// /peers; the server is killed (SIGKILL) and restarted on the same port
// and the clients register again within the first backoff steps, still
// list each other (no left/joined lines) and chat; and no internet-mode client ever opens a UDP
// socket (so it cannot touch multicast).
func TestRealInternet(t *testing.T) {
	s := newScene(t)
	sv := s.startServer(0)
	alice := s.startInternet("alice", sv.url)
	bob := s.startInternet("bob", sv.url)
	carol := s.startInternet("carol", sv.url)
	all := []*peer{alice, bob, carol}
	for _, p := range all {
		for _, o := range all {
			if o != p {
				p.waitJoined(0, o.nick)
			}
		}
	}
	noUDP := func() {
		t.Helper()
		for _, p := range all {
			if p.Exited() {
				continue
			}
			if ports := udpPorts(t, p.Pid()); len(ports) > 0 {
				t.Errorf("%s in internet mode holds UDP sockets on ports %v, want none", p.nick, ports)
			}
		}
	}
	noUDP()

	chat(alice, bob, "hi bob, over the internet")
	chat(bob, alice, "hi alice")
	chat(carol, alice, "carol here")
	chat(alice, carol, "welcome carol")
	alice.wantPeers("bob", "carol")

	ma, mb := alice.Mark(), bob.Mark()
	carol.quit()
	alice.waitLeft(ma, "carol")
	bob.waitLeft(mb, "carol")
	alice.wantPeers("bob")
	bob.wantPeers("alice")

	// The server dies without a word and comes back on the same port.
	ma, mb = alice.Mark(), bob.Mark()
	sv.kill(t)
	alice.WaitLine(ma, re(`\* lost the bootstrap server`), wait)
	bob.WaitLine(mb, re(`\* lost the bootstrap server`), wait)
	restarted := time.Now()
	sv = s.startServer(portOf(t, sv.addr))
	// Retries come 0.5-1 s, then 1-2 s, then 2-4 s after the loss: the
	// third attempt at the latest finds the server back.
	const backoffBound = 7 * time.Second
	alice.WaitLine(ma, re(`\* registered with %s as `, q(sv.url)), backoffBound)
	bob.WaitLine(mb, re(`\* registered with %s as `, q(sv.url)), backoffBound)
	t.Logf("clients back %v after the restart", time.Since(restarted).Round(time.Millisecond))
	// The restarted server hands out new peer_ids, but the clients know
	// each other by instance: no left/joined churn, and sends work at once.
	alice.wantPeers("bob")
	bob.wantPeers("alice")
	chat(alice, bob, "after the restart")
	chat(bob, alice, "back too")
	for _, c := range []struct {
		p     *peer
		from  int
		other string
	}{{alice, ma, "bob"}, {bob, mb, "alice"}} {
		churn := re(`\* %s (left|joined) \(`, q(c.other))
		for _, line := range c.p.Lines()[c.from:] {
			if churn.MatchString(line) {
				t.Errorf("%s printed %q across the server restart", c.p.nick, line)
			}
		}
	}
	noUDP()

	mb = bob.Mark()
	alice.quit()
	bob.waitLeft(mb, "alice")
	bob.quit()
	alive(t, sv.Process)
	noTerminalControls(t, all...)
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

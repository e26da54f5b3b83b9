package real

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/e2e/internal/proc"
)

// clusterBound bounds the whole cluster scenario: past it every process
// is killed, so that whatever waits fails at once.
const clusterBound = 60 * time.Second

// startNATSCluster starts n real nats-server processes routed to each
// other on loopback (client ports 4221.., route ports 6221..: the
// scenario's namespace is its own) and returns their client URLs once
// each is ready.
func (s *scene) startNATSCluster(n int) (urls []string, nodes []*proc.Process) {
	s.t.Helper()
	bin := proc.NATSServer(s.t)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", 6221+i))
	}
	for i := range n {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		name := fmt.Sprintf("nats%d", i+1)
		p := s.ns.Start(s.t, name, bin, []string{
			"--name", name, "--addr", "127.0.0.1", "--port", strconv.Itoa(4221 + i),
			"--cluster_name", "parlance", "--cluster", routes[i], "--routes", strings.Join(others, ","),
		})
		p.WaitErrLine(0, regexp.MustCompile(`Server is ready`), wait)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", 4221+i))
		nodes = append(nodes, p)
	}
	return urls, nodes
}

// startClusterPeer starts an internet-mode peer with the servers urls,
// in that order (it registers with the first), and waits until it is
// registered.
func (s *scene) startClusterPeer(nick string, urls ...string) *peer {
	s.t.Helper()
	p := s.startPeer(nick, "--mode", "internet", "--bootstrap-server", strings.Join(urls, ","))
	p.WaitLine(0, re(`\* registered with %s as 127\.0\.0\.1:%d`, q(urls[0]), p.port), wait)
	return p
}

// sendDuringSwitch sends text from p to r while servers fail over: it
// may be delivered at once (the peers' own connection does not go
// through a server) or queued, and either way must reach r.
func sendDuringSwitch(p, r *peer, text string) {
	p.t.Helper()
	m := r.Mark()
	p.sendOutcome(r.nick, text, re(`(Delivered to %s\.|Queued for %s: )`, q(r.nick), q(r.nick)))
	r.waitMessage(m, p.nick, text)
}

// Three real nats-server nodes in a cluster, three real bootstrap
// servers each on its own node, and parlance clients spread over the
// servers, each given every server (its own first). They see each other
// across servers and chat. Then the server of two of them is killed
// with SIGKILL mid-chat: they fail over to the next server in their
// lists (one each to the two others), are listed there again, and
// messages sent during and after the switch arrive; the clients on the
// other servers see no leave or join of them (their server's peers are
// dropped 3-4.25 s after it died, by when the failed-over clients are
// registered again under the same instance, so the leave matches
// nothing).
func TestRealCluster(t *testing.T) {
	s := newScene(t)
	began := time.Now()
	natsURLs, nodes := s.startNATSCluster(3)
	var svs []*server
	var urls []string
	for i, u := range natsURLs {
		sv := s.startServer(0, "PARLANCE_BOOTSTRAP_NATS="+u, fmt.Sprintf("PARLANCE_BOOTSTRAP_NATS_NAME=bootstrap%d", i+1))
		svs = append(svs, sv)
		urls = append(urls, sv.url)
	}
	for _, sv := range svs {
		sv.WaitErrLine(0, regexp.MustCompile(`cluster: connected to NATS`), wait)
	}

	// alice and bob on the first server (to be killed; alice's next is
	// the second, bob's the third), carol on the second, dave on the third.
	alice := s.startClusterPeer("alice", urls[0], urls[1], urls[2])
	bob := s.startClusterPeer("bob", urls[0], urls[2], urls[1])
	carol := s.startClusterPeer("carol", urls[1], urls[2], urls[0])
	dave := s.startClusterPeer("dave", urls[2], urls[0], urls[1])
	all := []*peer{alice, bob, carol, dave}

	var overran atomic.Bool
	watchdog := time.AfterFunc(clusterBound-time.Since(began), func() {
		overran.Store(true)
		for _, p := range all {
			p.Kill()
		}
		for _, sv := range svs {
			sv.Kill()
		}
		for _, n := range nodes {
			n.Kill()
		}
	})
	t.Cleanup(func() {
		if !watchdog.Stop() && overran.Load() {
			t.Errorf("the scenario took over %v: every process was killed", clusterBound)
		}
	})

	for _, p := range all {
		for _, o := range all {
			if o != p {
				p.waitJoined(0, o.nick)
			}
		}
	}
	chat(alice, carol, "alice on 1 to carol on 2")
	chat(carol, dave, "carol on 2 to dave on 3")
	chat(dave, bob, "dave on 3 to bob on 1")
	chat(bob, alice, "bob to alice, both on 1")

	// The first server dies mid-chat.
	marks := map[*peer]int{}
	for _, p := range all {
		marks[p] = p.Mark()
	}
	killed := time.Now()
	svs[0].kill(t)
	sendDuringSwitch(carol, alice, "carol to alice while her server is gone")
	sendDuringSwitch(alice, dave, "alice to dave while her server is gone")
	for _, c := range []struct {
		p    *peer
		next string
	}{{alice, urls[1]}, {bob, urls[2]}} {
		c.p.WaitLine(marks[c.p], re(`\* lost the bootstrap server %s`, q(urls[0])), wait)
		c.p.WaitLine(marks[c.p], re(`\* registered with %s as `, q(c.next)), wait)
	}
	t.Logf("alice and bob registered with other servers %v after the kill", time.Since(killed).Round(time.Millisecond))

	// Listed again: a newcomer on the third server finds everyone (alice
	// through the second server, bob on the third), and everyone it.
	erin := s.startClusterPeer("erin", urls[2], urls[1])
	for _, o := range []string{"alice", "bob", "carol", "dave"} {
		erin.waitJoined(0, o)
	}
	for _, p := range all {
		p.waitJoined(marks[p], "erin")
	}

	// The others take the first server for dead (its peers' old entries
	// go); then messages after the switch, which also make sure every
	// client has handled what its server pushed before.
	for _, sv := range svs[1:] {
		sv.WaitErrLine(0, regexp.MustCompile(`cluster: server lost, its peers dropped`), wait)
	}
	t.Logf("the first server's peers dropped elsewhere %v after the kill", time.Since(killed).Round(time.Millisecond))
	chat(alice, dave, "alice to dave after the switch")
	chat(bob, carol, "bob to carol after the switch")
	chat(dave, alice, "dave to alice after the switch")
	chat(carol, bob, "carol to bob after the switch")
	chat(erin, alice, "erin to alice")
	alice.wantPeers("bob", "carol", "dave", "erin")
	carol.wantPeers("alice", "bob", "dave", "erin")

	// No churn: nobody printed a leave or a (second) join of anyone but
	// erin since the kill.
	churn := regexp.MustCompile(`^(?:> )*\* (alice|bob|carol|dave) (left|joined) \(`)
	for _, p := range all {
		for _, line := range p.Lines()[marks[p]:] {
			if churn.MatchString(line) {
				t.Errorf("%s printed %q across the failover", p.nick, line)
			}
		}
	}
	alive(t, svs[1].Process, svs[2].Process, nodes[0], nodes[1], nodes[2])
	noTerminalControls(t, append(all, erin)...)
	t.Logf("scenario took %v", time.Since(began).Round(time.Millisecond))
}

package real

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/e2e/internal/proc"
	"github.com/parlance-chat/parlance/netsim/netns"
)

// Real NATs (nftables in router namespaces, see proc.Internet): two
// internet-mode parlance processes and a real bootstrap-server, each
// client on a public host or behind a cone or symmetric NAT. Each pair
// finds each other through the server, chats both ways (Delivered), and
// then each side's /peers shows the path its own sessions took, which
// must be one the theory allows (client/README.md, "Paths" and "Hole
// punching"; /work/shared/NAT.md):
//
//   - a public peer is dialled directly;
//   - a NATed peer's public address leads nowhere (the router drops the
//     SYN), so a session to it starts on the relay and hole punching
//     tries to move it direct: through cone NATs (and to a public peer)
//     that works, through a symmetric NAT it cannot and the
//     conversation stays relayed;
//   - two peers behind one NAT reach each other at the addresses they
//     registered as their own, directly.
//
// When a side's first session is relayed, the test waits (on that
// client's log) until hole punching has settled, within punchBound, then
// chats a few more times, a delivery confirmed between each, and checks
// the final path.
func TestRealNAT(t *testing.T) {
	type site struct {
		nat     proc.NATKind // 0: a public host
		sameNAT bool         // behind the first peer's router
	}
	public, cone, symmetric := site{}, site{nat: proc.Cone}, site{nat: proc.Symmetric}
	direct, relayed := []string{"direct"}, []string{"relayed"}
	either := []string{"direct", "relayed"}
	for _, c := range []struct {
		name string
		a, b site
		// Allowed final paths of a's sessions to b and b's to a.
		aToB, bToA []string
		// The paths a's and b's first sessions must take ("": any).
		aFirst, bFirst string
	}{
		// alice dials bob's public address, dropped by his router, so
		// her first session is relayed; the punch then may move it. Seen
		// so far: it stays relayed. bob answers her sync by dialling her
		// from his listening port at once, his SYN reaches her listener
		// (she has no NAT) before she dials, so she accepts that
		// connection (served, no session) and her own dial of the same
		// 4-tuple fails with "cannot assign requested address".
		{"public and cone", public, cone, either, direct, "", "direct"},
		{"cone and cone end direct by hole punching", cone, cone, direct, direct, "", ""},
		{"cone and symmetric stay relayed", cone, symmetric, relayed, relayed, "", ""},
		{"symmetric and symmetric stay relayed", symmetric, symmetric, relayed, relayed, "", ""},
		{"two peers behind one cone NAT talk directly", cone, site{nat: proc.Cone, sameNAT: true}, direct, direct, "direct", "direct"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNATScene(t)
			var first *proc.Router
			place := func(nick string, s site) *natPeer {
				t.Helper()
				switch {
				case s.nat == 0:
					ns, ip := n.in.PublicHost(t)
					return n.startPeer(ns, nick, ip, ip)
				case s.sameNAT:
					ns, ip := first.Host(t)
					return n.startPeer(ns, nick, ip, first.WANIP)
				default:
					r := n.in.Router(t, s.nat)
					n.routers = append(n.routers, r)
					if first == nil {
						first = r
					}
					ns, ip := r.Host(t)
					return n.startPeer(ns, nick, ip, r.WANIP)
				}
			}
			alice := place("alice", c.a)
			bob := place("bob", c.b)
			alice.waitJoined(0, "bob")
			bob.waitJoined(0, "alice")

			start := time.Now()
			chat(alice.peer, bob.peer, "hello bob")
			chat(bob.peer, alice.peer, "hello alice")
			firstA, firstB := alice.pathTo("bob"), bob.pathTo("alice")
			t.Logf("first sessions: alice -> bob %s, bob -> alice %s (%v)", firstA, firstB, time.Since(start).Round(time.Millisecond))
			if c.aFirst != "" && firstA != c.aFirst {
				t.Errorf("alice's first session to bob is %q, want %q (no relay)", firstA, c.aFirst)
			}
			if c.bFirst != "" && firstB != c.bFirst {
				t.Errorf("bob's first session to alice is %q, want %q (no relay)", firstB, c.bFirst)
			}
			for _, s := range []struct {
				p     *natPeer
				path  string
				other string
			}{{alice, firstA, "bob"}, {bob, firstB, "alice"}} {
				if s.path == "relayed" {
					t.Logf("%s -> %s: %s", s.p.nick, s.other, s.p.waitPunchSettled())
				}
			}
			for i := range 3 {
				chat(alice.peer, bob.peer, fmt.Sprintf("to bob %d", i))
				chat(bob.peer, alice.peer, fmt.Sprintf("to alice %d", i))
			}
			finalA, finalB := alice.pathTo("bob"), bob.pathTo("alice")
			t.Logf("final paths: alice -> bob %s (allowed %v), bob -> alice %s (allowed %v); %v after the first send",
				finalA, c.aToB, finalB, c.bToA, time.Since(start).Round(time.Millisecond))
			if !oneOf(finalA, c.aToB) || !oneOf(finalB, c.bToA) {
				t.Errorf("final paths alice -> bob %q, bob -> alice %q; want one of %v and %v", finalA, finalB, c.aToB, c.bToA)
				n.logNATState(t)
			}
			alive(t, n.server)
			noTerminalControls(t, alice.peer, bob.peer)
		})
	}
}

// punchBound bounds hole punching from the first relayed send until it
// settles: PunchAttempts tries, each at most 2 x AckTimeout (10 s) plus
// the 1 s pause, would be 32 s; a try that cannot connect ends with its
// 5 s dial timeout, so three failing tries take about 18 s.
const punchBound = 40 * time.Second

// natScene is one NAT scenario: the internet namespace with the server
// on its bridge, and the built programs.
type natScene struct {
	t         *testing.T
	in        *proc.Internet
	parlance  string
	server    *proc.Process
	serverURL string
	routers   []*proc.Router
}

// newNATScene checks the environment (private namespace, root, tools,
// nft), builds the programs once, makes the internet and starts the
// server on it.
func newNATScene(t *testing.T) *natScene {
	t.Helper()
	netns.Require(t)
	proc.RequireNSTools(t)
	proc.RequireNFT(t)
	t.Parallel()
	p, s := proc.Binaries(t)
	n := &natScene{t: t, in: proc.NewInternet(t), parlance: p}
	ip := n.in.ServerIP()
	n.server = n.in.NS.Start(t, "bootstrap-server", s,
		[]string{"--host", ip, "--port", "0", "--log-format", "json", "--log-level", "debug"})
	addrRE := regexp.MustCompile(`"addr":"(` + regexp.QuoteMeta(ip) + `:\d+)"`)
	_, line := n.server.WaitErrLine(0, addrRE, wait)
	n.serverURL = "ws://" + addrRE.FindStringSubmatch(line)[1]
	return n
}

// natPeer is a parlance process on a host of the topology.
type natPeer struct {
	*peer
	ns *proc.NS
}

// startPeer starts parlance in internet mode on host ns (address ip) and
// waits until the server registered it at publicIP (the router's WAN
// address for a peer behind a NAT) with its message port.
func (n *natScene) startPeer(ns *proc.NS, nick, ip, publicIP string) *natPeer {
	n.t.Helper()
	args := []string{"--nickname", nick, "--log-level", "debug", "--mode", "internet", "--bootstrap-server", n.serverURL}
	p := &peer{Process: ns.Start(n.t, nick, n.parlance, args), t: n.t, nick: nick}
	_, line := p.WaitLine(0, bannerRE, wait)
	p.port, _ = strconv.Atoi(bannerRE.FindStringSubmatch(line)[2])
	p.WaitLine(0, re(`\* registered with %s as %s:%d$`, q(n.serverURL), q(publicIP), p.port), wait)
	n.t.Logf("%s on %s, registered as %s:%d", nick, ip, publicIP, p.port)
	return &natPeer{peer: p, ns: ns}
}

// pathTo runs /peers and returns the path it shows for nick: "direct",
// "relayed", or "" before any session.
func (p *natPeer) pathTo(nick string) string {
	p.t.Helper()
	m := p.Mark()
	p.Input("/peers")
	i, line := p.WaitLine(m, re(`(No peers discovered yet\.|(\d+) peer\(s\):)$`), wait)
	sub := re(`(\d+) peer\(s\):$`).FindStringSubmatch(line)
	if sub == nil {
		p.t.Fatalf("%s: /peers lists nobody, want %s", p.nick, nick)
	}
	count, _ := strconv.Atoi(sub[1])
	for k := 1; k <= count; k++ {
		_, l := p.WaitLine(i+k, regexp.MustCompile(``), wait)
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != nick {
			continue
		}
		switch {
		case strings.Contains(l, "bootstrap, direct"):
			return "direct"
		case strings.Contains(l, "bootstrap, relayed"):
			return "relayed"
		case strings.Contains(l, "bootstrap"):
			return ""
		}
		p.t.Fatalf("%s: /peers line for %s is %q: not found through the bootstrap server", p.nick, nick, l)
	}
	p.t.Fatalf("%s: /peers does not list %s", p.nick, nick)
	return ""
}

var (
	punchedRE     = regexp.MustCompile(`msg="hole punched: the conversation moved off the relay"`)
	punchGaveUpRE = regexp.MustCompile(`msg="hole punching failed".*(try=3|nothing to punch)|msg="hole punching skipped`)
	punchDoneRE   = regexp.MustCompile(punchedRE.String() + `|` + punchGaveUpRE.String())
)

// waitPunchSettled waits until hole punching on p's relayed session has
// moved it direct or given up, and says which.
func (p *natPeer) waitPunchSettled() string {
	p.t.Helper()
	start := time.Now()
	_, line := p.WaitErrLine(0, punchDoneRE, punchBound)
	took := time.Since(start).Round(time.Millisecond)
	tries := len(regexp.MustCompile(`msg="hole punching failed"`).FindAllString(p.Stderr(), -1))
	if punchedRE.MatchString(line) {
		return fmt.Sprintf("hole punched after %d failed tries (settled %v after asking)", tries, took)
	}
	return fmt.Sprintf("hole punching gave up after %d tries (settled %v after asking): %s", tries, took, line)
}

// logNATState logs what the routers saw, for a failure.
func (n *natScene) logNATState(t *testing.T) {
	t.Helper()
	t.Logf("internet:\n%s", n.in.NS.Output("ip", "-br", "addr"))
	for _, r := range n.routers {
		t.Logf("%s router %s:\n%s%s", r.Kind, r.WANIP, r.NS.Output("nft", "list", "ruleset"), r.NS.Output("cat", "/proc/net/nf_conntrack"))
	}
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// Package real runs the real parlance and bootstrap-server programs as
// processes, each scenario in a network namespace of its own, and drives
// the clients through piped stdin while reading their stdout.
package real

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parlance-chat/parlance/e2e/internal/proc"
	"github.com/parlance-chat/parlance/netsim/netns"
)

// wait bounds every wait on output. Discovery, delivery and goodbyes take
// milliseconds on loopback; the bound only catches a hang.
const wait = 15 * time.Second

// scene is one scenario: its own network namespace and the built programs.
type scene struct {
	t         *testing.T
	ns        *proc.NS
	parlance  string
	serverBin string
}

// newScene checks the environment (private namespace, root, tools),
// builds the programs once and makes the scenario's namespace.
func newScene(t *testing.T) *scene {
	t.Helper()
	netns.Require(t)
	proc.RequireNSTools(t)
	t.Parallel()
	p, s := proc.Binaries(t)
	return &scene{t: t, ns: proc.NewNS(t), parlance: p, serverBin: s}
}

// peer is a running parlance process.
type peer struct {
	*proc.Process
	t    *testing.T
	nick string
	port int // TCP port for messages, from the banner
}

// re compiles a pattern for one output line. Lines may start with the
// "> " prompt a terminal UI glues to them, so that is tolerated.
func re(format string, args ...any) *regexp.Regexp {
	return regexp.MustCompile(`^(?:> )*` + fmt.Sprintf(format, args...))
}

// q quotes text for a pattern.
func q(s string) string { return regexp.QuoteMeta(s) }

var bannerRE = re(`parlance \S+: you are .* \((\w+) mode, messages on port (\d+)\)`)

// startPeer starts parlance with nick and extra flags, logging at debug
// level to stderr, and waits for its banner.
func (s *scene) startPeer(nick string, args ...string) *peer {
	s.t.Helper()
	args = append([]string{"--nickname", nick, "--log-level", "debug"}, args...)
	p := &peer{Process: s.ns.Start(s.t, nick, s.parlance, args), t: s.t, nick: nick}
	_, line := p.WaitLine(0, bannerRE, wait)
	m := bannerRE.FindStringSubmatch(line)
	p.port, _ = strconv.Atoi(m[2])
	return p
}

// startLocal starts a local-mode peer on lo.
func (s *scene) startLocal(nick string) *peer {
	s.t.Helper()
	return s.startPeer(nick, "--mode", "local", "--interface", "lo")
}

// startInternet starts an internet-mode peer using the server at url.
func (s *scene) startInternet(nick, url string) *peer {
	s.t.Helper()
	p := s.startPeer(nick, "--mode", "internet", "--bootstrap-server", url)
	p.WaitLine(0, re(`\* registered with %s as 127\.0\.0\.1:%d`, q(url), p.port), wait)
	return p
}

// waitJoined waits for "* nick joined" after line from.
func (p *peer) waitJoined(from int, nick string) {
	p.t.Helper()
	p.WaitLine(from, re(`\* %s joined \(`, q(nick)), wait)
}

// waitLeft waits for "* nick left" (a goodbye or the server's word, not a
// timeout) after line from.
func (p *peer) waitLeft(from int, nick string) {
	p.t.Helper()
	p.WaitLine(from, re(`\* %s left \(`, q(nick)), wait)
}

// send types /send to text and waits for the one-line outcome, which must
// be a delivery confirmed by an ack.
func (p *peer) send(to, text string) {
	p.t.Helper()
	p.sendOutcome(to, text, re(`Delivered to %s\.$`, q(to)))
}

// sendUnconfirmed is send to a peer known as an original client, which
// cannot acknowledge.
func (p *peer) sendUnconfirmed(to, text string) {
	p.t.Helper()
	p.sendOutcome(to, text, re(`Sent to %s \(an original client: it cannot confirm delivery\)\.$`, q(to)))
}

func (p *peer) sendOutcome(to, text string, want *regexp.Regexp) {
	p.t.Helper()
	m := p.Mark()
	p.Input("/send " + to + " " + text)
	_, line := p.WaitLine(m, re(`(Delivered to|Not sent|Not confirmed by|Sent to) `), wait)
	if !want.MatchString(line) {
		p.t.Fatalf("%s: /send %s %s: %q, want %q", p.nick, to, text, line, want)
	}
}

// waitMessage waits for "[HH:MM:SS] from: text" after line from.
func (p *peer) waitMessage(from int, sender, text string) {
	p.t.Helper()
	p.WaitLine(from, re(`\[\d\d:\d\d:\d\d\] %s: %s$`, q(sender), q(text)), wait)
}

// waitPlainMessage waits for "[HH:MM:SS] (plain) from: text": a message
// that came unencrypted (from an original client, or through an original
// bootstrap server, which does not pass keys on).
func (p *peer) waitPlainMessage(from int, sender, text string) {
	p.t.Helper()
	p.WaitLine(from, re(`\[\d\d:\d\d:\d\d\] \(plain\) %s: %s$`, q(sender), q(text)), wait)
}

// chat sends text from p to r and checks it arrives with the right sender.
func chat(p, r *peer, text string) {
	p.t.Helper()
	m := r.Mark()
	p.send(r.nick, text)
	r.waitMessage(m, p.nick, text)
}

// peers runs /peers and returns the names it lists.
func (p *peer) peers() []string {
	p.t.Helper()
	m := p.Mark()
	p.Input("/peers")
	i, line := p.WaitLine(m, re(`(No peers discovered yet\.|(\d+) peer\(s\):)$`), wait)
	sub := re(`(\d+) peer\(s\):$`).FindStringSubmatch(line)
	if sub == nil {
		return nil
	}
	n, _ := strconv.Atoi(sub[1])
	var names []string
	for k := 1; k <= n; k++ {
		_, l := p.WaitLine(i+k, regexp.MustCompile(``), wait)
		f := strings.Fields(l)
		if len(f) == 0 {
			p.t.Fatalf("%s: /peers: empty line %q", p.nick, l)
		}
		names = append(names, f[0])
	}
	return names
}

// wantPeers runs /peers and checks it lists exactly want, in any order.
func (p *peer) wantPeers(want ...string) {
	p.t.Helper()
	got := p.peers()
	if !sameSet(got, want) {
		p.t.Fatalf("%s: /peers lists %q, want %q", p.nick, got, want)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
		if count[s] < 0 {
			return false
		}
	}
	return true
}

// quit closes stdin and checks the process exits with status 0.
func (p *peer) quit() {
	p.t.Helper()
	p.CloseStdin()
	if code := p.Wait(wait); code != 0 {
		p.t.Fatalf("%s: exit status %d after end of input, want 0", p.nick, code)
	}
}

// alive checks that the process still runs.
func alive(t *testing.T, ps ...*proc.Process) {
	t.Helper()
	for _, p := range ps {
		if p.Exited() {
			t.Fatalf("%s exited", p.Name())
		}
	}
}

// noTerminalControls checks that nothing a good client printed could
// drive a terminal: no ESC or other C0 control (tab aside), no DEL, no
// C1 control, no bidirectional override, no invalid UTF-8.
func noTerminalControls(t *testing.T, ps ...*peer) {
	t.Helper()
	for _, p := range ps {
		for _, l := range p.Lines() {
			if !utf8.ValidString(l) {
				t.Errorf("%s printed invalid UTF-8: %q", p.nick, l)
			}
			for _, r := range l {
				if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
					(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
					t.Errorf("%s printed control character %U: %q", p.nick, r, l)
					break
				}
			}
		}
	}
}

// udpPorts returns the local ports of the UDP sockets process pid holds,
// read from /proc: its file descriptors and its namespace's socket tables.
func udpPorts(t *testing.T, pid int) []int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d", pid)
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(filepath.Join(dir, "net", table))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			port, _ := strconv.ParseInt(hexPort, 16, 32)
			ports = append(ports, int(port))
		}
	}
	return ports
}

// server is a running bootstrap-server.
type server struct {
	*proc.Process
	addr string // 127.0.0.1:port
	url  string // ws://addr
}

var listenRE = regexp.MustCompile(`"addr":"(127\.0\.0\.1:\d+)"`)

// startServer starts bootstrap-server on 127.0.0.1:port (0: any free
// port) and waits until it logs its address.
func (s *scene) startServer(port int, env ...string) *server {
	s.t.Helper()
	p := s.ns.Start(s.t, "bootstrap-server", s.serverBin,
		[]string{"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--log-format", "json", "--log-level", "debug"}, env...)
	_, line := p.WaitErrLine(0, listenRE, wait)
	addr := listenRE.FindStringSubmatch(line)[1]
	return &server{Process: p, addr: addr, url: "ws://" + addr}
}

// kill kills the server with SIGKILL: no close frames, no goodbyes.
func (sv *server) kill(t *testing.T) {
	t.Helper()
	sv.Signal(syscall.SIGKILL)
	sv.Wait(wait)
}

// eventually waits until cond holds, checking every 20 ms, and fails
// after timeout. For state of in-process doubles, which print nothing.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		<-tick.C
	}
}

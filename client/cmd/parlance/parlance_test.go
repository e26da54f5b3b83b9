package main_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim/netns"
)

// buildParlance builds the program once per test into a temp dir.
func buildParlance(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parlance")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running parlance driven through its stdin.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   string

	mu    sync.Mutex
	lines []string
	grew  chan struct{} // closed and replaced whenever lines grows
	done  chan struct{} // stdout reached EOF
}

func startProc(t *testing.T, bin, dir, nick string, extra ...string) *proc {
	t.Helper()
	home := filepath.Join(dir, nick)
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: nick, grew: make(chan struct{}), done: make(chan struct{}), log: filepath.Join(home, "parlance.log")}
	args := append([]string{"-n", nick, "--interface", "lo", "--log-file", p.log, "--log-level", "debug"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = home
	p.cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, "config"), "XDG_STATE_HOME="+filepath.Join(home, "state"))
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &prefixWriter{t: t, prefix: nick + " stderr: "}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.grew)
			p.grew = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s stdout:\n  %s", nick, strings.Join(p.lines, "\n  "))
			p.mu.Unlock()
			if b, err := os.ReadFile(p.log); err == nil {
				t.Logf("%s log:\n%s", nick, b)
			}
		}
	})
	return p
}

type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s%s", w.prefix, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// send writes a line to the process's stdin.
func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		p.t.Fatalf("%s: write %q: %v", p.name, line, err)
	}
}

// waitFor waits until a line of stdout, after the first `from` lines,
// contains want, and returns its index.
func (p *proc) waitFor(from int, want string) int {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if strings.Contains(p.lines[i], want) {
				p.mu.Unlock()
				return i
			}
		}
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.done:
			if i := p.find(from, want); i >= 0 {
				return i
			}
			p.t.Fatalf("%s closed its output without printing %q", p.name, want)
		case <-deadline:
			p.t.Fatalf("%s: no line containing %q within 10 s", p.name, want)
		}
	}
}

func (p *proc) find(from int, want string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; i < len(p.lines); i++ {
		if strings.Contains(p.lines[i], want) {
			return i
		}
	}
	return -1
}

func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// exit closes stdin (or sends cmd first) and waits for exit status 0.
func (p *proc) exit(cmd string) {
	p.t.Helper()
	if cmd != "" {
		p.send(cmd)
	}
	p.stdin.Close()
	errc := make(chan error, 1)
	go func() { errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			p.t.Fatalf("%s: exit: %v", p.name, err)
		}
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s did not exit within 10 s of end of input", p.name)
	}
}

// Two, then three parlance processes on one machine (SO_REUSEPORT) find
// each other and exchange messages both ways, driven through piped stdin;
// each leaves cleanly and the others see it leave at once.
func TestProcessesChat(t *testing.T) {
	netns.Require(t)
	bin := buildParlance(t)
	dir := t.TempDir()

	alice := startProc(t, bin, dir, "alice")
	bob := startProc(t, bin, dir, "bob")
	alice.waitFor(0, "* bob joined")
	bob.waitFor(0, "* alice joined")

	m := bob.mark()
	alice.send("/send bob hello from alice")
	alice.waitFor(0, "Delivered to bob.")
	bob.waitFor(m, "alice: hello from alice")

	m = alice.mark()
	bob.send("/send alice hi alice, bob here")
	bob.waitFor(0, "Delivered to alice.")
	alice.waitFor(m, "bob: hi alice, bob here")

	carol := startProc(t, bin, dir, "carol")
	carol.waitFor(0, "* alice joined")
	carol.waitFor(0, "* bob joined")
	alice.waitFor(0, "* carol joined")
	bob.waitFor(0, "* carol joined")

	ma, mb, mc := alice.mark(), bob.mark(), carol.mark()
	carol.send("/send alice from carol to alice")
	carol.send("/send bob from carol to bob")
	bob.send("/send carol from bob to carol")
	alice.send("/send carol from alice to carol")
	alice.waitFor(ma, "carol: from carol to alice")
	bob.waitFor(mb, "carol: from carol to bob")
	carol.waitFor(mc, "bob: from bob to carol")
	carol.waitFor(mc, "alice: from alice to carol")

	m = carol.mark()
	carol.send("/peers")
	carol.waitFor(m, "2 peer(s):")

	ma, mb = alice.mark(), bob.mark()
	carol.exit("") // end of input
	alice.waitFor(ma, "* carol left")
	bob.waitFor(mb, "* carol left")

	mb = bob.mark()
	alice.exit("/quit")
	bob.waitFor(mb, "* alice left")
	bob.exit("")
}

// Package proc runs the real parlance and bootstrap-server programs for
// e2e tests: it builds them once per test binary, starts them with piped
// standard streams, and waits on their output with deadlines, never on
// sleeps. Callers must run inside a private network namespace
// (netns.Require) before starting anything that opens sockets.
package proc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Packages of the programs.
const (
	ParlancePkg = "github.com/parlance-chat/parlance/client/cmd/parlance"
	ServerPkg   = "github.com/parlance-chat/parlance/bootstrap-server/cmd/bootstrap-server"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries builds parlance and bootstrap-server once per test binary and
// returns their paths.
func Binaries(t testing.TB) (parlance, server string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "parlance-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+string(filepath.Separator), ParlancePkg, ServerPkg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "parlance"), filepath.Join(buildDir, "bootstrap-server")
}

// NATSServerPkg is the real nats-server program. It is built from
// bootstrap-server's module, which requires
// github.com/nats-io/nats-server/v2 (its tests embed that server), so
// e2e needs no such requirement and the version is the one those tests
// use.
const NATSServerPkg = "github.com/nats-io/nats-server/v2"

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

// NATSServer builds the real nats-server once per test binary, in
// bootstrap-server's module directory with GOWORK=off and a read-only
// go.mod (from the module cache: nothing is downloaded), and returns its
// path.
func NATSServer(t testing.TB) string {
	t.Helper()
	natsOnce.Do(func() {
		list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/parlance-chat/parlance/bootstrap-server")
		out, err := list.Output()
		if err != nil {
			natsErr = fmt.Errorf("find bootstrap-server's module: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "parlance-e2e-nats-")
		if err != nil {
			natsErr = err
			return
		}
		natsBin = filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsBin, NATSServerPkg)
		cmd.Dir = strings.TrimSpace(string(out))
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			natsErr = fmt.Errorf("(cd %s && GOWORK=off go build -o %s %s): %v\n%s", cmd.Dir, natsBin, NATSServerPkg, err, buf.String())
		}
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsBin
}

// Process is a running program with piped standard streams.
type Process struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser

	mu       sync.Mutex
	cond     *sync.Cond
	out      []string // stdout lines so far
	errLines []string // stderr lines so far
	errOut   bytes.Buffer
	exited   bool
	err      error
}

// Start starts bin with args and extra environment, in its own temporary
// HOME and XDG directories. The process is killed at the end of the test
// if it is still running.
func Start(t testing.TB, name, bin string, args []string, env ...string) *Process {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
		"TERM=dumb",
	)
	cmd.Env = append(cmd.Env, env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, name: name, cmd: cmd, in: in}
	p.cond = sync.NewCond(&p.mu)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.errLines = append(p.errLines, sc.Text())
			p.errOut.WriteString(sc.Text() + "\n")
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stderr) // a line past the buffer: drain
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stdout)
		<-errDone // Wait closes the pipes: read them to the end first
		err := cmd.Wait()
		p.mu.Lock()
		p.exited, p.err = true, err
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, strings.Join(p.Lines(), "\n"), name, p.Stderr())
		}
	})
	return p
}

// Lines returns the stdout lines so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.out...)
}

// Mark returns the number of stdout lines so far: pass it to WaitLine to
// wait for output that comes after this point.
func (p *Process) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out)
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Name returns the name the process was started with.
func (p *Process) Name() string { return p.name }

// Stderr returns what the process wrote to stderr so far.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errOut.String()
}

// Input writes one line to the process's stdin.
func (p *Process) Input(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		p.t.Fatalf("%s: write stdin: %v", p.name, err)
	}
}

// CloseStdin closes the process's stdin (EOF).
func (p *Process) CloseStdin() { p.in.Close() }

// WaitLine waits until a stdout line at index from or later matches re and
// returns its index and text. It fails the test after timeout or if the
// process exits first.
func (p *Process) WaitLine(from int, re *regexp.Regexp, timeout time.Duration) (int, string) {
	p.t.Helper()
	return p.waitLine(&p.out, "stdout", from, re, timeout)
}

// WaitErrLine is WaitLine on standard error (logs).
func (p *Process) WaitErrLine(from int, re *regexp.Regexp, timeout time.Duration) (int, string) {
	p.t.Helper()
	return p.waitLine(&p.errLines, "stderr", from, re, timeout)
}

func (p *Process) waitLine(lines *[]string, what string, from int, re *regexp.Regexp, timeout time.Duration) (int, string) {
	p.t.Helper()
	i, line, found := from, "", false
	if !p.waitFor(timeout, func() bool {
		for ; i < len(*lines); i++ {
			if re.MatchString((*lines)[i]) {
				line, found = (*lines)[i], true
				return true
			}
		}
		return p.exited
	}) {
		p.t.Fatalf("%s: no line matching %q on %s within %v", p.name, re, what, timeout)
	}
	if !found { // p.err is set once, with exited: safe to read without p.mu now
		p.t.Fatalf("%s exited (%v) before printing a line matching %q on %s", p.name, p.err, re, what)
	}
	return i, line
}

// Wait waits for the process to exit and returns its exit status, failing
// the test after timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	if !p.waitFor(timeout, func() bool { return p.exited }) {
		p.t.Fatalf("%s did not exit within %v", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode() // set before exited, never again
}

// waitFor calls done, with p.mu held, each time the process prints a line
// or exits, until done returns true or timeout passes. It reports whether
// done returned true.
func (p *Process) waitFor(timeout time.Duration, done func() bool) bool {
	deadline := time.Now().Add(timeout)
	stop := context.AfterFunc(contextWithDeadline(deadline), func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		p.cond.Wait()
	}
	return true
}

// contextWithDeadline returns a context that is done at deadline; its
// resources are released when it fires.
func contextWithDeadline(deadline time.Time) context.Context {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	context.AfterFunc(ctx, cancel)
	return ctx
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// Kill kills the process if it still runs.
func (p *Process) Kill() {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if !exited && p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
}

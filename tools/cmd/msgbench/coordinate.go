package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/tools/internal/procstat"

	"github.com/parlance-chat/parlance/tools/internal/kvline"
)

const (
	// discoveryLimit bounds the wait for the children to list each other.
	discoveryLimit = 20 * time.Second
	// receiverLag bounds how long the receiver may take to report all
	// messages after the sender saw the last one acknowledged: an ack
	// means the receiver stored the message and queued it for its reader.
	receiverLag = 30 * time.Second
	// grace bounds a child's report and exit after it was told to quit.
	grace = time.Minute
	// sampleEvery is the period of the RSS samples.
	sampleEvery = 250 * time.Millisecond
)

// line is one protocol line.
type line = kvline.Line

func parseLine(s string) line { return kvline.Parse(s) }

// proc is a child process and its protocol lines.
type proc struct {
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan line // closed at the end of the child's stdout
	quit  bool      // "quit" was written

	stopOnce sync.Once
	stopErr  error
}

func startProc(self, role, dir string, o options, deadline time.Time, stderr io.Writer) (*proc, error) {
	args := []string{"-role", role, "-data", dir, "-messages", strconv.Itoa(o.messages),
		"-timeout", time.Until(deadline).Round(time.Millisecond).String()}
	if o.nosync {
		args = append(args, "-nosync")
	}
	args = append(args, "-foldwait", o.foldWait.String())
	if o.cpuprofile != "" {
		args = append(args, "-cpuprofile", o.cpuprofile)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s: %w", role, err)
	}
	p := &proc{role: role, cmd: cmd, stdin: in, lines: make(chan line, 64)}
	// Ends at the child's end of output; stop reads it to the end.
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- parseLine(sc.Text())
		}
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) send(cmd string) {
	if cmd == "quit" {
		if p.quit {
			return
		}
		p.quit = true
	}
	fmt.Fprintln(p.stdin, cmd)
}

// expect reads lines until one with verb, for at most limit.
func (p *proc) expect(ctx context.Context, verb string, limit time.Duration) (line, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return line{}, fmt.Errorf("the %s exited before it said %q", p.role, verb)
			}
			if l.Verb == verb {
				return l, nil
			}
		case <-t.C:
			return line{}, fmt.Errorf("the %s did not say %q within %v", p.role, verb, limit)
		case <-ctx.Done():
			return line{}, fmt.Errorf("the %s did not say %q: %w", p.role, verb, ctx.Err())
		}
	}
}

// stop closes the child's stdin (which quits it), reads its output to
// the end and waits for it; past grace it is killed.
// A second call returns the first's result.
func (p *proc) stop() error {
	p.stopOnce.Do(func() {
		p.stdin.Close()
		t := time.AfterFunc(grace, func() { p.cmd.Process.Kill() })
		defer t.Stop()
		for range p.lines {
		}
		if err := p.cmd.Wait(); err != nil {
			p.stopErr = fmt.Errorf("%s: %w", p.role, err)
		}
	})
	return p.stopErr
}

// usage is one process's resource readings.
type usage struct {
	rssStart, rssMax, rssEnd int // KiB
	cpuStart, cpuEnd         float64
}

// sampler reads the children's RSS every sampleEvery and keeps the maxima.
type sampler struct {
	mu   sync.Mutex
	pids []int
	max  map[int]int
	n    int
}

func (s *sampler) sample() map[int]int {
	now := make(map[int]int, len(s.pids))
	for _, pid := range s.pids {
		if kib, err := procstat.RSSKiB(pid); err == nil {
			now[pid] = kib
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	for pid, kib := range now {
		s.max[pid] = max(s.max[pid], kib)
	}
	return now
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.sample()
		case <-ctx.Done():
			return
		}
	}
}

// tenth is the RSS of both children when the receiver reported a tenth
// of the stream.
type tenth struct {
	pct       int
	n         int           // messages received
	at        time.Duration // since the go
	snd, recv int           // KiB
}

func coordinate(ctx context.Context, o options, stdout, stderr io.Writer) error {
	deadline := time.Now().Add(o.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	syncMode := "synchronous=FULL"
	if o.nosync {
		syncMode = "synchronous=NORMAL (-nosync)"
	}
	fmt.Fprintf(stdout, "msgbench: %d CPUs, GOMAXPROCS %d, %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())

	var orig originalResult
	if o.originalMessages > 0 {
		var err error
		profile := ""
		if o.cpuprofile != "" {
			profile = o.cpuprofile + ".original.pprof"
		}
		orig, err = runOriginal(ctx, o.originalMessages, profile)
		if err != nil {
			return fmt.Errorf("original baseline: %w", err)
		}
		fmt.Fprintf(stdout, "\noriginal baseline (e2e/original Peer to Peer in this process: a TCP connection per message, one JSON line, plaintext, no ack, nothing stored):\n")
		fmt.Fprintf(stdout, "  %d messages sent in %.3f s, all received after %.3f s: %.0f messages/s\n",
			orig.messages, orig.sendTime.Seconds(), orig.total.Seconds(), orig.rate())
		fmt.Fprintf(stdout, "  received %d, lost %d, duplicated %d, not of the stream %d, send errors %d; CPU %.2f s (both peers); other processes used %.2f of the machine's %.2f CPU s meanwhile\n",
			orig.received, orig.messages-orig.received, orig.dup, orig.invalid, orig.sendErrors, orig.cpu, orig.others, orig.total.Seconds()*float64(runtime.NumCPU()))
		if orig.firstErr != nil {
			fmt.Fprintf(stdout, "  first send error: %v\n", orig.firstErr)
		}
	}

	dir, err := os.MkdirTemp("", "msgbench-")
	if err != nil {
		return err
	}
	if o.keep {
		defer fmt.Fprintf(stdout, "stores kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	recv, err := startProc(self, roleReceiver, filepath.Join(dir, roleReceiver), o, deadline, stderr)
	if err != nil {
		return err
	}
	defer recv.stop()
	if _, err := recv.expect(ctx, "ready", discoveryLimit); err != nil {
		return err
	}
	snd, err := startProc(self, roleSender, filepath.Join(dir, roleSender), o, deadline, stderr)
	if err != nil {
		return err
	}
	defer snd.stop()
	if _, err := snd.expect(ctx, "ready", discoveryLimit); err != nil {
		return err
	}
	for _, p := range []*proc{snd, recv} {
		if _, err := p.expect(ctx, "peer", discoveryLimit); err != nil {
			return err
		}
	}

	// After discovery: the starting point of RSS and CPU.
	smp := &sampler{pids: []int{snd.pid(), recv.pid()}, max: make(map[int]int)}
	use := map[*proc]*usage{snd: {}, recv: {}}
	start := smp.sample()
	for p, u := range use {
		u.rssStart = start[p.pid()]
		if u.cpuStart, err = procstat.CPUSeconds(p.pid()); err != nil {
			return err
		}
	}
	self0, _ := procstat.CPUSeconds(os.Getpid())
	busy0, _, err := procstat.MachineBusy()
	if err != nil {
		return err
	}
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { smp.run(sctx) })
	defer func() {
		stopSampling()
		wg.Wait()
	}()
	goAt := time.Now()
	recv.send("go")
	snd.send("go")

	var sDone, rDone *line
	var sDoneAt time.Time
	var tenths []tenth
	timedOut := false
	ctxDone := ctx.Done()
	for sDone == nil || rDone == nil {
		wake := deadline
		if sDone != nil {
			wake = sDoneAt.Add(receiverLag)
		}
		if recv.quit || snd.quit {
			wake = deadline.Add(grace)
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case l, ok := <-recv.lines:
			if !ok {
				t.Stop()
				return errors.New("the receiver exited during the stream")
			}
			switch l.Verb {
			case "progress":
				now := smp.sample()
				tenths = append(tenths, tenth{pct: l.Int("pct"), n: l.Int("n"), at: l.Time("at").Sub(goAt), snd: now[snd.pid()], recv: now[recv.pid()]})
			case "done":
				rDone = &l
			}
		case l, ok := <-snd.lines:
			if !ok {
				t.Stop()
				return errors.New("the sender exited during the stream")
			}
			if l.Verb == "done" {
				sDone, sDoneAt = &l, time.Now()
			}
		case <-t.C:
			if recv.quit || snd.quit {
				return errors.New("the children did not report after they were told to quit")
			}
			// Quit makes a child stop and report what it has.
			timedOut = true
			for _, p := range []*proc{snd, recv} {
				p.send("quit")
			}
		case <-ctxDone:
			ctxDone = nil
			if !recv.quit && !snd.quit {
				timedOut = true
				for _, p := range []*proc{snd, recv} {
					p.send("quit")
				}
			}
		}
		t.Stop()
	}
	end := smp.sample()
	ours := 0.0
	for p, u := range use {
		u.rssEnd = end[p.pid()]
		u.cpuEnd, _ = procstat.CPUSeconds(p.pid())
		ours += u.cpuEnd - u.cpuStart
	}
	self1, _ := procstat.CPUSeconds(os.Getpid())
	busy1, _, _ := procstat.MachineBusy()
	streamWall := time.Since(goAt)
	others := max(0, busy1-busy0-ours-(self1-self0))
	stopSampling()
	wg.Wait()
	smp.mu.Lock()
	for p, u := range use {
		u.rssMax = smp.max[p.pid()]
	}
	samples := smp.n
	smp.mu.Unlock()

	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer rcancel()
	for _, p := range []*proc{snd, recv} {
		p.send("quit")
	}
	final, err := recv.expect(rctx, "final", grace)
	if err != nil {
		return err
	}
	stores := map[*proc]line{}
	for _, p := range []*proc{snd, recv} {
		if stores[p], err = p.expect(rctx, "store", grace); err != nil {
			return err
		}
	}

	// The report.
	m := o.messages
	fmt.Fprintf(stdout, "\nours: %d messages, sender and receiver in separate processes, chat.OSNetwork, found by multicast; encrypted (Noise), pipelined (window %d), stored by both sides (SQLite WAL, %s) before each ack\n",
		m, chat.Window, syncMode)
	if timedOut {
		fmt.Fprintf(stdout, "  TIMED OUT (-timeout %v): the counts below are what the children had\n", o.timeout)
	}
	start0 := sDone.Time("start")
	lastDelivered := sDone.Time("last_delivered")
	delivered := sDone.Int("delivered")
	var sendRate float64
	if delivered > 0 {
		sendRate = float64(delivered) / lastDelivered.Sub(start0).Seconds()
	}
	fmt.Fprintf(stdout, "  sender: posted %d in %.3f s; first Post to last Delivered %.3f s: %.0f messages/s\n",
		sDone.Int("posted"), sDone.Time("post_end").Sub(start0).Seconds(), lastDelivered.Sub(start0).Seconds(), sendRate)
	fmt.Fprintf(stdout, "          delivered %d, queued %d, sent %d, failed %d, unresolved %d, Post failed %v\n",
		delivered, sDone.Int("queued"), sDone.Int("sent"), sDone.Int("failed"), sDone.Int("unresolved"), sDone.Int("post_failed") == 1)
	received := final.Int("received")
	first, last := final.Time("first"), final.Time("last")
	var recvRate float64
	if received > 0 {
		recvRate = float64(received) / last.Sub(first).Seconds()
		fmt.Fprintf(stdout, "  receiver: first to last message received %.3f s: %.0f messages/s (first Post to last received %.3f s: %.0f messages/s)\n",
			last.Sub(first).Seconds(), recvRate, last.Sub(start0).Seconds(), float64(received)/last.Sub(start0).Seconds())
	}
	lost := m - received
	fmt.Fprintf(stdout, "          received %d, lost %d, duplicated %d, out of order %d, not of the stream %d, unencrypted %d (at the stream's end: received %d, duplicated %d)\n",
		received, lost, final.Int("dup"), final.Int("ooo"), final.Int("invalid"), final.Int("plain"), rDone.Int("received"), rDone.Int("dup"))
	if orig.received > 0 {
		ratio := sendRate / orig.rate()
		met := "met"
		if ratio < 10 || lost != 0 || final.Int("dup") != 0 {
			met = "NOT met"
		}
		fmt.Fprintf(stdout, "  ratio to the original: %.1fx (sender's rate %.0f / original's %.0f messages/s); target >= 10x, 0 lost, 0 duplicated: %s\n",
			ratio, sendRate, orig.rate(), met)
	}

	fmt.Fprintf(stdout, "\nmemory and CPU (RSS sampled every %v, %d samples; start = after discovery):\n", sampleEvery, samples)
	fmt.Fprintf(stdout, "  machine: %.2f CPU s in %.3f s of the stream; sender and receiver used %.2f, this process %.2f, other processes %.2f\n",
		streamWall.Seconds()*float64(runtime.NumCPU()), streamWall.Seconds(), ours, self1-self0, others)
	for _, p := range []*proc{snd, recv} {
		u := use[p]
		cpu := u.cpuEnd - u.cpuStart
		fmt.Fprintf(stdout, "  %-8s pid %d: RSS at start %s, max %s, at end %s; CPU %.2f s during the stream (%.1f us a message), %.2f s in all\n",
			p.role, p.pid(), mib(u.rssStart), mib(u.rssMax), mib(u.rssEnd), cpu, 1e6*cpu/float64(m), u.cpuEnd)
	}
	if len(tenths) > 0 {
		fmt.Fprintf(stdout, "  RSS at each tenth of the stream (as the receiver counted it):\n")
		prev := tenth{}
		for _, t := range tenths {
			rate := float64(t.n-prev.n) / (t.at - prev.at).Seconds()
			fmt.Fprintf(stdout, "    %3d%% at %8.3f s (%6.0f messages/s since the last): sender %s, receiver %s\n",
				t.pct, t.at.Seconds(), rate, mib(t.snd), mib(t.recv))
			prev = t
		}
	}

	fmt.Fprintf(stdout, "\nstores at the end:\n")
	for _, p := range []*proc{snd, recv} {
		s := stores[p]
		if s.Int("stats_ok") != 1 {
			fmt.Fprintf(stdout, "  %-8s stats unavailable (see stderr)\n", p.role)
		}
		fmt.Fprintf(stdout, "  %-8s pending %d, sent %d, delivered %d, expired %d, received %d; messages.db %s + wal %s before Close, %s + wal %s after\n",
			p.role, s.Int("pending"), s.Int("sent"), s.Int("delivered"), s.Int("expired"), s.Int("received"),
			mibBytes(s.Int("db")), mibBytes(s.Int("wal")), mibBytes(s.Int("db_closed")), mibBytes(s.Int("wal_closed")))
		fmt.Fprintf(stdout, "  %-8s %d commits; deliveries folded into their message's insert %d, written by UPDATE %d (store.Options.FoldWait %v)\n",
			"", s.Int("commits"), s.Int("folded"), s.Int("updated"), o.foldWait)
	}
	if o.cpuprofile != "" {
		fmt.Fprintf(stdout, "CPU profiles: %[1]s.sender.pprof, %[1]s.receiver.pprof (from the go to the end of the stream)", o.cpuprofile)
		if o.originalMessages > 0 {
			fmt.Fprintf(stdout, ", %s.original.pprof (this process, the baseline's sending)", o.cpuprofile)
		}
		fmt.Fprintln(stdout)
	}

	var errs []error
	for _, p := range []*proc{snd, recv} {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func mib(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func mibBytes(b int) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

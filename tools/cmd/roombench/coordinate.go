package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/room"
)

const (
	// setupLimit bounds the start of the nodes, the wait until every
	// node lists every member, and the wait for the room links.
	setupLimit = 3 * time.Minute
	// settleLimit bounds the wait, after a phase's last post, for every
	// member to show every message: past a message's CausalWait, and
	// then some.
	settleLimit = room.DefaultCausalWait + 50*time.Second
	// askLimit bounds a worker's answer to a command. An overloaded node
	// answers late: it holds its rooms' lock while it handles a batch.
	askLimit = 3 * time.Minute
	// grace bounds a worker's end after it was told to quit.
	grace = time.Minute
	// fdsPerNode is a node's descriptors besides its room links: its
	// listener, its multicast socket, its store's files (five SQLite
	// connections, each with the database, WAL and shared memory open),
	// and slack: 20 nodes held 41 each before their first link.
	fdsPerNode = 48
)

// fdNeed estimates the descriptors of a process that runs h of n
// members: two per room link of its nodes (the dialled end in it, and
// the accepted end of the link each other member opened to each of its
// nodes), fdsPerNode per node, and the process's own.
func fdNeed(h, n int) int { return 2*h*(n-1) + fdsPerNode*h + 64 }

// whandle is a worker: a child process, or runWorker in this process.
type whandle struct {
	id          int
	first, last int // its nodes
	in          io.WriteCloser
	resp        chan line  // its answers; closed at the end of its output
	cmd         *exec.Cmd  // nil: in this process
	done        chan error // in this process: runWorker's result
	quit        bool
	stopOnce    sync.Once
	stopErr     error
}

func (w *whandle) send(cmd string) {
	if cmd == "quit" {
		if w.quit {
			return
		}
		w.quit = true
	}
	fmt.Fprintln(w.in, cmd)
}

func (w *whandle) hosts(i int) bool { return i >= w.first && i < w.last }

// wevent is a line a worker says unasked during a phase.
type wevent struct {
	w int
	l line
}

type coord struct {
	o      options
	stdout io.Writer
	stderr io.Writer
	ws     []*whandle
	events chan wevent
	live   []bool // by node
	fanin  sync.WaitGroup
}

func coordinate(ctx context.Context, o options, stdout, stderr io.Writer) error {
	deadline := time.Now().Add(o.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c := &coord{o: o, stdout: stdout, stderr: stderr, events: make(chan wevent, 1<<16), live: make([]bool, o.members)}
	for i := range c.live {
		c.live[i] = true
	}

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-file limit: %w", err)
	}
	nw := o.workers
	if nw == 0 {
		nw = 1
		for nw < o.members && fdNeed((o.members+nw-1)/nw, o.members) > int(lim.Cur)*9/10 {
			nw++
		}
	}
	nw = min(nw, o.members)

	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(stdout, "roombench: %d members; %d CPUs, GOMAXPROCS %d, %s; load average %s before the run\n",
		o.members, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(stdout, "command: %s\n", commandLine())
	history := o.history
	if history == 0 {
		history = room.DefaultHistoryMessages
	}
	fmt.Fprintf(stdout, "nodes: chat.OSNetwork (multicast discovery on lo, a Noise session per room link), each with its own file store (SQLite WAL, synchronous=FULL, as parlance opens it) and identity, all in room %s (-join %s)\n", roomName, o.join)
	linkIdle := o.linkIdle
	if linkIdle == 0 {
		linkIdle = chat.DefaultIdleTimeout
	}
	fmt.Fprintf(stdout, "chat.Config: RoomRate %d/s and RoomBurst %d (chat's defaults %d/s and %d: raised so that the limiter does not shape the catch-up); RoomHistoryMessages %d%s; IdleTimeout %v%s; other settings default (RoomSyncInterval %v, CausalWait %v)\n",
		o.rate, o.burst, chat.DefaultRoomRate, chat.DefaultRoomBurst, history, dflt(o.history == 0), linkIdle, dflt(o.linkIdle == 0), chat.RoomSyncInterval, room.DefaultCausalWait)
	per := (o.members + nw - 1) / nw
	where := "in this process"
	if nw > 1 {
		where = fmt.Sprintf("in %d worker processes of up to %d nodes", nw, per)
	}
	fmt.Fprintf(stdout, "open files: limit %d per process; a process of %d nodes needs about %d (2 per room link end: %d links of its nodes each way); nodes run %s\n",
		lim.Cur, per, fdNeed(per, o.members), per*(o.members-1), where)

	dir, err := os.MkdirTemp("", "roombench-")
	if err != nil {
		return err
	}
	if o.keep {
		defer fmt.Fprintf(stdout, "stores kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	defer c.stopAll()
	if err := c.startWorkers(ctx, nw, dir, deadline); err != nil {
		return err
	}
	return c.phases(ctx)
}

func dflt(is bool) string {
	if is {
		return " (chat's default)"
	}
	return ""
}

func commandLine() string {
	var b strings.Builder
	for i, a := range os.Args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t'\"$\\") {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
	}
	return b.String()
}

func (c *coord) startWorkers(ctx context.Context, nw int, dir string, deadline time.Time) error {
	o := c.o
	for k := range nw {
		w := &whandle{id: k, first: k * o.members / nw, last: (k + 1) * o.members / nw, resp: make(chan line, 256)}
		wo := o
		wo.role, wo.wid, wo.first, wo.last, wo.data = roleWorker, k, w.first, w.last, dir
		wo.timeout = time.Until(deadline) + grace/2
		var out io.Reader
		if nw == 1 {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			w.in, out, w.done = inW, outR, make(chan error, 1)
			go func() { // ends when runWorker does; stop waits for it
				err := runWorker(context.WithoutCancel(ctx), wo, inR, outW, c.stderr)
				inR.Close()
				outW.Close()
				w.done <- err
			}()
		} else {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			args := []string{"-role", roleWorker, "-wid", strconv.Itoa(k), "-first", strconv.Itoa(w.first), "-last", strconv.Itoa(w.last),
				"-data", dir, "-join", o.join, "-members", strconv.Itoa(o.members), "-seed", strconv.FormatUint(o.seed, 10),
				"-rate", strconv.Itoa(o.rate), "-burst", strconv.Itoa(o.burst), "-history", strconv.Itoa(o.history),
				"-linkidle", o.linkIdle.String(),
				"-timeout", wo.timeout.Round(time.Millisecond).String()}
			w.cmd = exec.Command(self, args...)
			w.cmd.Stderr = c.stderr
			if w.in, err = w.cmd.StdinPipe(); err != nil {
				return err
			}
			if out, err = w.cmd.StdoutPipe(); err != nil {
				return err
			}
			if err := w.cmd.Start(); err != nil {
				return fmt.Errorf("start worker %d: %w", k, err)
			}
		}
		c.ws = append(c.ws, w)
		c.fanin.Go(func() { c.read(w, out) })
	}
	t0 := time.Now()
	for _, w := range c.ws {
		l, err := c.await(ctx, w, "ready", setupLimit)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "worker %d: nodes %s..%s started and in %s (%d files open)\n", w.id, nickname(w.first), nickname(w.last-1), roomName, l.Int("fds"))
	}
	fmt.Fprintf(c.stdout, "all %d nodes started in %.2f s\n", o.members, time.Since(t0).Seconds())
	return nil
}

// read passes a worker's lines on: the unasked ones of a phase to
// c.events, the rest to its resp.
func (c *coord) read(w *whandle, out io.Reader) {
	defer close(w.resp)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := parseLine(sc.Text())
		switch l.Verb {
		case "seen", "posted":
			c.events <- wevent{w.id, l}
		default:
			w.resp <- l
		}
	}
}

// await reads w's answers until one with verb; "burst" lines are kept
// in l.kv as burst.N entries (see bursts).
func (c *coord) await(ctx context.Context, w *whandle, verb string, limit time.Duration) (line, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	var bs []line
	for {
		select {
		case l, ok := <-w.resp:
			if !ok {
				return line{}, fmt.Errorf("worker %d ended before it said %q", w.id, verb)
			}
			if l.Verb == verb {
				if len(bs) > 0 {
					l.bursts = bs
				}
				return l, nil
			}
			if l.Verb == "burst" {
				bs = append(bs, l)
			}
		case <-t.C:
			return line{}, fmt.Errorf("worker %d did not say %q within %v", w.id, verb, limit)
		case <-ctx.Done():
			return line{}, fmt.Errorf("worker %d did not say %q: %w", w.id, verb, ctx.Err())
		}
	}
}

func (c *coord) ask(ctx context.Context, w *whandle, cmd, verb string) (line, error) {
	w.send(cmd)
	return c.await(ctx, w, verb, askLimit)
}

func (c *coord) askAll(ctx context.Context, cmd, verb string) ([]line, error) {
	for _, w := range c.ws {
		w.send(cmd)
	}
	out := make([]line, len(c.ws))
	for i, w := range c.ws {
		l, err := c.await(ctx, w, verb, askLimit)
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

func (c *coord) owner(node int) *whandle {
	for _, w := range c.ws {
		if w.hosts(node) {
			return w
		}
	}
	panic("no worker hosts node " + strconv.Itoa(node))
}

// waitMembers waits until every live node lists want members.
func (c *coord) waitMembers(ctx context.Context, want int, limit time.Duration) (time.Duration, error) {
	t0 := time.Now()
	told := t0
	for {
		ls, err := c.askAll(ctx, "members", "members")
		if err != nil {
			return 0, err
		}
		ok := true
		lo := want
		for _, l := range ls {
			if l.Int("min") != want || l.Int("max") != want {
				ok = false
			}
			lo = min(lo, l.Int("min"))
		}
		if ok {
			return time.Since(t0), nil
		}
		if time.Since(t0) > limit {
			// Each worker explains its nodes on stderr.
			c.askAll(ctx, fmt.Sprintf("members detail=1 want=%d", want), "members")
			return 0, fmt.Errorf("not every node lists %d members after %v (the fewest listed: %d; stderr says which are missing)", want, limit, lo)
		}
		if time.Since(told) >= 15*time.Second {
			told = time.Now()
			fmt.Fprintf(c.stderr, "roombench: after %.0f s the fewest members a node lists is %d of %d\n", time.Since(t0).Seconds(), lo, want)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

// stopAll tells every worker to quit, reads its output to the end and
// waits for it; past grace a worker process is killed.
func (c *coord) stopAll() {
	// Unasked lines nobody waits for any more: read them, so that no
	// worker's reader blocks.
	drained := make(chan struct{})
	go func() { // ends when every reader has ended
		c.fanin.Wait()
		close(drained)
	}()
	var bg sync.WaitGroup
	bg.Go(func() {
		for {
			select {
			case <-c.events:
			case <-drained:
				return
			}
		}
	})
	var errs []error
	for _, w := range c.ws {
		w.stopOnce.Do(func() {
			w.send("quit")
			w.in.Close()
			var kill *time.Timer
			if w.cmd != nil {
				kill = time.AfterFunc(grace, func() { w.cmd.Process.Kill() })
			}
			for range w.resp {
			}
			if w.cmd != nil {
				kill.Stop()
				w.stopErr = w.cmd.Wait()
			} else {
				w.stopErr = <-w.done
			}
		})
		if w.stopErr != nil {
			errs = append(errs, fmt.Errorf("worker %d: %w", w.id, w.stopErr))
		}
	}
	<-drained
	bg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(c.stderr, "roombench: %v\n", err)
	}
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/store"

	"github.com/parlance-chat/parlance/tools/internal/kvline"
)

// The two children, by their -role and their nickname.
const (
	roleSender   = "sender"
	roleReceiver = "receiver"
)

// The child's side of the line protocol. The parent writes "go" (start
// the stream) and "quit" (report and exit; so does the end of stdin). The
// child writes, each line a verb and key=value pairs:
//
//	ready instance=ID          the node runs
//	peer nick=NICK             the node lists the other child
//	progress pct=P n=N at=NS   P% of the stream (received, or resolved at the sender)
//	done ...                   the stream ended (all of it, or the timeout); counts and times
//	final ...                  receiver, after quit: the counts again, late duplicates included
//	store ...                  after quit: the store's counts and file sizes
//
// Times are Unix nanoseconds.

// lineWriter writes protocol lines; it is safe for concurrent use.
type lineWriter = kvline.Writer

// messageText is the i-th message of the stream: 40 bytes that carry i.
func messageText(i int) string {
	return fmt.Sprintf("msgbench message %012d xxxxxxxxxx", i)
}

// parseSeq reads the sequence number back from a messageText.
func parseSeq(text string) (int, bool) {
	f := strings.Fields(text)
	if len(f) != 4 || f[0] != "msgbench" || f[1] != "message" {
		return 0, false
	}
	n, err := strconv.Atoi(f[2])
	return n, err == nil && n >= 0
}

type child struct {
	o      options
	peer   string // the other child's nickname
	out    *lineWriter
	stderr io.Writer
	st     *store.Store
	node   *chat.Node
	tally  *tally // the receiver's

	peerSeen chan struct{} // closed when the node lists the peer
	drained  chan struct{} // closed when Events is closed and read to the end
	gotGo    chan struct{} // closed on "go"
	quit     chan struct{} // closed on "quit" or the end of stdin

	streaming atomic.Bool // between the go and the done
}

func runChild(ctx context.Context, o options, stdin io.Reader, stdout, stderr io.Writer) error {
	c := &child{
		o: o, out: &lineWriter{W: stdout}, stderr: stderr,
		peerSeen: make(chan struct{}), drained: make(chan struct{}),
		gotGo: make(chan struct{}), quit: make(chan struct{}),
	}
	c.peer = roleSender
	seed := uint64(2)
	if o.role == roleSender {
		c.peer, seed = roleReceiver, 1
	} else {
		c.tally = newTally(o.messages, c.out)
	}
	// The stdin reader ends at "quit" or at the end of stdin, which the
	// parent closes last; every path below waits for c.quit before it
	// returns, except an early error, which ends the process.
	go c.readCommands(stdin)

	st, err := store.Open(filepath.Join(o.data, "messages.db"), store.Options{NoSync: o.nosync, FoldWait: o.foldWait})
	if err != nil {
		return err
	}
	c.st = st
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("msgbench", o.role)
	node, err := chat.Start(ctx, chat.Config{
		Network:  chat.OSNetwork{},
		Nickname: o.role,
		Rand:     rand.New(rand.NewPCG(seed, 7)),
		Store:    st,
		Logger:   log,
	})
	if err != nil {
		st.Close()
		return err
	}
	c.node = node
	go c.drain()
	c.out.Say("ready", "instance", node.Instance())

	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	go func() { // ends the run early on "quit"; ends with runCtx
		select {
		case <-c.quit:
			cancel()
		case <-runCtx.Done():
		}
	}()
	var runErr error
	select {
	case <-c.peerSeen:
		c.out.Say("peer", "nick", c.peer)
		select {
		case <-c.gotGo:
			runErr = c.stream(runCtx)
		case <-runCtx.Done():
			runErr = fmt.Errorf("no go from the parent: %w", runCtx.Err())
		}
	case <-runCtx.Done():
		runErr = fmt.Errorf("%s not listed: %w", c.peer, runCtx.Err())
	}
	select {
	case <-c.quit:
	case <-ctx.Done():
	}
	return errors.Join(runErr, c.finish(ctx))
}

// readCommands turns the parent's lines into closed channels.
func (c *child) readCommands(stdin io.Reader) {
	defer close(c.quit)
	sc := bufio.NewScanner(stdin)
	goClosed := false
	for sc.Scan() {
		switch sc.Text() {
		case "go":
			if !goClosed {
				close(c.gotGo)
				goClosed = true
			}
		case "quit":
			return
		}
	}
}

// drain reads the node's events to the end: a node whose events nobody
// reads holds received messages back.
func (c *child) drain() {
	defer close(c.drained)
	seen := false
	for ev := range c.node.Events() {
		switch ev.Kind {
		case chat.EventPeerJoined, chat.EventPeerUpdated, chat.EventPeerRestarted:
			if ev.Peer.Nickname == c.peer && !seen {
				seen = true
				close(c.peerSeen)
			}
		case chat.EventPeerLeft, chat.EventPeerExpired:
			// After the stream the other child quits as well.
			if ev.Peer.Nickname == c.peer && c.streaming.Load() {
				fmt.Fprintf(c.stderr, "msgbench %s: %s %s during the stream\n", c.o.role, c.peer, ev.Kind)
			}
		case chat.EventMessage:
			if c.tally != nil {
				c.tally.add(ev.Message, time.Now())
			}
		case chat.EventStatus, chat.EventSecurity, chat.EventExpired:
			fmt.Fprintf(c.stderr, "msgbench %s: %s event: %s (err %v)\n", c.o.role, ev.Kind, ev.Text, ev.Err)
		}
	}
}

// stream runs the measured part, under a CPU profile if asked for.
func (c *child) stream(ctx context.Context) error {
	c.streaming.Store(true)
	defer c.streaming.Store(false)
	if c.o.cpuprofile != "" {
		f, err := os.Create(c.o.cpuprofile + "." + c.o.role + ".pprof")
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if c.o.role == roleSender {
		return c.send(ctx)
	}
	select {
	case <-c.tally.all:
	case <-ctx.Done():
	}
	c.streaming.Store(false) // the sender quits once it reads done
	c.out.Say("done", c.tally.snapshot()...)
	return nil
}

// send Posts the messages as fast as Post takes them and waits for their
// outcomes, in order, in a second goroutine. The channel between the two
// holds at most MaxOutstanding of them: Post blocks beyond that anyway.
func (c *child) send(ctx context.Context) error {
	m := c.o.messages
	outs := make(chan *chat.Outgoing, chat.MaxOutstanding)
	var (
		delivered, queued, sent, failed, unresolved int
		lastDelivered                               time.Time
		firstErr                                    error
	)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		resolved, next := 0, 1
		for o := range outs {
			res, err := o.Wait(ctx)
			now := time.Now()
			switch {
			case err != nil && ctx.Err() != nil:
				unresolved++
			case err != nil:
				failed++
				if firstErr == nil {
					firstErr = err
				}
			case res.Status == chat.Delivered:
				delivered++
				lastDelivered = now
			case res.Status == chat.Queued:
				queued++
			case res.Status == chat.Sent:
				sent++
			}
			resolved++
			for next <= 10 && resolved*10 >= next*m {
				c.out.Say("progress", "pct", 10*next, "n", resolved, "at", now.UnixNano())
				next++
			}
		}
	}()
	start := time.Now()
	posted := 0
	var postErr error
	for i := range m {
		o, err := c.node.Post(ctx, c.peer, messageText(i))
		if err != nil {
			postErr = fmt.Errorf("post message %d: %w", i, err)
			break
		}
		outs <- o
		posted++
	}
	postEnd := time.Now()
	close(outs)
	<-waited
	if firstErr != nil {
		fmt.Fprintf(c.stderr, "msgbench sender: first failed message: %v\n", firstErr)
	}
	if postErr != nil {
		fmt.Fprintf(c.stderr, "msgbench sender: %v\n", postErr)
	}
	last := int64(0)
	if !lastDelivered.IsZero() {
		last = lastDelivered.UnixNano()
	}
	c.streaming.Store(false) // the receiver quits once it reads done
	c.out.Say("done", "posted", posted, "delivered", delivered, "queued", queued, "sent", sent,
		"failed", failed, "unresolved", unresolved, "post_failed", btoi(postErr != nil),
		"start", start.UnixNano(), "post_end", postEnd.UnixNano(), "last_delivered", last)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// finish closes the node, then reports and closes the store.
func (c *child) finish(ctx context.Context) error {
	c.node.Close()
	<-c.drained
	if c.tally != nil {
		c.out.Say("final", c.tally.snapshot()...)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	path := c.st.Path()
	flushErr := c.st.Flush(ctx)
	stats, statsErr := c.st.Stats(ctx)
	db, wal := fileSize(path), fileSize(path+"-wal")
	ws := c.st.WriterStats()
	closeErr := c.st.Close()
	c.out.Say("store", "pending", stats.Pending, "sent", stats.Sent, "delivered", stats.Delivered,
		"expired", stats.Expired, "received", stats.Received, "stats_ok", btoi(statsErr == nil),
		"commits", ws.Commits, "folded", ws.Folded, "updated", ws.Updated,
		"db", db, "wal", wal, "db_closed", fileSize(path), "wal_closed", fileSize(path+"-wal"))
	return errors.Join(flushErr, statsErr, closeErr)
}

// fileSize is the size of the file at path, 0 if there is none.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tally checks the receiver's messages against the stream 0..want-1.
// Only the event reader adds to it.
type tally struct {
	out  *lineWriter
	want int
	all  chan struct{} // closed when every number arrived

	mu       sync.Mutex
	seen     []uint64 // bit set of the numbers received
	received int      // distinct numbers
	dup      int      // a number seen again
	ooo      int      // a number lower than one received before it
	invalid  int      // not a message of the stream
	plain    int      // not encrypted
	maxSeq   int
	first    time.Time
	last     time.Time
	next     int // the next tenth to report
}

func newTally(want int, out *lineWriter) *tally {
	return &tally{out: out, want: want, all: make(chan struct{}), seen: make([]uint64, (want+63)/64), maxSeq: -1, next: 1}
}

func (t *tally) add(m chat.Message, now time.Time) {
	var progress [][]any
	t.mu.Lock()
	if !m.Encrypted {
		t.plain++
	}
	seq, ok := parseSeq(m.Text)
	switch {
	case !ok || seq >= t.want:
		t.invalid++
	case t.seen[seq/64]&(1<<(seq%64)) != 0:
		t.dup++
	default:
		t.seen[seq/64] |= 1 << (seq % 64)
		if t.received == 0 {
			t.first = now
		}
		t.received++
		t.last = now
		if seq < t.maxSeq {
			t.ooo++
		} else {
			t.maxSeq = seq
		}
		for t.next <= 10 && t.received*10 >= t.next*t.want {
			progress = append(progress, []any{"pct", 10 * t.next, "n", t.received, "at", now.UnixNano()})
			t.next++
		}
		if t.received == t.want {
			close(t.all)
		}
	}
	t.mu.Unlock()
	for _, p := range progress {
		t.out.Say("progress", p...)
	}
}

// snapshot returns the counts as key, value pairs.
func (t *tally) snapshot() []any {
	t.mu.Lock()
	defer t.mu.Unlock()
	first, last := int64(0), int64(0)
	if t.received > 0 {
		first, last = t.first.UnixNano(), t.last.UnixNano()
	}
	return []any{"received", t.received, "dup", t.dup, "ooo", t.ooo, "invalid", t.invalid,
		"plain", t.plain, "first", first, "last", last}
}

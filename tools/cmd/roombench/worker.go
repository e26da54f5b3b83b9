package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
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
	"github.com/parlance-chat/parlance/client/room"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/tools/internal/procstat"
)

// roomName is the room every node joins.
const roomName = "#bench"

// Phases, as message texts and protocol lines name them.
const (
	phasePost    = "l"
	phaseCatchup = "c"
)

// stallAfter ends the catch-up when the restarted member has shown
// nothing new for this long: a periodic summary exchange, and then some,
// brought nothing.
const stallAfter = chat.RoomSyncInterval + 10*time.Second

// msgKey names a message of the run.
type msgKey struct {
	ph string
	i  int
}

// track is what a worker's nodes showed of one message.
type track struct {
	n                   int
	first, last, evLast time.Time
	done                bool
}

// wnode is one chat node of a worker.
type wnode struct {
	idx   int
	key   ed25519.PrivateKey
	path  string
	gen   uint64 // starts so far
	c     *counters
	trace *writeTrace
	st    *store.Store
	node  *chat.Node
	// drained is closed when the node's events have been read to the end.
	drained chan struct{}

	// Guarded by worker.mu.
	live  bool
	shown map[msgKey]bool
}

// catchup follows the restarted member.
type catchup struct {
	nd                  *wnode
	want                int
	t0, started, met    time.Time
	shows               []time.Time // read times of the missed messages shown
	forced, late, unmet int
	signal              chan struct{} // 1-buffered: something was shown
}

type worker struct {
	o      options
	out    *lineWriter
	stderr io.Writer
	log    *slog.Logger
	ctx    context.Context

	nodes   []*wnode // o.first.. o.last-1
	retired []*counters
	roomID  string

	mu      sync.Mutex
	track   map[msgKey]*track
	dup     int // a message shown twice by one node
	reshown int // the restarted member showed an earlier message again
	other   int // a room message that is not the tool's
	catch   *catchup

	posts   sync.WaitGroup // PostRoom calls and the catch-up watch
	fdMax   atomic.Int64
	profile *os.File // the CPU profile being written, nil for none
}

func runWorker(ctx context.Context, o options, stdin io.Reader, stdout, stderr io.Writer) error {
	if o.first < 0 || o.last <= o.first || o.last > o.members || o.data == "" {
		return fmt.Errorf("worker: nodes %d..%d of %d, data %q", o.first, o.last, o.members, o.data)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	w := &worker{
		o: o, out: &lineWriter{W: stdout}, stderr: stderr, ctx: ctx,
		log:   slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("roombench", o.wid),
		track: make(map[msgKey]*track),
	}
	// Commands arrive on their own goroutine, so that the end of the
	// run (ctx) can interrupt the wait for one. It ends at the end of
	// stdin, which the coordinator closes once it has the final line;
	// the worker waits for that last.
	cmds := make(chan string)
	readCtx, stopReading := context.WithCancel(ctx)
	var reading sync.WaitGroup
	defer reading.Wait()
	defer stopReading()
	reading.Go(func() {
		defer close(cmds)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case cmds <- sc.Text():
			case <-readCtx.Done(): // serve has returned: skip to the end
			}
		}
	})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() { w.sampleFDs(sampleCtx) })
	defer func() {
		stopSampling()
		sampling.Wait()
	}()

	err := w.startAll()
	if err == nil {
		w.out.Say("ready", "fds", countFDs(), "nodes", len(w.nodes))
		err = w.serve(cmds)
	}
	w.posts.Wait()
	if w.profile != nil {
		w.setProfile("")
	}
	closeErr := w.closeAll()
	w.mu.Lock()
	w.out.Say("final", "dup", w.dup, "reshown", w.reshown, "other", w.other, "fdmax", w.fdMax.Load())
	w.mu.Unlock()
	return errors.Join(err, closeErr)
}

// serve runs the coordinator's commands until quit or the end of stdin.
func (w *worker) serve(cmds <-chan string) error {
	for {
		var s string
		var ok bool
		select {
		case s, ok = <-cmds:
			if !ok {
				return nil
			}
		case <-w.ctx.Done():
			return fmt.Errorf("worker %d: %w", w.o.wid, w.ctx.Err())
		}
		l := parseLine(s)
		switch l.Verb {
		case "quit":
			return nil
		case "members":
			w.members(l.KV["detail"] == "1", l.Int("want"))
		case "stats":
			w.out.Say("stats", w.stats()...)
		case "nodestats":
			nd, err := w.node(l)
			if err != nil {
				return err
			}
			var kv []any
			if c := nd.c; c != nil {
				kv = []any{"dials", c.dials.Load(), "accepts", c.accepts.Load(), "dialw", c.dialW.Load(), "dialr", c.dialR.Load(),
					"accw", c.accW.Load(), "accr", c.accR.Load(), "werrs", c.werrs.Load()}
			}
			w.out.Say("nodestats", kv...)
		case "post":
			nd, err := w.node(l)
			if err != nil {
				return err
			}
			w.posts.Go(func() { w.post(nd, l.KV["ph"], l.Int("i")) })
		case "lines":
			nd, err := w.node(l)
			if err != nil {
				return err
			}
			w.lines(nd, l.KV["ph"])
		case "stop":
			nd, err := w.node(l)
			if err != nil {
				return err
			}
			t0 := time.Now()
			if err := w.stop(nd); err != nil {
				return err
			}
			w.out.Say("stopped", "node", nd.idx, "took", int64(time.Since(t0)))
		case "restart":
			nd, err := w.node(l)
			if err != nil {
				return err
			}
			if err := w.restart(nd, l.Int("want")); err != nil {
				return err
			}
		case "profile":
			w.setProfile(l.KV["path"])
		default:
			return fmt.Errorf("worker %d: unknown command %q", w.o.wid, s)
		}
	}
}

func (w *worker) node(l line) (*wnode, error) {
	i, err := strconv.Atoi(l.KV["node"])
	if err != nil || i < w.o.first || i >= w.o.last {
		return nil, fmt.Errorf("worker %d: no node %q here", w.o.wid, l.KV["node"])
	}
	return w.nodes[i-w.o.first], nil
}

// identity is node i's identity key: the same on every run with a seed.
func identity(seed uint64, i int) ed25519.PrivateKey {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	var b [ed25519.SeedSize]byte
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return ed25519.NewKeyFromSeed(b[:])
}

func (w *worker) startAll() error {
	for i := w.o.first; i < w.o.last; i++ {
		nd := &wnode{idx: i, key: identity(w.o.seed, i), path: filepath.Join(w.o.data, nickname(i), "messages.db")}
		if err := os.MkdirAll(filepath.Dir(nd.path), 0o700); err != nil {
			return err
		}
		w.nodes = append(w.nodes, nd)
		if err := w.start(nd, nil); err != nil {
			return err
		}
		if w.o.join == joinLive {
			if _, err := nd.node.JoinRoom(w.ctx, roomName, ""); err != nil {
				return fmt.Errorf("%s: join %s: %w", nickname(i), roomName, err)
			}
		}
		if w.roomID == "" {
			info, err := nd.node.Room(roomName)
			if err != nil {
				return err
			}
			w.roomID = info.ID
		}
	}
	return nil
}

// joinStoredRoom puts the room in st as joined and current, as JoinRoom
// of an earlier run would have left it.
func joinStoredRoom(ctx context.Context, st *store.Store) error {
	nm, err := room.ParseName(roomName)
	if err != nil {
		return err
	}
	r, err := room.New(nm, "")
	if err != nil {
		return err
	}
	return st.JoinRoom(ctx, store.RoomRow{ID: r.ID, Name: nm.String(), Key: r.Key(), Current: true})
}

// start opens nd's store and starts its node, tracing its writes if
// trace is not nil.
func (w *worker) start(nd *wnode, trace *writeTrace) error {
	st, err := store.Open(nd.path, store.Options{FoldWait: store.DefaultFoldWait})
	if err != nil {
		return fmt.Errorf("%s: open the store: %w", nickname(nd.idx), err)
	}
	if nd.gen == 0 && w.o.join == joinStored {
		if err := joinStoredRoom(w.ctx, st); err != nil {
			st.Close()
			return fmt.Errorf("%s: store the room: %w", nickname(nd.idx), err)
		}
	}
	nd.gen++
	nd.c, nd.trace = &counters{}, trace
	cn := &countingNetwork{base: chat.OSNetwork{}, c: nd.c, trace: trace}
	node, err := chat.Start(w.ctx, chat.Config{
		Network:             cn,
		Nickname:            nickname(nd.idx),
		Identity:            nd.key,
		Store:               st,
		Rand:                rand.New(rand.NewPCG(w.o.seed, uint64(nd.idx)|nd.gen<<32)),
		RoomRate:            w.o.rate,
		RoomBurst:           w.o.burst,
		RoomHistoryMessages: w.o.history,
		IdleTimeout:         w.o.linkIdle,
		Logger:              w.log.With("node", nickname(nd.idx)),
	})
	if err != nil {
		st.Close()
		return fmt.Errorf("%s: start: %w", nickname(nd.idx), err)
	}
	nd.st, nd.node, nd.drained = st, node, make(chan struct{})
	w.mu.Lock()
	nd.live = true
	if nd.shown == nil {
		nd.shown = make(map[msgKey]bool)
	}
	w.mu.Unlock()
	go w.readEvents(nd) // ends when Close closes Events; stop and closeAll wait for it
	return nil
}

// readEvents reads nd's events to the end: a node whose events nobody
// reads holds its room messages back.
func (w *worker) readEvents(nd *wnode) {
	defer close(nd.drained)
	for ev := range nd.node.Events() {
		now := time.Now()
		switch ev.Kind {
		case chat.EventRoomMessage:
			w.shown(nd, ev, now)
		case chat.EventPeerJoined, chat.EventPeerUpdated, chat.EventPeerRestarted:
			// Every peer of the run is a member: the restarted one
			// meets a member when it first lists a peer.
			w.mu.Lock()
			if c := w.catch; c != nil && c.nd == nd && c.met.IsZero() {
				c.met = now
			}
			w.mu.Unlock()
		case chat.EventStatus, chat.EventSecurity:
			fmt.Fprintf(w.stderr, "roombench %s: %s: %s (err %v)\n", nickname(nd.idx), ev.Kind, ev.Text, ev.Err)
		}
	}
}

// shown records that nd showed a room message at now.
func (w *worker) shown(nd *wnode, ev chat.Event, now time.Time) {
	ph, i, author, ok := parseText(ev.Room.Text)
	k := msgKey{ph, i}
	var say []any
	w.mu.Lock()
	switch {
	case !ok:
		w.other++
	case w.catch != nil && w.catch.nd == nd && ph != phaseCatchup:
		w.reshown++
	case nd.shown[k]:
		w.dup++
	case w.catch != nil && w.catch.nd == nd:
		nd.shown[k] = true
		c := w.catch
		c.shows = append(c.shows, now)
		if ev.Room.Forced {
			c.forced++
		}
		if ev.Room.Late {
			c.late++
		}
		c.unmet += ev.Room.Unmet
		select {
		case c.signal <- struct{}{}:
		default:
		}
	default:
		nd.shown[k] = true
		t := w.track[k]
		if t == nil {
			t = &track{first: now}
			w.track[k] = t
		}
		t.n++
		t.last = now
		t.evLast = later(t.evLast, ev.Time)
		if !t.done && t.n >= w.expectedLocked(author) {
			t.done = true
			say = []any{"ph", ph, "i", i, "n", t.n, "first", ns(t.first), "last", ns(t.last), "evlast", ns(t.evLast)}
		}
	}
	w.mu.Unlock()
	if say != nil {
		w.out.Say("seen", say...)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// expectedLocked is how many of the worker's nodes show a message of
// author: the live ones but the author and the member catching up.
func (w *worker) expectedLocked(author int) int {
	n := 0
	for _, nd := range w.nodes {
		if nd.live && nd.idx != author && (w.catch == nil || w.catch.nd != nd) {
			n++
		}
	}
	return n
}

// members says how many members the live nodes list, the fewest and
// the most; with detail, it explains on stderr each node that lists
// fewer than want.
func (w *worker) members(detail bool, want int) {
	// In parallel: a busy node answers Room late (it holds its rooms'
	// lock while it handles a batch of lines).
	counts := make([]int, len(w.nodes))
	var wg sync.WaitGroup
	for i, nd := range w.nodes {
		w.mu.Lock()
		live := nd.live
		w.mu.Unlock()
		counts[i] = -1
		if !live {
			continue
		}
		wg.Go(func() {
			info, err := nd.node.Room("")
			if err != nil {
				counts[i] = 0
				return
			}
			counts[i] = len(info.Members)
			if detail && counts[i] < want {
				w.explain(nd, info)
			}
		})
	}
	wg.Wait()
	lo, hi := -1, 0
	for _, n := range counts {
		if n < 0 {
			continue
		}
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	w.out.Say("members", "min", max(lo, 0), "max", hi)
}

// explain says which members nd does not list, and what it knows of
// them as peers.
func (w *worker) explain(nd *wnode, info chat.RoomInfo) {
	in := map[string]bool{nickname(nd.idx): true}
	for _, m := range info.Members {
		in[m.Nickname] = true
	}
	peers := map[string]string{}
	for _, p := range nd.node.Peers() {
		peers[p.Nickname] = fmt.Sprintf("listed as a peer with %d room tags", len(p.Rooms))
	}
	var b strings.Builder
	for i := range w.o.members {
		if nk := nickname(i); !in[nk] {
			why := peers[nk]
			if why == "" {
				why = "not listed as a peer"
			}
			fmt.Fprintf(&b, " %s (%s);", nk, why)
		}
	}
	fmt.Fprintf(w.stderr, "roombench: %s lists %d members; missing:%s\n", nickname(nd.idx), len(info.Members), b.String())
}

// post posts message i of phase ph from nd.
func (w *worker) post(nd *wnode, ph string, i int) {
	at := time.Now()
	res, err := nd.node.PostRoom(w.ctx, "", messageText(ph, i, nd.idx))
	end := time.Now()
	failed := 0
	if err != nil {
		failed = 1
		fmt.Fprintf(w.stderr, "roombench %s: post %s %d: %v\n", nickname(nd.idx), ph, i, err)
	}
	w.out.Say("posted", "ph", ph, "i", i, "at", ns(at), "end", ns(end), "members", res.Members, "err", failed)
}

// lines reports the size of the room_msg lines of phase ph that nd
// stored, and of a summary of every author it holds.
func (w *worker) lines(nd *wnode, ph string) {
	rows, err := nd.st.RoomMessages(w.ctx, w.roomID, 0)
	if err != nil {
		fmt.Fprintf(w.stderr, "roombench %s: read the room's messages: %v\n", nickname(nd.idx), err)
	}
	n, sum, lo, hi, deps := 0, 0, 0, 0, 0
	have := map[string]uint64{}
	for _, r := range rows {
		have[r.Author] = max(have[r.Author], r.Seq)
		if p, _, _, ok := parseText(r.Text); !ok || p != ph {
			continue
		}
		b, err := protocol.EncodeRoomMessage(&r.RoomMessage)
		if err != nil {
			continue
		}
		if n == 0 || len(b) < lo {
			lo = len(b)
		}
		hi = max(hi, len(b))
		n++
		sum += len(b)
		deps += len(r.Deps)
	}
	s := protocol.RoomSummary{Room: w.roomID}
	for a, seq := range have {
		s.Have = append(s.Have, protocol.RoomSeq{Author: a, Seq: seq})
	}
	sumLen := 0
	if b, err := protocol.EncodeRoomSummary(&s); err == nil {
		sumLen = len(b)
	}
	w.out.Say("lines", "n", n, "bytes", sum, "min", lo, "max", hi, "deps", deps, "authors", len(have), "sum", sumLen)
}

// stop closes nd's node, then its store.
func (w *worker) stop(nd *wnode) error {
	w.mu.Lock()
	nd.live = false
	w.mu.Unlock()
	err := nd.node.Close()
	<-nd.drained
	w.retired = append(w.retired, nd.c)
	nd.c = nil
	err = errors.Join(err, nd.st.Close())
	nd.st = nil
	return err
}

// stats are the worker's counters: every node's, the closed ones' too.
func (w *worker) stats() []any {
	var t counters
	all := append([]*counters(nil), w.retired...)
	for _, nd := range w.nodes {
		if nd.c != nil {
			all = append(all, nd.c)
		}
	}
	add := func(dst, src *atomic.Int64) { dst.Add(src.Load()) }
	for _, c := range all {
		add(&t.dials, &c.dials)
		add(&t.accepts, &c.accepts)
		add(&t.dialW, &c.dialW)
		add(&t.dialR, &c.dialR)
		add(&t.accW, &c.accW)
		add(&t.accR, &c.accR)
		add(&t.udpOut, &c.udpOut)
		add(&t.udpIn, &c.udpIn)
		add(&t.udpOutB, &c.udpOutB)
		add(&t.udpInB, &c.udpInB)
		add(&t.werrs, &c.werrs)
	}
	cpu, _ := procstat.CPUSeconds(os.Getpid())
	return []any{"dials", t.dials.Load(), "accepts", t.accepts.Load(),
		"dialw", t.dialW.Load(), "dialr", t.dialR.Load(), "accw", t.accW.Load(), "accr", t.accR.Load(),
		"werrs", t.werrs.Load(), "udpout", t.udpOut.Load(), "udpoutb", t.udpOutB.Load(), "udpin", t.udpIn.Load(), "udpinb", t.udpInB.Load(),
		"fds", countFDs(), "fdmax", w.fdMax.Load(), "cpu", strconv.FormatFloat(cpu, 'f', 2, 64), "pid", os.Getpid()}
}

// setProfile starts a CPU profile to path, or stops the running one when
// path is empty.
func (w *worker) setProfile(path string) {
	ok := 1
	if path == "" {
		if w.profile != nil {
			pprof.StopCPUProfile()
			w.profile.Close()
			w.profile = nil
		}
	} else {
		f, err := os.Create(path)
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			} else {
				w.profile = f
			}
		}
		if err != nil {
			fmt.Fprintf(w.stderr, "roombench: CPU profile: %v\n", err)
			ok = 0
		}
	}
	w.out.Say("profile", "ok", ok)
}

// closeAll closes the live nodes, then their stores.
func (w *worker) closeAll() error {
	var errs []error
	var wg sync.WaitGroup
	for _, nd := range w.nodes {
		w.mu.Lock()
		live := nd.live
		nd.live = false
		w.mu.Unlock()
		if !live || nd.node == nil {
			continue
		}
		wg.Go(func() {
			nd.node.Close()
			<-nd.drained
		})
	}
	wg.Wait()
	for _, nd := range w.nodes {
		if nd.st != nil {
			if err := nd.st.Close(); err != nil {
				errs = append(errs, fmt.Errorf("%s: close the store: %w", nickname(nd.idx), err))
			}
		}
	}
	return errors.Join(errs...)
}

// countFDs is how many files this process has open.
func countFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

func (w *worker) sampleFDs(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		n := int64(countFDs())
		if n > w.fdMax.Load() {
			w.fdMax.Store(n)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

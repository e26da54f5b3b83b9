package room

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// Errors of Add.
var (
	ErrWrongRoom      = errors.New("room: message for another room")
	ErrTooManyMembers = errors.New("room: too many members")
)

// Defaults of LogConfig.
const (
	DefaultHistoryMessages = 500
	DefaultHistoryAge      = 7 * 24 * time.Hour
	DefaultCausalWait      = 10 * time.Second
	DefaultStartWait       = 2 * time.Second
	DefaultMaxPending      = 4096
	DefaultMaxPendingBytes = 8 << 20
)

// maxSpans bounds the gaps remembered per author: past it the lowest gap
// is given up (its seqs count as delivered and are dropped if they come).
const maxSpans = 64

// LogConfig configures a Log. Zero fields take the defaults.
type LogConfig struct {
	// Room is the room ID (Room.ID). Required.
	Room string
	// Key is our identity key. Required: Next signs with it, and messages
	// whose author is its public key are ours.
	Key ed25519.PrivateKey
	// Joined is when we joined the room (kept across restarts). Messages
	// written before it are history, whose authors' earlier messages may
	// be gone everywhere; see StartWait. Zero: nothing is history.
	Joined time.Time
	// MaxMembers bounds the distinct authors, ours included, that the log
	// accepts (named as author or in deps); at most and by default
	// protocol.MaxRoomMembers.
	MaxMembers int
	// HistoryMessages bounds the delivered messages kept for
	// anti-entropy; HistoryAge drops older ones (by their author's
	// clock) from what Missing offers.
	HistoryMessages int
	HistoryAge      time.Duration
	// CausalWait is how long a message waits for what it depends on
	// before it is delivered anyway.
	CausalWait time.Duration
	// StartWait is how long a history message waits for earlier messages
	// of an author the log knows nothing of before the log takes the
	// history it has as that author's start. At most CausalWait.
	StartWait time.Duration
	// MaxPending and MaxPendingBytes bound the messages waiting for
	// delivery.
	MaxPending      int
	MaxPendingBytes int
}

// AddResult says what Add did with a message.
type AddResult int

const (
	// Duplicate: the log already holds, waits on or delivered the
	// message (or gave up on its seq); nothing changed.
	Duplicate AddResult = iota
	// Added: the message is new and waits for Ready to deliver it.
	Added
	// Overflow: the message is new, but the pending buffer is full and
	// it was the one farthest ahead of what was delivered, so it was
	// dropped; anti-entropy brings it again.
	Overflow
)

func (r AddResult) String() string {
	switch r {
	case Duplicate:
		return "duplicate"
	case Added:
		return "added"
	case Overflow:
		return "overflow"
	}
	return fmt.Sprintf("AddResult(%d)", int(r))
}

// Delivery is a message that Ready hands over for display, in causal
// order.
type Delivery struct {
	Msg *protocol.RoomMessage
	// Forced: the message waited CausalWait and was delivered without
	// some of what it depends on (listed in Unmet).
	Forced bool
	// Late: a later message of the same author was delivered before it
	// (it fills a gap that was forced past, or comes before the
	// author's start).
	Late bool
	// Unmet lists what the message depends on (its author's previous
	// seq, its deps) that was not delivered before it: because it was
	// Forced, or because it lies before where the log's history of that
	// author starts.
	Unmet []protocol.RoomSeq
}

// Stats counts what the log dropped or forced.
type Stats struct {
	Duplicates int // messages already held, pending, delivered or given up
	Forced     int // deliveries after CausalWait with something unmet
	Overflow   int // pending messages dropped to stay within the bounds
	GaveUp     int // seqs given up to bound the gaps remembered per author
}

// Log is one room's messages as one member sees them: it takes messages
// in any order, hands them over in causal order, each exactly once, and
// keeps a bounded history for anti-entropy. It does no I/O and reads no
// clock: time is an argument, and must not go backwards. It is not safe
// for concurrent use.
type Log struct {
	cfg     LogConfig
	self    string
	joined  int64 // cfg.Joined in Unix ms; 0 when not set
	authors map[string]*author

	// arrivals holds pending messages in arrival order (delivered and
	// dropped ones are skipped); startAt and forceAt are the first
	// entries not yet past StartWait and CausalWait.
	arrivals         []*pending
	startAt, forceAt int
	lastArrival      time.Time
	nArrived         uint64

	queue        []*pending // to check at the next drain
	nPending     int
	pendingBytes int

	history []*protocol.RoomMessage // delivered, oldest first
	walks   uint64                  // walks of Next, to tell stale walk state
	out     []Delivery
	stats   Stats
}

// author is what the log knows of one author.
type author struct {
	key string
	// start is where the log's history of this author begins: seqs
	// below it are taken as gone (0: not known, the history begins at 1).
	start   uint64
	done    seqSet // delivered seqs, and seqs given up
	highest uint64 // highest delivered seq
	pending map[uint64]*pending
	// waiters are pending messages waiting for a seq of this author.
	waiters map[uint64][]*pending
	// seen is the highest seq of this author's messages that reached the
	// log. For ourselves, Next goes past it, so that after a restart
	// without our own history, once anti-entropy has brought our
	// messages back, we do not reuse a seq the others hold. (Not from
	// others' deps: anyone could name a seq near MaxRoomSeq there.)
	seen uint64
	// shown is the seq our messages covered for this author, listed in
	// deps or implied by the past of a listed dep: Next takes the author
	// as a candidate again once highest passes it.
	shown uint64
	walk  walkState // Next's scratch
}

// walkState is what one pastWalk knows of an author.
type walkState struct {
	gen uint64 // the walk it belongs to; older state is stale
	// want is, for a candidate neither listed nor implied yet, its
	// highest seq; else 0.
	want uint64
	// implied is the highest seq of the author in the past walked.
	implied uint64
	// visited is the highest seq of the author whose past the walk has
	// read or is reading.
	visited uint64
}

type pendingState uint8

const (
	waiting pendingState = iota
	delivered
	dropped
)

type pending struct {
	m       *protocol.RoomMessage
	arrived time.Time
	n       uint64 // arrival number, to break ties
	size    int
	state   pendingState
	// parked says p is in the waiters of on (one list at a time, so
	// that a delivered or dropped message leaves none behind).
	parked bool
	on     protocol.RoomSeq
	// excused are needs on authors the log knows nothing of that this
	// history message no longer waits for (see fixStarts).
	excused []protocol.RoomSeq
}

// NewLog returns an empty log.
func NewLog(cfg LogConfig) (*Log, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("room: log: no identity key")
	}
	if len(cfg.Room) != protocol.RoomIDLen {
		return nil, fmt.Errorf("room: log: %q is not a room ID", cfg.Room)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxMembers, protocol.MaxRoomMembers)
	def(&cfg.HistoryMessages, DefaultHistoryMessages)
	def(&cfg.MaxPending, DefaultMaxPending)
	def(&cfg.MaxPendingBytes, DefaultMaxPendingBytes)
	defD(&cfg.HistoryAge, DefaultHistoryAge)
	defD(&cfg.CausalWait, DefaultCausalWait)
	defD(&cfg.StartWait, min(DefaultStartWait, cfg.CausalWait))
	if cfg.MaxMembers > protocol.MaxRoomMembers {
		return nil, fmt.Errorf("room: log: MaxMembers %d is over the protocol's %d", cfg.MaxMembers, protocol.MaxRoomMembers)
	}
	if cfg.StartWait > cfg.CausalWait {
		return nil, fmt.Errorf("room: log: StartWait %v is longer than CausalWait %v", cfg.StartWait, cfg.CausalWait)
	}
	l := &Log{cfg: cfg, authors: make(map[string]*author)}
	l.self = protocol.EncodePublicKey(cfg.Key.Public().(ed25519.PublicKey))
	if !cfg.Joined.IsZero() {
		l.joined = cfg.Joined.UnixMilli()
	}
	l.author(l.self)
	return l, nil
}

func (l *Log) author(key string) *author {
	a := l.authors[key]
	if a == nil {
		a = &author{key: key, pending: make(map[uint64]*pending), waiters: make(map[uint64][]*pending)}
		l.authors[key] = a
	}
	return a
}

// Add takes a message that arrived from any member. It checks the
// message's shape and room, drops a duplicate, refuses an author past
// MaxMembers, and verifies the signature of anything new (the log forwards
// what it holds, so it never holds what it has not verified). The message
// waits until Ready delivers it; m must not be modified afterwards.
func (l *Log) Add(m *protocol.RoomMessage, now time.Time) (AddResult, error) {
	return l.add(m, now, false)
}

// add is Add; verified skips the signature check (benchmarks of the log
// alone).
func (l *Log) add(m *protocol.RoomMessage, now time.Time, verified bool) (AddResult, error) {
	if m.Room != l.cfg.Room {
		return Duplicate, fmt.Errorf("room message for %.8s…: %w", m.Room, ErrWrongRoom)
	}
	if err := m.Validate(); err != nil {
		return Duplicate, err
	}
	if a := l.authors[m.Author]; a != nil && (a.done.has(m.Seq) || a.pending[m.Seq] != nil) {
		l.stats.Duplicates++
		return Duplicate, nil
	}
	if err := l.admit(m); err != nil {
		return Duplicate, err
	}
	if !verified {
		if err := Verify(m); err != nil {
			return Duplicate, err
		}
	}
	for _, d := range m.Deps {
		l.author(d.Author)
	}
	a := l.author(m.Author)
	a.seen = max(a.seen, m.Seq)
	if now.Before(l.lastArrival) {
		now = l.lastArrival
	}
	l.lastArrival = now
	l.nArrived++
	p := &pending{m: m, arrived: now, n: l.nArrived, size: approxSize(m)}
	a.pending[m.Seq] = p
	l.nPending++
	l.pendingBytes += p.size
	l.arrivals = append(l.arrivals, p)
	l.queue = append(l.queue, p)
	res := Added
	for l.nPending > l.cfg.MaxPending || l.pendingBytes > l.cfg.MaxPendingBytes {
		v := l.farthestAhead()
		l.drop(v)
		l.stats.Overflow++
		if v == p {
			res = Overflow
		}
	}
	return res, nil
}

// admit refuses a message that would bring the authors past MaxMembers.
func (l *Log) admit(m *protocol.RoomMessage) error {
	n := len(l.authors)
	if l.authors[m.Author] == nil {
		n++
	}
	for _, d := range m.Deps {
		if l.authors[d.Author] == nil {
			n++
		}
	}
	if n > l.cfg.MaxMembers {
		return fmt.Errorf("room message from %s: more than %d authors: %w", short(m.Author), l.cfg.MaxMembers, ErrTooManyMembers)
	}
	return nil
}

// approxSize is what a pending message costs in memory, roughly.
func approxSize(m *protocol.RoomMessage) int {
	return 256 + len(m.Nick) + len(m.Text) + len(m.Deps)*64
}

// farthestAhead returns the pending message farthest past what its
// author's delivered seqs reach, the latest arrival on a tie: the one
// least likely to be delivered soon.
func (l *Log) farthestAhead() *pending {
	var best *pending
	var bestAhead uint64
	for _, a := range l.authors {
		reach := a.done.contiguousFrom(max(a.start, 1))
		for s, p := range a.pending {
			var ahead uint64
			if s > reach {
				ahead = s - reach
			}
			if best == nil || ahead > bestAhead || ahead == bestAhead && p.n > best.n {
				best, bestAhead = p, ahead
			}
		}
	}
	return best
}

func (l *Log) drop(p *pending) {
	delete(l.authors[p.m.Author].pending, p.m.Seq)
	l.unpark(p)
	p.state = dropped
	l.nPending--
	l.pendingBytes -= p.size
}

// Ready returns the messages that can be shown now, in causal order: a
// message comes after its author's previous one and after every dep,
// unless it has waited CausalWait (then it is Forced, and Unmet says what
// it missed). Per author, what is delivered together is in increasing
// seq; each (author, seq) is delivered once over the log's life.
func (l *Log) Ready(now time.Time) []Delivery {
	l.out = nil
	l.expire(now)
	l.drain()
	if l.joined != 0 {
		cutoff := now.Add(-l.cfg.StartWait)
		for ; l.startAt < len(l.arrivals) && !l.arrivals[l.startAt].arrived.After(cutoff); l.startAt++ {
			if p := l.arrivals[l.startAt]; p.state == waiting && p.m.Time < l.joined {
				l.fixStarts(p)
			}
		}
		l.drain()
	}
	cutoff := now.Add(-l.cfg.CausalWait)
	for ; l.forceAt < len(l.arrivals) && !l.arrivals[l.forceAt].arrived.After(cutoff); l.forceAt++ {
		if p := l.arrivals[l.forceAt]; p.state == waiting {
			l.force(p)
			l.drain()
		}
	}
	l.startAt = max(l.startAt, l.forceAt)
	if l.forceAt > 64 && l.forceAt > len(l.arrivals)/2 {
		n := copy(l.arrivals, l.arrivals[l.forceAt:])
		clear(l.arrivals[n:])
		l.arrivals = l.arrivals[:n]
		l.startAt -= l.forceAt
		l.forceAt = 0
	}
	out := l.out
	l.out = nil
	return out
}

// drain checks every queued message, delivering what can be delivered;
// deliveries queue their waiters, so it runs to a fixed point.
func (l *Log) drain() {
	for i := 0; i < len(l.queue); i++ {
		l.check(l.queue[i])
	}
	clear(l.queue)
	l.queue = l.queue[:0]
}

// check delivers p if nothing it depends on is missing, or else parks it
// on the first thing missing.
func (l *Log) check(p *pending) {
	if p.state != waiting {
		return
	}
	a, s, ok := l.firstUnmet(p)
	if !ok {
		l.deliver(p, false)
		return
	}
	if p.parked && p.on == (protocol.RoomSeq{Author: a, Seq: s}) {
		return
	}
	l.unpark(p)
	w := l.authors[a]
	w.waiters[s] = append(w.waiters[s], p)
	p.parked, p.on = true, protocol.RoomSeq{Author: a, Seq: s}
}

// unpark takes p out of the waiters it is in, if any.
func (l *Log) unpark(p *pending) {
	if !p.parked {
		return
	}
	p.parked = false
	a := l.authors[p.on.Author]
	ws := slices.DeleteFunc(a.waiters[p.on.Seq], func(q *pending) bool { return q == p })
	if len(ws) == 0 {
		delete(a.waiters, p.on.Seq)
	} else {
		a.waiters[p.on.Seq] = ws
	}
}

// wake queues what waited for author a's seq s.
func (l *Log) wake(a *author, s uint64) {
	for _, p := range a.waiters[s] {
		p.parked = false
		l.queue = append(l.queue, p)
	}
	delete(a.waiters, s)
}

// met reports whether (a, s) was delivered (or given up), or lies before
// the log's start for a.
func (l *Log) met(a string, s uint64) bool {
	st := l.authors[a]
	return st != nil && (st.done.has(s) || s < st.start)
}

// needs calls f with each thing m depends on: its author's previous seq,
// then its deps.
func needs(m *protocol.RoomMessage, f func(a string, s uint64) bool) {
	if m.Seq > 1 && !f(m.Author, m.Seq-1) {
		return
	}
	for _, d := range m.Deps {
		if !f(d.Author, d.Seq) {
			return
		}
	}
}

func (l *Log) firstUnmet(p *pending) (a string, s uint64, ok bool) {
	needs(p.m, func(x string, t uint64) bool {
		if l.met(x, t) || slices.Contains(p.excused, protocol.RoomSeq{Author: x, Seq: t}) {
			return true
		}
		a, s, ok = x, t, true
		return false
	})
	return a, s, ok
}

// fixStarts handles a history message that waited StartWait. For each
// author it needs that the log knows nothing of: if the log holds some of
// that author's messages, the lowest becomes the author's start (what
// came before is taken as gone); if it holds none, this message stops
// waiting for that author. Only held, signed messages of an author move
// its start, so nobody else can make the log skip that author's
// messages by naming a high seq in a dep.
func (l *Log) fixStarts(p *pending) {
	needs(p.m, func(x string, t uint64) bool {
		a := l.authors[x]
		if l.met(x, t) || a.start != 0 || len(a.done.spans) != 0 {
			return true
		}
		if len(a.pending) == 0 {
			p.excused = append(p.excused, protocol.RoomSeq{Author: x, Seq: t})
			return true
		}
		a.start = slices.Min(slices.Collect(maps.Keys(a.pending)))
		for s := range a.waiters {
			if s < a.start {
				l.wake(a, s)
			}
		}
		return true
	})
	l.queue = append(l.queue, p)
}

// force delivers p, which waited CausalWait, whatever it misses; its
// author's lower pending seqs go first, to keep each author in order.
func (l *Log) force(p *pending) {
	a := l.authors[p.m.Author]
	var lower []uint64
	for s := range a.pending {
		if s < p.m.Seq {
			lower = append(lower, s)
		}
	}
	slices.Sort(lower)
	for _, s := range lower {
		q := a.pending[s]
		if q == nil { // given up by an earlier delivery
			continue
		}
		_, _, unmet := l.firstUnmet(q)
		l.deliver(q, unmet)
	}
	_, _, unmet := l.firstUnmet(p)
	l.deliver(p, unmet)
}

// deliver hands p over and wakes what waited for it.
func (l *Log) deliver(p *pending, forced bool) {
	m := p.m
	a := l.authors[m.Author]
	d := Delivery{Msg: m, Forced: forced, Late: m.Seq < a.highest}
	needs(m, func(x string, t uint64) bool {
		if st := l.authors[x]; st == nil || !st.done.has(t) {
			d.Unmet = append(d.Unmet, protocol.RoomSeq{Author: x, Seq: t})
		}
		return true
	})
	if forced {
		l.stats.Forced++
	}
	delete(a.pending, m.Seq)
	l.unpark(p)
	p.state = delivered
	l.nPending--
	l.pendingBytes -= p.size
	l.record(a, m)
	l.out = append(l.out, d)
}

// record marks m (ours or delivered) as delivered: in the author's seqs
// and the history, waking what waited for it.
func (l *Log) record(a *author, m *protocol.RoomMessage) {
	a.done.add(m.Seq)
	a.highest = max(a.highest, m.Seq)
	l.wake(a, m.Seq)
	if len(a.done.spans) > maxSpans {
		l.giveUp(a, a.done.fillLowestGap())
	}
	l.history = append(l.history, m)
	if n := len(l.history) - l.cfg.HistoryMessages; n > 0 {
		l.evict(n)
	}
}

// giveUp drops what is pending in a gap that is now counted as delivered,
// and wakes what waited for it.
func (l *Log) giveUp(a *author, gap span) {
	l.stats.GaveUp += int(gap.hi - gap.lo + 1)
	for s, p := range a.pending {
		if gap.lo <= s && s <= gap.hi {
			l.drop(p)
		}
	}
	for s := range a.waiters {
		if gap.lo <= s && s <= gap.hi {
			l.wake(a, s)
		}
	}
}

// Next builds, signs and records our next message: seq is one past our
// last, time is now, deps lists what we delivered since our previous
// message that the other deps do not already imply (see nextDeps). It
// counts as delivered. It fails, recording nothing, when the message would
// not fit in a line.
func (l *Log) Next(now time.Time, text, nick string) (*protocol.RoomMessage, error) {
	self := l.authors[l.self]
	seq := max(self.seen, self.done.max()) + 1
	m := &protocol.RoomMessage{Room: l.cfg.Room, Nick: nick, Seq: seq, Time: now.UnixMilli(), Text: text}
	deps, shown := l.nextDeps()
	m.Deps = deps
	slices.SortFunc(m.Deps, func(x, y protocol.RoomSeq) int { return strings.Compare(x.Author, y.Author) })
	Sign(l.cfg.Key, m)
	if _, err := protocol.EncodeRoomMessage(m); err != nil {
		return nil, err
	}
	for _, a := range shown {
		a.shown = a.highest
	}
	self.seen = seq
	l.record(self, m)
	return m, nil
}

// nextDeps returns the deps of our next message, and the authors it
// covers, listed or implied.
//
// The candidates are the other authors whose highest delivered seq passed
// what our previous message covered. A candidate (A, h) is left out when
// the causal past of a listed dep holds A at seq h or later: a receiver
// delivers a message only after its author's previous one and its deps,
// so, by induction, after its whole past; ours then comes after (A, h)
// without naming it. In a room where everyone speaks in turn, the last
// speaker's message has all the others in its past, and deps is that one
// entry.
//
// The past is walked through the history only: a message that left it
// ends that branch. What is not proven implied stays listed.
//
// Candidates are taken newest delivered first, and one is left out only
// when the past of those already listed implies it. Without forced
// deliveries a message is delivered after its whole past, so whatever
// implies a candidate was delivered after it and was taken before it
// (listed, or itself in the past of a listed one): one pass finds what
// the history can prove. A forced delivery can close a cycle (A5 lists
// B3, B3 lists A5, both signed by colluding authors); taking the
// candidates one at a time keeps the first listed, so deps is never empty
// when there are candidates, and every candidate left out is in the past
// of one that is listed.
//
// Cost: Next runs on every post. The walk reads each held message at most
// once, and stops as soon as every candidate is decided, so it is
// O(history + the deps it holds), and in a room speaking in turn it reads
// only the messages since our previous one.
func (l *Log) nextDeps() ([]protocol.RoomSeq, []*author) {
	var cands []*author
	for _, a := range l.authors {
		if a.key != l.self && a.highest > a.shown {
			cands = append(cands, a)
		}
	}
	switch len(cands) {
	case 0:
		return nil, nil
	case 1: // nothing to imply it
		return []protocol.RoomSeq{{Author: cands[0].key, Seq: cands[0].highest}}, cands
	}
	l.walks++
	w := pastWalk{l: l, gen: l.walks, held: make(map[heldKey]int), scanned: len(l.history)}
	// Newest delivered first; those the history no longer holds last
	// (they imply nothing), by key so that the result does not depend on
	// map order.
	type cand struct {
		a   *author
		pos int
	}
	order := make([]cand, len(cands))
	for i, a := range cands {
		w.reset(a)
		a.walk.want = a.highest
		order[i] = cand{a, w.find(a, a.highest)}
	}
	w.open = len(cands)
	slices.SortFunc(order, func(x, y cand) int {
		if x.pos != y.pos {
			return y.pos - x.pos
		}
		return strings.Compare(x.a.key, y.a.key)
	})
	var deps []protocol.RoomSeq
	for _, c := range order {
		a := c.a
		if a.walk.want == 0 { // implied by those listed before it
			continue
		}
		a.walk.want = 0
		w.open--
		deps = append(deps, protocol.RoomSeq{Author: a.key, Seq: a.highest})
		w.expand(a, a.highest)
	}
	return deps, cands
}

// pastWalk finds, per author, the highest seq in the causal past of the
// messages it expands: a message's past is its author's previous message
// and its deps, and their pasts. It reads only held messages. What it
// knows of each author is in the author (walk), so that the walk does not
// allocate per author; reset makes it this walk's on first use.
type pastWalk struct {
	l   *Log
	gen uint64
	// held indexes the history by author and seq, filled from the newest
	// as lookups need: history[scanned:] is in it.
	held    map[heldKey]int
	scanned int
	stack   []walkStep
	open    int // candidates neither listed nor implied yet
}

type heldKey struct {
	a   *author
	seq uint64
}

// reset makes a's walk state this walk's.
func (w *pastWalk) reset(a *author) {
	if a.walk.gen != w.gen {
		a.walk = walkState{gen: w.gen}
	}
}

// find returns the position in the history of a's message seq, or -1.
func (w *pastWalk) find(a *author, seq uint64) int {
	if i, ok := w.held[heldKey{a, seq}]; ok {
		return i
	}
	for w.scanned > 0 {
		w.scanned--
		m := w.l.history[w.scanned]
		b := w.l.authors[m.Author]
		w.held[heldKey{b, m.Seq}] = w.scanned
		if b == a && m.Seq == seq {
			return w.scanned
		}
	}
	return -1
}

// expand walks the past of a's message seq, which does not count itself,
// until it is done or every candidate is decided.
//
// It goes depth first through deps before going down an author's own
// messages, so it follows the newest messages first: in a room speaking
// in turn, the chain of last speakers since our previous message decides
// every candidate, and the walk stops there.
func (w *pastWalk) expand(a *author, seq uint64) {
	w.stack = append(w.stack[:0], walkStep{a: a, seq: seq})
	for len(w.stack) > 0 && w.open > 0 {
		x := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		if !x.down {
			// The past of (a, s) holds that of (a, s-1), so a seq at or
			// below visited is done or on the stack; a new one claims
			// the seqs down to visited.
			if x.seq <= x.a.walk.visited {
				continue
			}
			x.floor = x.a.walk.visited
			x.a.walk.visited = x.seq
		}
		i := w.find(x.a, x.seq)
		if i < 0 { // not held: the branch ends
			continue
		}
		if x.seq > 1 {
			w.imply(x.a, x.seq-1)
			if x.seq-1 > x.floor {
				w.stack = append(w.stack, walkStep{a: x.a, seq: x.seq - 1, floor: x.floor, down: true})
			}
		}
		for _, d := range w.l.history[i].Deps {
			b := w.l.authors[d.Author]
			if b == nil { // named only in restored history: nothing of it is held
				continue
			}
			w.reset(b)
			w.imply(b, d.Seq)
			if d.Seq > b.walk.visited {
				w.stack = append(w.stack, walkStep{a: b, seq: d.Seq})
			}
		}
	}
}

// walkStep is a message whose past the walk is to read. down: it is the
// previous message of one read, in a range of seqs above floor that its
// author's visited already claims.
type walkStep struct {
	a     *author
	seq   uint64
	floor uint64
	down  bool
}

// imply notes that a's seq is in the past walked.
func (w *pastWalk) imply(a *author, seq uint64) {
	if seq <= a.walk.implied {
		return
	}
	a.walk.implied = seq
	if a.walk.want != 0 && seq >= a.walk.want {
		a.walk.want = 0
		w.open--
	}
}

// Pending returns how many messages wait for delivery.
func (l *Log) Pending() int { return l.nPending }

// Stats returns the counters.
func (l *Log) Stats() Stats { return l.stats }

// short is an author's short fingerprint, for errors.
func short(key string) string {
	if fp := protocol.KeyFingerprint(key); fp != "" {
		return fp[:7]
	}
	return "?"
}

package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// roomSchedules is how many schedules TestPropertyRooms runs when the
// schedule count is TestMain's default; -rapid.checks=N or RAPID_CHECKS=N
// scale it as they scale mitmSchedules (5,000 gives 250).
const roomSchedules = 25

// propRoom is the room of the room schedules.
const propRoom = "#prop"

type roomKind int

const (
	roomWait roomKind = iota
	roomPostOp
	roomCut
	roomHeal
	roomCrash
	roomRestart
	roomJoin
)

var roomKindNames = [...]string{"wait", "post", "cut", "heal", "crash", "restart", "join"}

// roomOp is one step of a room schedule.
type roomOp struct {
	Kind roomKind
	A    int // post, crash, restart, join: the peer
	N    int // post: how many messages, back to back
	// Cut: side of each peer: 1 and 2 are cut off from each other, 0
	// stays joined to both.
	Cut []int
	D   time.Duration // wait
}

func (o roomOp) String() string {
	switch o.Kind {
	case roomWait:
		return fmt.Sprintf("wait %v", o.D)
	case roomPostOp:
		return fmt.Sprintf("post %d n%d", o.N, o.A)
	case roomCrash, roomRestart, roomJoin:
		return fmt.Sprintf("%s n%d", roomKindNames[o.Kind], o.A)
	case roomCut:
		return fmt.Sprintf("cut %v", o.Cut)
	}
	return roomKindNames[o.Kind]
}

// roomSchedule is one random run: how many peers, the network's seed,
// which peers join the room at the start (bit i: peer i), the steps.
type roomSchedule struct {
	Peers  int
	Seed   uint64
	Joined uint
	Ops    []roomOp
}

func (s roomSchedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers, netsim seed %d, joined at the start %0*b:", s.Peers, s.Seed, s.Peers, s.Joined)
	for _, o := range s.Ops {
		b.WriteString(" " + o.String() + ";")
	}
	return b.String()
}

func drawRoomSchedule(rt *rapid.T) roomSchedule {
	n := rapid.IntRange(3, 6).Draw(rt, "peers")
	seed := rapid.Uint64().Draw(rt, "netsim seed")
	joined := uint(rapid.IntRange(0, 1<<n-1).Draw(rt, "joined"))
	peerIdx := rapid.IntRange(0, n-1)
	kinds := rapid.SampledFrom([]roomKind{
		roomWait, roomWait, roomWait, roomPostOp, roomPostOp, roomPostOp, roomPostOp, roomPostOp, roomPostOp,
		roomCut, roomHeal, roomCrash, roomRestart, roomRestart, roomJoin,
	})
	gen := rapid.Custom(func(t *rapid.T) roomOp {
		o := roomOp{Kind: kinds.Draw(t, "kind")}
		switch o.Kind {
		case roomWait:
			o.D = time.Duration(rapid.IntRange(1, 200).Draw(t, "tenths of a second")) * 100 * time.Millisecond
		case roomPostOp:
			o.A = peerIdx.Draw(t, "peer")
			o.N = rapid.IntRange(1, 4).Draw(t, "messages")
		case roomCrash, roomRestart, roomJoin:
			o.A = peerIdx.Draw(t, "peer")
		case roomCut:
			o.Cut = rapid.SliceOfN(rapid.IntRange(0, 2), n, n).Draw(t, "sides")
		}
		return o
	})
	return roomSchedule{Peers: n, Seed: seed, Joined: joined, Ops: rapid.SliceOfN(gen, 6, 25).Draw(rt, "ops")}
}

// propPost is one message a room schedule posted.
type propPost struct {
	roomPost
	// joinedAfter: peers that had not joined when it was posted; down:
	// peers that were down.
	joinedAfter, down map[*peer]bool
}

// roomStats sums what the room schedules did, to show that their faults
// fire and that messages are forced, caught up and sent as history.
type roomStats struct {
	schedules, posts, refused, shown int
	forced, late, unmet              int
	// caughtUp: shown by a peer that was down when it was posted;
	// history: by one that had not joined yet.
	caughtUp, history int
	// storedUnseen: stored as shown at a peer whose node stopped in that
	// instant, before the event was emitted (see runRoomSchedule).
	storedUnseen int
	crashes      int
	simulated    time.Duration
	faults       map[netsim.FaultKind]int64
}

func (st *roomStats) String() string {
	kinds := make([]string, 0, len(st.faults))
	for k, v := range st.faults {
		if v > 0 {
			kinds = append(kinds, fmt.Sprintf("%s:%d", k, v))
		}
	}
	slices.Sort(kinds)
	return fmt.Sprintf("%d schedules, %v simulated; %d posts (%d refused), %d shown: %d forced, %d late, %d with unmet deps, %d caught up after a restart, %d as history to a late joiner, %d stored unseen in a crash; %d crashes; faults %v",
		st.schedules, st.simulated.Round(time.Second), st.posts, st.refused, st.shown, st.forced, st.late, st.unmet,
		st.caughtUp, st.history, st.storedUnseen, st.crashes, kinds)
}

// roomEnd bounds convergence once every fault is healed, every peer runs
// and every peer has joined: the peers find each other again, and within
// one summary interval each pair exchanges summaries; a message waiting
// for what it depends on is released within CausalWait.
func roomEnd() time.Duration { return discoveryBound(lanLink) + 2*roomQuiet }

// runRoomSchedule runs s and returns every invariant it broke. The peers
// keep their stores in files (a restart reads back its rooms and
// messages). Before the schedule the peers of s.Joined join the room;
// after it, every cut heals, every stopped peer restarts and every peer
// that never joined joins (a late joiner at the very end), and the
// network runs until every member's history holds every message posted
// (within roomEnd), then roomQuiet more. Then:
//
//   - every member's history (RoomHistory) is exactly the set posted,
//     each message with its author's text;
//   - each member showed (EventRoomMessage, across its instances) every
//     message of the others exactly once, and none of its own; a message
//     stored as shown but never emitted is allowed only when the member's
//     node stopped in the instant it was shown (a crash cuts the emit
//     short; the store had marked it first, by design), and is counted;
//   - each author's messages were shown in seq order, unless marked
//     Late;
//   - a message was shown after its author's previous one and after each
//     of its deps (read from the author's store), unless it says Forced
//     or lists something Unmet;
//   - no post failed but for the rate bound (ErrRoomRate).
//
// Goroutines that outlive their node make the bubble fail (synctest).
func runRoomSchedule(t *testing.T, nw *netsim.Network, s roomSchedule, st *roomStats) []error {
	ctx := t.Context()
	c := newCluster(t, nw)
	defer c.closeAll()
	c.g.UseFileStores(t.TempDir())
	nw.SetDefaultLink(lanLink)
	hosts := addHosts(nw, nw.AddSegment("lan"), "h", s.Peers)
	peers := make([]*peer, s.Peers)
	for i, h := range hosts {
		peers[i] = c.start(h, fmt.Sprintf("n%d", i))
	}
	nw.RunFor(discoveryBound(lanLink) + quantum)

	var (
		errs    []error
		posts   []*propPost
		rules   []*netsim.Rule
		joined  = map[*peer]bool{}
		stopped = map[*peer][]time.Duration{} // when each peer's instances stopped
	)
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	join := func(p *peer) {
		if _, err := p.Chat().JoinRoom(ctx, propRoom, ""); err != nil {
			fail("%v: join: %v", p, err)
			return
		}
		joined[p] = true
	}
	for i, p := range peers {
		if s.Joined&(1<<i) != 0 {
			join(p)
		}
	}
	for i, o := range s.Ops {
		switch o.Kind {
		case roomWait:
			nw.RunFor(o.D)
		case roomPostOp:
			p := peers[o.A]
			if !p.Up() || !joined[p] {
				continue
			}
			for k := range o.N {
				text := fmt.Sprintf("m%d.%d n%d", i, k, o.A)
				res, err := p.Chat().PostRoom(ctx, propRoom, text)
				st.posts++
				if err != nil {
					st.refused++
					if !errors.Is(err, chat.ErrRoomRate) {
						fail("%v: post %q: %v, want only ErrRoomRate", p, text, err)
					}
					continue
				}
				pp := &propPost{roomPost: roomPost{from: p, id: idOf(res.Message), text: text, at: nw.Now()},
					joinedAfter: map[*peer]bool{}, down: map[*peer]bool{}}
				for _, q := range peers {
					pp.joinedAfter[q] = !joined[q]
					pp.down[q] = !q.Up()
				}
				posts = append(posts, pp)
				// Each line leaves before the next is posted: a burst
				// coalesced or not is up to the Go scheduler, which
				// no seed fixes.
				nw.Settle()
			}
		case roomCut:
			var a, b []*netsim.Host
			for j, side := range o.Cut {
				switch side {
				case 1:
					a = append(a, hosts[j])
				case 2:
					b = append(b, hosts[j])
				}
			}
			if len(a) > 0 && len(b) > 0 {
				rules = append(rules, nw.Partition(a, b))
			}
		case roomHeal:
			for _, r := range rules {
				r.Heal()
			}
			rules = nil
		case roomCrash:
			if p := peers[o.A]; p.Up() {
				stopped[p] = append(stopped[p], nw.Now())
				st.crashes++
				p.Crash()
			}
		case roomRestart:
			if p := peers[o.A]; !p.Up() {
				p.restart()
			}
		case roomJoin:
			if p := peers[o.A]; p.Up() && !joined[p] {
				join(p)
			}
		}
	}

	// The end: everything healed, everyone up and in the room.
	for _, r := range rules {
		r.Heal()
	}
	for _, p := range peers {
		if !p.Up() {
			p.restart()
		}
	}
	for _, p := range peers {
		if !joined[p] {
			join(p)
		}
	}
	want := map[msgID]*propPost{}
	for _, p := range posts {
		want[p.id] = p
	}
	var diff error
	if !runUntilEvery(nw, func() bool {
		diff = historiesErr(ctx, peers, want)
		return diff == nil
	}, time.Second, roomEnd()) {
		fail("the histories differ %v after everything healed: %v", roomEnd(), diff)
	}
	nw.RunFor(roomQuiet)
	if err := historiesErr(ctx, peers, want); err != nil {
		fail("after a quiet %v more: %v", roomQuiet, err)
	}
	errs = append(errs, shownErrs(ctx, c, peers, want, stopped, st)...)
	st.schedules++
	st.simulated += nw.Now()
	if st.faults == nil {
		st.faults = map[netsim.FaultKind]int64{}
	}
	for k, v := range nw.FaultCounts() {
		st.faults[k] += v
	}
	return errs
}

// historiesErr checks that every peer's history of the room holds exactly
// the messages of want, with their texts.
func historiesErr(ctx context.Context, peers []*peer, want map[msgID]*propPost) error {
	var errs []error
	for _, p := range peers {
		h, err := p.Chat().RoomHistory(ctx, propRoom, 1<<20)
		if err != nil {
			return fmt.Errorf("%v: history: %w", p, err)
		}
		have := map[msgID]bool{}
		var extra []string
		for _, m := range h {
			id := idOf(m)
			if have[id] {
				extra = append(extra, fmt.Sprintf("%v twice", id))
			}
			have[id] = true
			if w, ok := want[id]; !ok || w.text != m.Text {
				extra = append(extra, fmt.Sprintf("%v %q", id, m.Text))
			}
		}
		var missing []string
		for _, id := range slices.SortedFunc(maps.Keys(want), cmpID) {
			if !have[id] {
				missing = append(missing, fmt.Sprintf("%q", want[id].text))
			}
		}
		if len(extra) > 0 || len(missing) > 0 {
			errs = append(errs, fmt.Errorf("%v's history lacks %d of %d posted %v, holds %d not posted %v",
				p, len(missing), len(want), missing, len(extra), extra))
		}
	}
	return errors.Join(errs...)
}

func cmpID(a, b msgID) int {
	return cmp.Or(strings.Compare(a.author, b.author), cmp.Compare(a.seq, b.seq))
}

// shownErrs checks what every peer showed (runRoomSchedule's invariants
// on events), and counts it in st.
func shownErrs(ctx context.Context, c *cluster, peers []*peer, want map[msgID]*propPost, stopped map[*peer][]time.Duration, st *roomStats) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	// Deps, from each author's store (it holds its own messages).
	var roomID string
	if info, err := peers[0].Chat().Room(propRoom); err == nil {
		roomID = info.ID
	}
	deps := map[msgID][]msgID{}
	for _, p := range peers {
		rows, err := p.Store().RoomMessages(ctx, roomID, 0)
		if err != nil {
			return []error{fmt.Errorf("%v: stored room messages: %w", p, err)}
		}
		for _, r := range rows {
			id := msgID{r.Author, r.Seq}
			if _, ok := deps[id]; ok {
				continue
			}
			ds := []msgID{}
			for _, d := range r.Deps {
				ds = append(ds, msgID{d.Author, d.Seq})
			}
			deps[id] = ds
		}
	}
	for _, p := range peers {
		self := p.Chat().PublicKey()
		shown := map[msgID]int{}
		top := map[string]uint64{} // highest seq shown, by author
		for _, m := range shownRoom(p, propRoom) {
			id := idOf(m)
			st.shown++
			w, ok := want[id]
			switch {
			case !ok:
				fail("%v showed %v %q, never posted", p, id, m.Text)
				continue
			case m.Text != w.text || m.Own || m.Author == self:
				fail("%v showed %v as %q (own %v), want %q from %v", p, id, m.Text, m.Own, w.text, w.from)
			}
			if shown[id] > 0 {
				fail("%v showed %q again", p, w.text)
			}
			if m.Forced {
				st.forced++
			}
			if m.Late {
				st.late++
			}
			if m.Unmet > 0 {
				st.unmet++
			}
			if w.down[p] {
				st.caughtUp++
			}
			if w.joinedAfter[p] {
				st.history++
			}
			if m.Seq < top[m.Author] && !m.Late {
				fail("%v showed %q (seq %d) after seq %d of its author, not marked late", p, w.text, m.Seq, top[m.Author])
			}
			top[m.Author] = max(top[m.Author], m.Seq)
			excused := m.Forced || m.Unmet > 0
			before := func(d msgID) bool { return d.author == self || shown[d] > 0 }
			if prev := (msgID{m.Author, m.Seq - 1}); m.Seq > 1 && !before(prev) && !excused {
				fail("%v showed %q before its author's previous message %v, neither forced nor with anything unmet", p, w.text, prev)
			}
			for _, d := range deps[id] {
				if !before(d) && !excused {
					fail("%v showed %q before %v, which its author had seen, neither forced nor with anything unmet", p, w.text, d)
				}
			}
			shown[id]++
		}
		// Every message of the others shown: by an event, or stored as
		// shown in the instant the node stopped.
		var stored map[msgID]time.Time
		for _, id := range slices.SortedFunc(maps.Keys(want), cmpID) {
			if id.author == self || shown[id] > 0 {
				continue
			}
			if stored == nil {
				stored = map[msgID]time.Time{}
				h, err := p.Chat().RoomHistory(ctx, propRoom, 1<<20)
				if err != nil {
					fail("%v: history: %v", p, err)
				}
				for _, m := range h {
					stored[idOf(m)] = m.Received
				}
			}
			at, ok := stored[id]
			// Received is kept to the millisecond.
			if ok && slices.ContainsFunc(stopped[p], func(d time.Duration) bool { x := c.at(at); return x <= d && d-x < time.Millisecond }) {
				st.storedUnseen++
				continue
			}
			fail("%v never showed %q (stored as shown at %v; its instances stopped at %v)", p, want[id].text, c.at(at), stopped[p])
		}
	}
	return errs
}

// roomExamples run before the random schedules, so that what the
// property checks is reached whatever rapid draws:
//
//   - a partition splits four members in two while both sides post, and
//     heals after the sides dropped each other;
//   - n1 crashes while the others post and comes back (catch-up), and n2
//     joins late (history);
//   - n1 can reach n0 and n2, which are cut off from each other: n0
//     posts, n1 posts after seeing it, and n2 holds n1's message for
//     CausalWait before showing it Forced (n0's arrives later through
//     anti-entropy).
var roomExamples = []roomSchedule{
	{Peers: 4, Seed: 1, Joined: 0b1111, Ops: []roomOp{
		{Kind: roomPostOp, A: 0, N: 1}, {Kind: roomWait, D: time.Second},
		{Kind: roomCut, Cut: []int{1, 1, 2, 2}},
		{Kind: roomPostOp, A: 0, N: 2}, {Kind: roomPostOp, A: 3, N: 2}, {Kind: roomWait, D: 20 * time.Second},
		{Kind: roomPostOp, A: 1, N: 1}, {Kind: roomPostOp, A: 2, N: 1}, {Kind: roomHeal},
	}},
	{Peers: 3, Seed: 2, Joined: 0b011, Ops: []roomOp{
		{Kind: roomPostOp, A: 0, N: 1}, {Kind: roomPostOp, A: 1, N: 1}, {Kind: roomWait, D: time.Second},
		{Kind: roomCrash, A: 1}, {Kind: roomPostOp, A: 0, N: 3}, {Kind: roomWait, D: 5 * time.Second},
		{Kind: roomRestart, A: 1}, {Kind: roomWait, D: 5 * time.Second}, {Kind: roomJoin, A: 2},
	}},
	{Peers: 3, Seed: 3, Joined: 0b111, Ops: []roomOp{
		{Kind: roomCut, Cut: []int{1, 0, 2}},
		{Kind: roomPostOp, A: 0, N: 1}, {Kind: roomWait, D: time.Second},
		{Kind: roomPostOp, A: 1, N: 1}, {Kind: roomWait, D: 12 * time.Second}, {Kind: roomHeal},
	}},
}

// Random schedules over three to six members of one room on a LAN:
// posts, partitions (any two groups cut off from each other, the rest
// joined to both) and heals, crashes and restarts (on file stores), late
// joins, waits. See runRoomSchedule for the invariants: in short, once
// every fault heals, every member holds the same messages, shows each of
// the others' exactly once, each author's in order and none before what
// its author had seen unless marked. The fixed roomExamples run first
// and must between them force a message, catch a restarted member up and
// give a late joiner history.
func TestPropertyRooms(t *testing.T) {
	var ex roomStats
	runExamples(t, roomExamples, func(s roomSchedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s roomSchedule) []error { return runRoomSchedule(t, nw, s, &ex) })
	t.Logf("examples: %s", &ex)
	for what, n := range map[string]int{"forced": ex.forced, "caught up after a restart": ex.caughtUp, "sent as history to a late joiner": ex.history} {
		if n == 0 {
			t.Errorf("no message was %s in the fixed examples: %v", what, &ex)
		}
	}

	withRapidChecks(t, roomSchedules)
	var st roomStats
	checkSimulated(t, drawRoomSchedule, func(s roomSchedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s roomSchedule) []error {
			return runRoomSchedule(t, nw, s, &st)
		})
	t.Logf("%s", &st)
}

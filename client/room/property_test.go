package room

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/parlance-chat/parlance/protocol"
)

// A replica is one member's log in the property test, with what it
// delivered, in order.
type replica struct {
	log   *Log                     // nil until a late joiner joins
	order map[protocol.RoomSeq]int // position of each delivery
	next  int
	high  map[string]uint64 // highest seq delivered per author
	// excused: a delivery so far was forced or had something unmet, so
	// the transitive check no longer holds for this member.
	excused bool
}

// flight is a message on its way to a replica.
type flight struct {
	at time.Time
	to int
	m  *protocol.RoomMessage
	n  int // send number, to keep equal times in send order
}

// roomSim is the property test's world: replicas, the messages in flight
// and the time, which only the test advances.
type roomSim struct {
	t        *rapid.T
	clean    bool // no drops and no delay past CausalWait: nothing may be forced
	now      time.Time
	replicas []*replica
	flights  []flight
	sent     int
	authored map[protocol.RoomSeq]bool
	// past is the causal past of each message written: per author, the
	// highest seq that happened before it (its author had delivered it,
	// or it is in the past of something its author had delivered). The
	// past of (a, s) holds (a, s-1), so the highest seq says it all.
	past map[protocol.RoomSeq]map[string]uint64
	late int // the member that joins late, or -1
}

const (
	simCausalWait = 10 * time.Second
	simMaxClean   = 5 * time.Second  // longest delay in a clean run
	simMaxFaulty  = 30 * time.Second // longest delay otherwise
)

// TestLogProperty: 2 to 6 members write, their messages reach the others
// reordered, duplicated, late or (in faulty runs) not at all, and members
// exchange summaries now and then; in some runs one member joins late and
// catches up from another. After full anti-entropy rounds every member
// has delivered every message exactly once (a late joiner: every message
// from where its history of each author starts); no message came before
// its author's previous one or a dep unless the log said so (Unmet), and
// in clean runs (no drops, delays under CausalWait) nothing was forced
// (except at a late joiner, whose catch-up comes when it comes). And
// while a member has had nothing forced or unmet, it delivers each
// message after its whole causal past: everything its author had
// delivered when writing it, and their pasts. The sim knows that past
// whatever deps say, so this checks that Next leaves out only what the
// deps it lists imply.
func TestLogProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(2, 6).Draw(rt, "members")
		s := &roomSim{t: rt, clean: rapid.Bool().Draw(rt, "clean"), now: t0, authored: make(map[protocol.RoomSeq]bool), past: make(map[protocol.RoomSeq]map[string]uint64)}
		s.late = -1
		if rapid.Bool().Draw(rt, "late joiner") {
			s.late = n - 1
		}
		for i := range n {
			s.replicas = append(s.replicas, &replica{order: make(map[protocol.RoomSeq]int), high: make(map[string]uint64)})
			if i != s.late {
				s.join(i, time.Time{})
			}
		}
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 6).Draw(rt, "step") {
			case 0, 1, 2:
				if i := rapid.IntRange(0, n-1).Draw(rt, "author"); s.replicas[i].log != nil {
					s.post(i)
				}
			case 3, 4:
				s.advance(time.Duration(rapid.IntRange(0, 4000).Draw(rt, "ms")) * time.Millisecond)
			case 5:
				s.exchange(rapid.IntRange(0, n-1).Draw(rt, "from"), rapid.IntRange(0, n-1).Draw(rt, "to"))
			case 6:
				if s.late >= 0 && s.replicas[s.late].log == nil {
					s.join(s.late, s.now)
				}
			}
		}
		if s.late >= 0 && s.replicas[s.late].log == nil {
			s.join(s.late, s.now)
		}
		s.settle()
	})
}

// join starts member i's log; a late joiner (joined set) then catches up
// from a random member at once, as it would on connecting.
func (s *roomSim) join(i int, joined time.Time) {
	l, err := NewLog(LogConfig{Room: testRoom, Key: testKey(byte(10 + i)), Joined: joined, CausalWait: simCausalWait, StartWait: 2 * time.Second, HistoryMessages: 1 << 20})
	if err != nil {
		s.t.Fatal(err)
	}
	s.replicas[i].log = l
	if !joined.IsZero() {
		s.exchange(rapid.IntRange(0, len(s.replicas)-1).Draw(s.t, "catch up from"), i)
	}
}

// post has member i write a message and send it to every other member.
func (s *roomSim) post(i int) {
	r := s.replicas[i]
	s.deliver(i, r.log.Ready(s.now))
	m, err := r.log.Next(s.now, fmt.Sprintf("m%d", s.sent), "nick")
	if err != nil {
		s.t.Fatal(err)
	}
	id := protocol.RoomSeq{Author: m.Author, Seq: m.Seq}
	s.authored[id] = true
	// What member i had delivered (its own messages included) happened
	// before m, and so did their pasts.
	past := make(map[string]uint64)
	for a, h := range r.high {
		past[a] = max(past[a], h)
		for b, t := range s.past[protocol.RoomSeq{Author: a, Seq: h}] {
			past[b] = max(past[b], t)
		}
	}
	s.past[id] = past
	s.deliver(i, []Delivery{{Msg: m}})
	maxDelay := simMaxFaulty
	if s.clean {
		maxDelay = simMaxClean
	}
	for j := range s.replicas {
		if j == i || s.replicas[j].log == nil {
			continue
		}
		if !s.clean && rapid.IntRange(0, 4).Draw(s.t, "drop") == 0 {
			continue
		}
		copies := 1
		if rapid.IntRange(0, 5).Draw(s.t, "dup") == 0 {
			copies = 2
		}
		for range copies {
			d := time.Duration(rapid.Int64Range(0, int64(maxDelay/time.Millisecond)).Draw(s.t, "delay")) * time.Millisecond
			s.sent++
			s.flights = append(s.flights, flight{at: s.now.Add(d), to: j, m: m, n: s.sent})
		}
	}
}

// advance moves time forward by d, handing over what lands meanwhile.
func (s *roomSim) advance(d time.Duration) {
	until := s.now.Add(d)
	slices.SortFunc(s.flights, func(a, b flight) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.n - b.n
	})
	k := 0
	for ; k < len(s.flights) && !s.flights[k].at.After(until); k++ {
		f := s.flights[k]
		s.now = f.at
		s.add(f.to, f.m)
	}
	s.flights = s.flights[k:]
	s.now = until
	for i, r := range s.replicas {
		if r.log != nil {
			s.deliver(i, r.log.Ready(s.now))
		}
	}
}

func (s *roomSim) add(i int, m *protocol.RoomMessage) bool {
	r := s.replicas[i]
	res, err := r.log.Add(m, s.now)
	if err != nil {
		s.t.Fatalf("member %d: Add %s: %v", i, m.Text, err)
	}
	s.deliver(i, r.log.Ready(s.now))
	return res == Added
}

// exchange is one anti-entropy step: to sends its summary, from answers
// with what to lacks.
func (s *roomSim) exchange(from, to int) (added int) {
	if from == to || s.replicas[from].log == nil || s.replicas[to].log == nil {
		return 0
	}
	for _, m := range s.replicas[from].log.Missing(s.replicas[to].log.Summary(), s.now) {
		if s.add(to, m) {
			added++
		}
	}
	return added
}

// deliver records member i's deliveries and checks each one as it comes.
func (s *roomSim) deliver(i int, ds []Delivery) {
	r := s.replicas[i]
	for _, d := range ds {
		m := d.Msg
		id := protocol.RoomSeq{Author: m.Author, Seq: m.Seq}
		if _, dup := r.order[id]; dup {
			s.t.Fatalf("member %d delivered %s twice", i, m.Text)
		}
		unmet := make(map[protocol.RoomSeq]bool)
		for _, u := range d.Unmet {
			if _, ok := r.order[u]; ok {
				s.t.Fatalf("member %d: %s lists %v as unmet, but it was delivered", i, m.Text, u)
			}
			unmet[u] = true
		}
		var needs []protocol.RoomSeq
		if m.Seq > 1 {
			needs = append(needs, protocol.RoomSeq{Author: m.Author, Seq: m.Seq - 1})
		}
		needs = append(needs, m.Deps...)
		for _, x := range needs {
			if _, ok := r.order[x]; !ok && !unmet[x] {
				s.t.Fatalf("member %d delivered %s before %v, and did not say so", i, m.Text, x)
			}
		}
		if len(d.Unmet) > 0 && !d.Forced && i != s.late {
			s.t.Fatalf("member %d delivered %s without %v, not forced and not a late joiner", i, m.Text, d.Unmet)
		}
		if s.clean && i != s.late && (d.Forced || len(d.Unmet) > 0) {
			s.t.Fatalf("member %d: clean run, yet %s delivered forced=%v unmet=%v", i, m.Text, d.Forced, d.Unmet)
		}
		if d.Forced || len(d.Unmet) > 0 {
			r.excused = true
		}
		if !r.excused {
			for a, h := range s.past[id] {
				for t := uint64(1); t <= h; t++ {
					if _, ok := r.order[protocol.RoomSeq{Author: a, Seq: t}]; !ok {
						s.t.Fatalf("member %d delivered %s before seq %d of %s, which happened before it", i, m.Text, t, a)
					}
				}
			}
		}
		if late := m.Seq < r.high[m.Author]; late != d.Late {
			s.t.Fatalf("member %d: %s late=%v, want %v", i, m.Text, d.Late, late)
		}
		r.high[m.Author] = max(r.high[m.Author], m.Seq)
		r.order[id] = r.next
		r.next++
	}
}

// settle lands everything in flight, then runs full anti-entropy rounds
// until nothing new moves, and checks that every member delivered
// everything.
func (s *roomSim) settle() {
	s.advance(simMaxFaulty)
	for round := 0; ; round++ {
		if round > 10 {
			s.t.Fatal("anti-entropy does not settle after 10 rounds")
		}
		s.advance(simCausalWait)
		added := 0
		for i := range s.replicas {
			for j := range s.replicas {
				if i != j {
					added += s.exchange(i, j)
				}
			}
		}
		pending := 0
		for _, r := range s.replicas {
			pending += r.log.Pending()
		}
		if added == 0 && pending == 0 {
			break
		}
	}
	for i, r := range s.replicas {
		for id := range s.authored {
			// A late joiner's history of an author may start past
			// seq 1: what came before is not fetched.
			_, delivered := r.order[id]
			if a := r.log.authors[id.Author]; a != nil && id.Seq < a.start && !delivered {
				if i != s.late {
					s.t.Fatalf("member %d, not a late joiner, started %v at %d", i, id.Author, a.start)
				}
				continue
			}
			if !delivered {
				s.t.Fatalf("member %d never delivered %v", i, id)
			}
		}
		for id := range r.order {
			if !s.authored[id] {
				s.t.Fatalf("member %d delivered %v, which nobody wrote", i, id)
			}
		}
	}
}

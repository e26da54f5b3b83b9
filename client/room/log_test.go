package room

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

var t0 = time.UnixMilli(1795739259123)

// Authors of the log tests, by letter: S is the log's own key.
var letters = map[byte]byte{'S': 100, 'A': 1, 'B': 2, 'C': 3, 'D': 4, 'E': 5, 'F': 6, 'G': 7, 'H': 8, 'I': 9}

func keyOf(letter byte) string { return protocol.EncodePublicKey(testPub(letters[letter])) }

func letterOf(key string) string {
	for l := range letters {
		if keyOf(l) == key {
			return string(l)
		}
	}
	return "?"
}

var testRoom = func() string {
	r, err := New(Name{"#test"}, "")
	if err != nil {
		panic(err)
	}
	return r.ID
}()

// msg returns a signed message of author letter, written at time at.
func msg(letter byte, seq uint64, at time.Time, deps ...protocol.RoomSeq) *protocol.RoomMessage {
	m := &protocol.RoomMessage{Room: testRoom, Nick: strings.ToLower(string(letter)), Seq: seq, Time: at.UnixMilli(), Deps: deps, Text: fmt.Sprintf("%c%d", letter, seq)}
	Sign(testKey(letters[letter]), m)
	return m
}

func dep(letter byte, seq uint64) protocol.RoomSeq {
	return protocol.RoomSeq{Author: keyOf(letter), Seq: seq}
}

func newLog(t testing.TB, cfg LogConfig) *Log {
	t.Helper()
	cfg.Room = testRoom
	cfg.Key = testKey(letters['S'])
	l, err := NewLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func add(t testing.TB, l *Log, m *protocol.RoomMessage, now time.Time, want AddResult) {
	t.Helper()
	got, err := l.Add(m, now)
	if err != nil {
		t.Fatalf("Add %s: %v", m.Text, err)
	}
	if got != want {
		t.Fatalf("Add %s: %v, want %v", m.Text, got, want)
	}
}

// show writes deliveries compactly: A1 B2! (forced) A3~ (late), with
// what was unmet in brackets.
func show(ds []Delivery) string {
	var parts []string
	for _, d := range ds {
		s := d.Msg.Text
		if d.Forced {
			s += "!"
		}
		if d.Late {
			s += "~"
		}
		if len(d.Unmet) > 0 {
			var u []string
			for _, x := range d.Unmet {
				u = append(u, fmt.Sprintf("%s%d", letterOf(x.Author), x.Seq))
			}
			s += "[" + strings.Join(u, ",") + "]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func ready(t testing.TB, l *Log, now time.Time, want string) {
	t.Helper()
	if got := show(l.Ready(now)); got != want {
		t.Fatalf("Ready at +%v: %q, want %q", now.Sub(t0), got, want)
	}
}

func TestLogInOrder(t *testing.T) {
	l := newLog(t, LogConfig{})
	for i := uint64(1); i <= 3; i++ {
		add(t, l, msg('A', i, t0), t0, Added)
	}
	ready(t, l, t0, "A1 A2 A3")
	add(t, l, msg('B', 1, t0, dep('A', 3)), t0, Added)
	ready(t, l, t0, "B1")
	ready(t, l, t0.Add(time.Hour), "")
	if l.Pending() != 0 {
		t.Errorf("%d pending", l.Pending())
	}
}

func TestLogWaitsForPredecessorAndDeps(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 3, t0), t0, Added)
	add(t, l, msg('B', 1, t0, dep('A', 2)), t0, Added)
	add(t, l, msg('C', 1, t0, dep('A', 3), dep('B', 1)), t0, Added)
	ready(t, l, t0, "")
	add(t, l, msg('A', 2, t0), t0, Added)
	ready(t, l, t0.Add(time.Second), "")
	add(t, l, msg('A', 1, t0), t0.Add(2*time.Second), Added)
	ready(t, l, t0.Add(2*time.Second), "A1 A2 A3 B1 C1")
}

func TestLogCausalWaitForces(t *testing.T) {
	l := newLog(t, LogConfig{CausalWait: 10 * time.Second})
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('B', 1, t0, dep('A', 2)), t0, Added)
	ready(t, l, t0.Add(10*time.Second-time.Millisecond), "A1")
	ready(t, l, t0.Add(10*time.Second), "B1![A2]")
	// The missing dep comes later: shown then, once.
	add(t, l, msg('A', 2, t0), t0.Add(11*time.Second), Added)
	ready(t, l, t0.Add(11*time.Second), "A2")
	add(t, l, msg('A', 2, t0), t0.Add(12*time.Second), Duplicate)
	add(t, l, msg('B', 1, t0, dep('A', 2)), t0.Add(12*time.Second), Duplicate)
	ready(t, l, t0.Add(time.Hour), "")
	if s := l.Stats(); s.Forced != 1 || s.Duplicates != 2 {
		t.Errorf("stats %+v", s)
	}
}

// A gap that was forced past is filled later: the late message is shown
// once, marked late; what follows the forced one is not held up.
func TestLogGapFilledLater(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('A', 3, t0), t0, Added)
	ready(t, l, t0, "A1")
	ready(t, l, t0.Add(10*time.Second), "A3![A2]")
	add(t, l, msg('A', 4, t0), t0.Add(11*time.Second), Added)
	add(t, l, msg('B', 1, t0, dep('A', 2)), t0.Add(11*time.Second), Added)
	ready(t, l, t0.Add(11*time.Second), "A4")
	add(t, l, msg('A', 2, t0), t0.Add(12*time.Second), Added)
	ready(t, l, t0.Add(12*time.Second), "A2~ B1")
	for _, s := range []uint64{1, 2, 3, 4} {
		add(t, l, msg('A', s, t0), t0.Add(13*time.Second), Duplicate)
	}
	ready(t, l, t0.Add(time.Hour), "")
}

// Forcing one message forces its author's lower pending seqs first, so
// each author's messages still come out in increasing seq.
func TestLogForcingKeepsAuthorOrder(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 3, t0), t0, Added)
	add(t, l, msg('A', 2, t0, dep('B', 1)), t0.Add(5*time.Second), Added)
	ready(t, l, t0.Add(10*time.Second), "A2![A1,B1] A3")
	add(t, l, msg('B', 1, t0), t0.Add(11*time.Second), Added)
	add(t, l, msg('A', 1, t0), t0.Add(11*time.Second), Added)
	ready(t, l, t0.Add(11*time.Second), "B1 A1~")
}

// A dependency cycle (possible only between colluding authors) cannot
// hold the log forever.
func TestLogDependencyCycle(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 1, t0, dep('B', 1)), t0, Added)
	add(t, l, msg('B', 1, t0, dep('A', 1)), t0.Add(time.Second), Added)
	ready(t, l, t0.Add(5*time.Second), "")
	ready(t, l, t0.Add(10*time.Second), "A1![B1] B1")
}

func TestLogOwnMessages(t *testing.T) {
	l := newLog(t, LogConfig{})
	m1, err := l.Next(t0, "hello", "sam")
	if err != nil {
		t.Fatal(err)
	}
	if m1.Seq != 1 || m1.Deps != nil || m1.Author != keyOf('S') || m1.Room != testRoom || m1.Time != t0.UnixMilli() || m1.Nick != "sam" {
		t.Fatalf("first message %+v", m1)
	}
	if err := Verify(m1); err != nil {
		t.Fatalf("our message does not verify: %v", err)
	}
	add(t, l, msg('A', 1, t0, dep('S', 1)), t0, Added)
	add(t, l, msg('A', 2, t0), t0, Added)
	add(t, l, msg('B', 1, t0), t0, Added)
	ready(t, l, t0, "A1 A2 B1")
	m2, _ := l.Next(t0, "two", "sam")
	if want := sorted(dep('A', 2), dep('B', 1)); m2.Seq != 2 || !sameSeqs(m2.Deps, want) {
		t.Fatalf("second message: seq %d deps %v, want 2 %v", m2.Seq, m2.Deps, want)
	}
	m3, _ := l.Next(t0, "three", "sam")
	if m3.Seq != 3 || m3.Deps != nil {
		t.Fatalf("third message with nothing new shown: seq %d deps %v", m3.Seq, m3.Deps)
	}
	add(t, l, msg('B', 2, t0), t0, Added)
	ready(t, l, t0, "B2")
	m4, _ := l.Next(t0, "four", "sam")
	if want := []protocol.RoomSeq{dep('B', 2)}; !sameSeqs(m4.Deps, want) {
		t.Fatalf("fourth message: deps %v, want only what changed, %v", m4.Deps, want)
	}
	// Ours count as delivered: a copy coming back is a duplicate, and a
	// message depending on ours is not held up.
	add(t, l, m2, t0, Duplicate)
	add(t, l, msg('C', 1, t0, dep('S', 4)), t0, Added)
	ready(t, l, t0, "C1")
	if _, err := l.Next(t0, strings.Repeat("x", protocol.MaxLineSize), "sam"); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("Next with a text over the line bound: %v", err)
	}
	if m, _ := l.Next(t0, "five", "sam"); m.Seq != 5 {
		t.Fatalf("a refused Next used up a seq: got %d, want 5", m.Seq)
	}
}

// showSeqs writes deps compactly, by letter: A2 B1.
func showSeqs(s []protocol.RoomSeq) string {
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%s%d", letterOf(x.Author), x.Seq))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// next calls l.Next and checks its deps.
func next(t testing.TB, l *Log, text, wantDeps string) *protocol.RoomMessage {
	t.Helper()
	m, err := l.Next(t0, text, "nick")
	if err != nil {
		t.Fatal(err)
	}
	if got := showSeqs(m.Deps); got != wantDeps {
		t.Fatalf("Next %s: deps %q, want %q", text, got, wantDeps)
	}
	return m
}

// candidates counts the authors our next message would have listed
// without leaving out the implied ones.
func candidates(l *Log) int {
	n := 0
	for _, a := range l.authors {
		if a.key != l.self && a.highest > a.shown {
			n++
		}
	}
	return n
}

// Ten members, each with its own log, speak in turn: each message lists
// only the one before it, whose past holds all the others. Without the
// reduction, every message after the first round would list nine.
func TestNextInTurn(t *testing.T) {
	const speakers = "SABCDEFGHI"
	logs := make([]*Log, len(speakers))
	for i := range speakers {
		l, err := NewLog(LogConfig{Room: testRoom, Key: testKey(letters[speakers[i]])})
		if err != nil {
			t.Fatal(err)
		}
		logs[i] = l
	}
	var prev *protocol.RoomMessage
	for round := 0; round < 4; round++ {
		for i, l := range logs {
			if round > 0 {
				if n := candidates(l); n != len(logs)-1 {
					t.Fatalf("round %d, %c: %d candidates, want %d", round, speakers[i], n, len(logs)-1)
				}
			}
			want := ""
			if prev != nil {
				want = fmt.Sprintf("%s%d", letterOf(prev.Author), prev.Seq)
			}
			m := next(t, l, fmt.Sprintf("%c%d", speakers[i], round+1), want)
			for j, o := range logs {
				if j != i {
					add(t, o, m, t0, Added)
					ready(t, o, t0, m.Text)
				}
			}
			prev = m
		}
	}
	// What was implied counts as shown: with nothing new, no deps; then
	// only what is new.
	s, a := logs[0], logs[1]
	s5 := next(t, s, "s5", "I4")
	s6 := next(t, s, "s6", "")
	add(t, a, s5, t0, Added)
	add(t, a, s6, t0, Added)
	ready(t, a, t0, "s5 s6")
	a5 := next(t, a, "a5", "S6")
	add(t, s, a5, t0, Added)
	ready(t, s, t0, "a5")
	next(t, s, "s7", "A5")
}

// Authors who did not see each other are all listed, and so is one seen
// only at a lower seq than we delivered.
func TestNextIndependentAuthors(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('A', 2, t0), t0, Added)
	add(t, l, msg('B', 1, t0), t0, Added)
	add(t, l, msg('C', 1, t0, dep('A', 1)), t0, Added)
	ready(t, l, t0, "A1 A2 B1 C1")
	next(t, l, "s1", "A2 B1 C1")
	// D saw A2 (through C2) and B1: only D is listed.
	add(t, l, msg('C', 2, t0, dep('A', 2)), t0, Added)
	add(t, l, msg('D', 1, t0, dep('B', 1), dep('C', 2)), t0, Added)
	add(t, l, msg('A', 3, t0), t0, Added)
	ready(t, l, t0, "C2 D1 A3")
	next(t, l, "s2", "A3 D1")
}

// What implies a candidate must be held: a branch ends where the history
// does, and what is not proven implied stays listed.
func TestNextEvictedPast(t *testing.T) {
	feed := func(l *Log) {
		add(t, l, msg('A', 1, t0), t0, Added)
		add(t, l, msg('B', 1, t0, dep('A', 1)), t0, Added)
		add(t, l, msg('C', 1, t0, dep('B', 1)), t0, Added)
		add(t, l, msg('D', 1, t0), t0, Added)
		ready(t, l, t0, "A1 B1 C1 D1")
	}
	l := newLog(t, LogConfig{})
	feed(l)
	next(t, l, "all held", "C1 D1")
	// C1 and D1 held: C1's dep B1 is implied, but B1 is gone, and with it
	// the proof that A1 is in the past.
	l = newLog(t, LogConfig{HistoryMessages: 2})
	feed(l)
	next(t, l, "B1 evicted", "A1 C1 D1")
	// Nothing held: everything listed.
	l = newLog(t, LogConfig{HistoryMessages: 1})
	feed(l)
	add(t, l, msg('E', 1, t0), t0, Added)
	ready(t, l, t0, "E1")
	next(t, l, "nothing held", "A1 B1 C1 D1 E1")
}

// A cycle among deps (possible only with forced deliveries) cannot make
// the candidates imply each other away: the newest is listed.
func TestNextDependencyCycle(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 1, t0, dep('B', 1)), t0, Added)
	add(t, l, msg('B', 1, t0, dep('A', 1)), t0.Add(time.Second), Added)
	ready(t, l, t0.Add(10*time.Second), "A1![B1] B1")
	next(t, l, "s1", "B1")
	// A longer one, and an outsider whose past holds all of it.
	add(t, l, msg('A', 2, t0, dep('C', 1)), t0.Add(11*time.Second), Added)
	add(t, l, msg('C', 1, t0, dep('B', 2)), t0.Add(11*time.Second), Added)
	add(t, l, msg('B', 2, t0, dep('A', 2)), t0.Add(11*time.Second), Added)
	add(t, l, msg('D', 1, t0, dep('B', 2)), t0.Add(11*time.Second), Added)
	ready(t, l, t0.Add(21*time.Second), "A2![C1] B2 C1 D1")
	next(t, l, "s2", "D1")
}

// After a restart without our own history, Next waits to go past our
// messages that anti-entropy brought back.
func TestLogNextAfterOwnMessagesCameBack(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('S', 1, t0), t0, Added)
	add(t, l, msg('S', 2, t0), t0, Added)
	ready(t, l, t0, "S1 S2")
	m, _ := l.Next(t0, "x", "sam")
	if m.Seq != 3 {
		t.Fatalf("seq %d, want 3", m.Seq)
	}
	// A dep naming a high seq of ours is not taken for ours.
	add(t, l, msg('A', 1, t0, dep('S', protocol.MaxRoomSeq)), t0, Added)
	if m, _ := l.Next(t0, "y", "sam"); m.Seq != 4 {
		t.Fatalf("seq %d, want 4", m.Seq)
	}
}

func sameSeqs(a, b []protocol.RoomSeq) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func TestLogRefuses(t *testing.T) {
	l := newLog(t, LogConfig{})
	other := msg('A', 1, t0)
	other.Room = strings.Repeat("0", 32)
	Sign(testKey(letters['A']), other)
	if _, err := l.Add(other, t0); !errors.Is(err, ErrWrongRoom) {
		t.Errorf("another room: %v", err)
	}
	forged := msg('A', 1, t0)
	forged.Text = "forged"
	if _, err := l.Add(forged, t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged: %v", err)
	}
	zero := msg('A', 1, t0)
	zero.Seq = 0
	if _, err := l.Add(zero, t0); !errors.Is(err, protocol.ErrMalformed) {
		t.Errorf("seq 0: %v", err)
	}
	// A forged copy did not take the real message's place.
	add(t, l, msg('A', 1, t0), t0, Added)
	ready(t, l, t0, "A1")
}

func TestLogMaxMembers(t *testing.T) {
	l := newLog(t, LogConfig{MaxMembers: 3}) // S, A, B
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('B', 1, t0), t0, Added)
	if _, err := l.Add(msg('C', 1, t0), t0); !errors.Is(err, ErrTooManyMembers) || !strings.Contains(err.Error(), "more than 3 authors") {
		t.Errorf("a fourth author: %v", err)
	}
	if _, err := l.Add(msg('A', 2, t0, dep('C', 1)), t0); !errors.Is(err, ErrTooManyMembers) {
		t.Errorf("a fourth author named in deps: %v", err)
	}
	add(t, l, msg('A', 2, t0, dep('B', 1)), t0, Added)
	ready(t, l, t0, "A1 B1 A2")
	if _, err := NewLog(LogConfig{Room: testRoom, Key: testKey(1), MaxMembers: protocol.MaxRoomMembers + 1}); err == nil {
		t.Error("NewLog with MaxMembers over the protocol's bound")
	}
}

func TestLogMaxPending(t *testing.T) {
	l := newLog(t, LogConfig{MaxPending: 3})
	add(t, l, msg('A', 2, t0), t0, Added)
	add(t, l, msg('A', 3, t0), t0, Added)
	add(t, l, msg('B', 2, t0), t0, Added)
	// A9 is the farthest ahead of what A has delivered (nothing): it goes.
	add(t, l, msg('A', 9, t0), t0, Overflow)
	add(t, l, msg('B', 5, t0), t0, Overflow)
	// A1 is kept; A3, now the farthest ahead, goes instead.
	add(t, l, msg('A', 1, t0), t0, Added)
	if l.Pending() != 3 || l.Stats().Overflow != 3 {
		t.Fatalf("pending %d, stats %+v", l.Pending(), l.Stats())
	}
	ready(t, l, t0, "A1 A2")
	// Dropped messages come again through anti-entropy and are new then.
	add(t, l, msg('A', 3, t0), t0, Added)
	ready(t, l, t0, "A3")

	l = newLog(t, LogConfig{MaxPendingBytes: 10 << 10})
	big := func(s uint64) *protocol.RoomMessage {
		m := msg('A', s, t0)
		m.Text = strings.Repeat("x", 4<<10)
		Sign(testKey(letters['A']), m)
		return m
	}
	add(t, l, big(2), t0, Added)
	add(t, l, big(3), t0, Added)
	add(t, l, big(4), t0, Overflow)
	if l.Pending() != 2 {
		t.Fatalf("byte bound: %d pending", l.Pending())
	}
}

func TestLogSummaryMissingRoundTrip(t *testing.T) {
	x := newLog(t, LogConfig{})
	add(t, x, msg('A', 1, t0), t0, Added)
	add(t, x, msg('A', 2, t0), t0, Added)
	add(t, x, msg('B', 1, t0, dep('A', 2)), t0, Added)
	add(t, x, msg('C', 2, t0), t0, Added) // C1 lost: held, pending
	ready(t, x, t0, "A1 A2 B1")
	if _, err := x.Next(t0, "s1", "sam"); err != nil {
		t.Fatal(err)
	}
	sum := x.Summary()
	want := []protocol.RoomSeq{dep('A', 2), dep('B', 1), dep('S', 1)}
	sortSeqs(want)
	if sum.Room != testRoom || !reflect.DeepEqual(sum.Have, want) {
		t.Fatalf("summary %v, want %v", sum.Have, want)
	}
	if _, err := protocol.EncodeRoomSummary(&sum); err != nil {
		t.Fatalf("summary does not encode: %v", err)
	}

	// Y has A1 only: it gets the rest, oldest first, pending C2 last.
	y, err := NewLog(LogConfig{Room: testRoom, Key: testKey(9)})
	if err != nil {
		t.Fatal(err)
	}
	add(t, y, msg('A', 1, t0), t0, Added)
	y.Ready(t0)
	var got []string
	for _, m := range x.Missing(y.Summary(), t0) {
		got = append(got, m.Text)
		if _, err := y.Add(m, t0); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(got, " ") != "A2 B1 s1 C2" {
		t.Fatalf("missing %v", got)
	}
	ready(t, y, t0, "A2 B1 s1")
	if !reflect.DeepEqual(y.Summary().Have, x.Summary().Have) {
		t.Fatalf("after the exchange: %v and %v", y.Summary().Have, x.Summary().Have)
	}
	// Both hold C2 past a gap, which a summary cannot say: each offers
	// it to the other, and the copy is dropped as a duplicate.
	if m := y.Missing(x.Summary(), t0); len(m) != 1 || m[0].Text != "C2" {
		t.Fatalf("y still offers %d", len(m))
	}
	if m := x.Missing(protocol.RoomSummary{Room: strings.Repeat("0", 32)}, t0); m != nil {
		t.Fatalf("a summary of another room got %d messages", len(m))
	}
}

func sortSeqs(s []protocol.RoomSeq) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j].Author < s[i].Author {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

func TestLogHistoryBounds(t *testing.T) {
	l := newLog(t, LogConfig{HistoryMessages: 5, HistoryAge: time.Hour})
	for i := uint64(1); i <= 8; i++ {
		add(t, l, msg('A', i, t0.Add(time.Duration(i)*time.Minute)), t0, Added)
	}
	ready(t, l, t0, "A1 A2 A3 A4 A5 A6 A7 A8")
	if h := l.Held(); len(h) != 5 || h[0].Seq != 4 || h[4].Seq != 8 {
		t.Fatalf("held %d from %d", len(h), h[0].Seq)
	}
	// Evicted messages are still known: a copy is a duplicate, and the
	// summary still says 8.
	add(t, l, msg('A', 2, t0.Add(2*time.Minute)), t0, Duplicate)
	if have := l.Summary().Have; len(have) != 1 || have[0].Seq != 8 {
		t.Fatalf("summary %v", have)
	}
	// A late joiner gets the newest five; an hour later, only what is
	// younger than the history age.
	empty := protocol.RoomSummary{Room: testRoom}
	if got := l.Missing(empty, t0); len(got) != 5 || got[0].Seq != 4 {
		t.Fatalf("late joiner got %d", len(got))
	}
	later := t0.Add(time.Hour + 6*time.Minute + 30*time.Second)
	if got := l.Missing(empty, later); len(got) != 2 || got[0].Seq != 7 {
		t.Fatalf("an hour later: got %d", len(got))
	}
	ready(t, l, later, "")
	if h := l.Held(); len(h) != 2 {
		t.Fatalf("after expiry: held %d", len(h))
	}
	// Missing is bounded even when pending messages add to the history.
	for i := uint64(10); i <= 20; i++ {
		add(t, l, msg('A', i, later), later, Added)
	}
	if got := l.Missing(empty, later); len(got) != 5 || got[4].Seq != 20 {
		t.Fatalf("with pending: got %d", len(got))
	}
}

// A late joiner's history of an author starts past seq 1: once it has
// waited StartWait, the lowest held message is that author's start.
func TestLogLateJoinerHistory(t *testing.T) {
	joined := t0.Add(time.Hour)
	l := newLog(t, LogConfig{Joined: joined, StartWait: 2 * time.Second})
	old := t0 // written before we joined
	// The live message comes first, then the history push.
	add(t, l, msg('A', 21, joined), joined, Added)
	ready(t, l, joined, "")
	for s := uint64(17); s <= 20; s++ {
		add(t, l, msg('A', s, old), joined.Add(time.Second), Added)
	}
	add(t, l, msg('B', 5, old, dep('A', 18), dep('C', 40)), joined.Add(time.Second), Added)
	ready(t, l, joined.Add(2*time.Second), "")
	ready(t, l, joined.Add(3*time.Second), "A17[A16] A18 A19 A20 B5[B4,C40] A21")
	if have := l.Summary().Have; !reflect.DeepEqual(have, sorted(dep('A', 21), dep('B', 5))) {
		t.Fatalf("summary %v", have)
	}
	// An older message of A that turns up later is shown once, late.
	add(t, l, msg('A', 3, old), joined.Add(4*time.Second), Added)
	ready(t, l, joined.Add(4*time.Second), "A3~[A2]")
	add(t, l, msg('A', 3, old), joined.Add(4*time.Second), Duplicate)
	// C40 was excused for B5 only: C is still unknown, and a live
	// message waiting for C waits as usual.
	add(t, l, msg('D', 1, joined, dep('C', 1)), joined.Add(5*time.Second), Added)
	ready(t, l, joined.Add(8*time.Second), "")
	ready(t, l, joined.Add(15*time.Second), "D1![C1]")
}

func sorted(s ...protocol.RoomSeq) []protocol.RoomSeq { sortSeqs(s); return s }

// Without a join time, nothing is history: a message whose predecessor
// is missing waits the full CausalWait.
func TestLogNoJoinTimeNoStart(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 17, t0), t0.Add(time.Hour), Added)
	ready(t, l, t0.Add(time.Hour+5*time.Second), "")
	ready(t, l, t0.Add(time.Hour+10*time.Second), "A17![A16]")
}

// The seqs delivered past gaps are remembered as spans, at most maxSpans
// per author; past that the lowest gap is given up.
func TestLogGivesUpOldGaps(t *testing.T) {
	l := newLog(t, LogConfig{})
	now := t0
	for i := uint64(0); i <= maxSpans; i++ {
		add(t, l, msg('A', 2*i+1, t0), now, Added)
		now = now.Add(10 * time.Second)
		if ds := l.Ready(now); len(ds) != 1 {
			t.Fatalf("A%d: %s", 2*i+1, show(ds))
		}
	}
	if l.Stats().GaveUp != 1 {
		t.Fatalf("stats %+v", l.Stats())
	}
	add(t, l, msg('A', 2, t0), now, Duplicate)
	add(t, l, msg('A', 4, t0), now, Added)
	ready(t, l, now, "A4~")
}

func TestNewLogConfig(t *testing.T) {
	if _, err := NewLog(LogConfig{Room: testRoom}); err == nil {
		t.Error("no key")
	}
	if _, err := NewLog(LogConfig{Room: "general", Key: testKey(1)}); err == nil {
		t.Error("bad room ID")
	}
	if _, err := NewLog(LogConfig{Room: testRoom, Key: testKey(1), CausalWait: time.Second, StartWait: 2 * time.Second}); err == nil {
		t.Error("StartWait over CausalWait")
	}
	l, err := NewLog(LogConfig{Room: testRoom, Key: testKey(1), CausalWait: time.Second})
	if err != nil || l.cfg.StartWait != time.Second || l.cfg.HistoryMessages != 500 || l.cfg.HistoryAge != 7*24*time.Hour || l.cfg.MaxMembers != 256 {
		t.Errorf("defaults: %+v, %v", l.cfg, err)
	}
}

// A message delivered or dropped leaves nothing behind in the lists of
// what waits for what, even when what it waited for never comes.
func TestLogLeavesNoWaiters(t *testing.T) {
	l := newLog(t, LogConfig{MaxPending: 2})
	add(t, l, msg('B', 3, t0), t0, Added)
	add(t, l, msg('A', 1, t0, dep('C', 1000)), t0, Added)
	ready(t, l, t0, "")
	add(t, l, msg('D', 1, t0, dep('C', 1)), t0, Added) // drops B3, parked
	ready(t, l, t0.Add(10*time.Second), "A1![C1000] D1![C1]")
	for key, a := range l.authors {
		if len(a.waiters) != 0 || len(a.pending) != 0 {
			t.Errorf("author %s: %d waiters, %d pending", letterOf(key), len(a.waiters), len(a.pending))
		}
	}
}

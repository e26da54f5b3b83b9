package store

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/room"
	"github.com/parlance-chat/parlance/protocol"
)

// Room IDs of three rooms, and fixed author keys (the seed is b repeated).
var (
	roomA = strings.Repeat("a1", 16)
	roomB = strings.Repeat("b2", 16)
	roomC = strings.Repeat("c3", 16)
)

func authorKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte(strings.Repeat(string(rune(b)), ed25519.SeedSize)))
}

func authorOf(b byte) string {
	return protocol.EncodePublicKey(authorKey(b).Public().(ed25519.PublicKey))
}

// rmsg is message seq of author b in roomID, signed, written at time at
// and received a second later.
func rmsg(roomID string, b byte, seq uint64, at time.Time, text string, deps ...protocol.RoomSeq) *RoomMessageRow {
	m := &RoomMessageRow{
		RoomMessage: protocol.RoomMessage{Room: roomID, Nick: "nick-" + string(rune(b)), Seq: seq, Time: at.UnixMilli(), Deps: deps, Text: text},
		Received:    at.Add(time.Second),
	}
	room.Sign(authorKey(b), &m.RoomMessage)
	return m
}

func mustAddRoom(t *testing.T, s *Store, ms ...*RoomMessageRow) []bool {
	t.Helper()
	isNew, err := s.AddRoomMessagesSync(t.Context(), ms)
	if err != nil {
		t.Fatalf("AddRoomMessagesSync: %v", err)
	}
	return isNew
}

func mustShow(t *testing.T, s *Store, roomID string, ms ...*RoomMessageRow) {
	t.Helper()
	keys := make([]RoomMsgKey, len(ms))
	for i, m := range ms {
		keys[i] = RoomMsgKey{m.Author, m.Seq}
	}
	if err := s.MarkRoomShownSync(t.Context(), roomID, keys); err != nil {
		t.Fatalf("MarkRoomShownSync: %v", err)
	}
}

func mustJoin(t *testing.T, s *Store, r RoomRow) {
	t.Helper()
	if err := s.JoinRoom(t.Context(), r); err != nil {
		t.Fatalf("JoinRoom(%s): %v", r.Name, err)
	}
}

func mustRooms(t *testing.T, s *Store) []RoomRow {
	t.Helper()
	rs, err := s.Rooms(t.Context())
	if err != nil {
		t.Fatalf("Rooms: %v", err)
	}
	return rs
}

// reopen closes s and opens its file again.
func reopen(t *testing.T, s *Store, path string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

// texts lists the rows' texts.
func texts(ms []RoomMessageRow) []string {
	var ts []string
	for _, m := range ms {
		ts = append(ts, m.Text)
	}
	return ts
}

// sameRoomRow compares rows with Received compared by instant.
func sameRoomRow(a, b RoomMessageRow) bool {
	ra, rb := a.Received.UnixMilli(), b.Received.UnixMilli()
	a.Received, b.Received = time.Time{}, time.Time{}
	return ra == rb && reflect.DeepEqual(a, b)
}

func roomRow(t *testing.T, name, secret string, current bool) RoomRow {
	t.Helper()
	n, err := room.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := room.New(n, secret)
	if err != nil {
		t.Fatal(err)
	}
	return RoomRow{ID: r.ID, Name: r.String(), Key: r.Key(), Private: r.Private, Joined: t0, Current: current, NextSeq: 1}
}

func TestRoomsRoundTrip(t *testing.T) {
	s, path := openTemp(t)
	team := roomRow(t, "#team", "hunter2", true)
	team.NextSeq = 42
	general := roomRow(t, "#general", "", false)
	general.Joined = t0.Add(time.Hour)
	mustJoin(t, s, team)
	mustJoin(t, s, general)
	want := []RoomRow{general, team} // by name
	check := func(t *testing.T, s *Store) {
		got := mustRooms(t, s)
		if len(got) != len(want) {
			t.Fatalf("Rooms = %+v, want %+v", got, want)
		}
		for i := range want {
			g, w := got[i], want[i]
			if !g.Joined.Equal(w.Joined) {
				t.Errorf("%s: Joined %v, want %v", w.Name, g.Joined, w.Joined)
			}
			g.Joined, w.Joined = time.Time{}, time.Time{}
			if g != w {
				t.Errorf("room %d = %+v, want %+v", i, g, w)
			}
			// What a restarted member rebuilds is the room it joined.
			n, err := room.ParseName(g.Name)
			if err != nil {
				t.Fatal(err)
			}
			if r := room.FromKey(n, g.Key, g.Private); r.ID != w.ID {
				t.Errorf("%s: FromKey gives ID %s, want %s", w.Name, r.ID, w.ID)
			}
		}
	}
	check(t, s)
	t.Run("across a reopen", func(t *testing.T) { check(t, reopen(t, s, path)) })
	t.Run("in memory", func(t *testing.T) {
		m := openMem(t)
		if got := mustRooms(t, m); len(got) != 0 {
			t.Fatalf("a fresh store has rooms: %+v", got)
		}
		mustJoin(t, m, team)
		mustJoin(t, m, general)
		check(t, m)
	})
}

func TestJoinRoomAgainUpdatesTheRow(t *testing.T) {
	s := openMem(t)
	r := roomRow(t, "#team", "", false)
	r.NextSeq = 10
	mustJoin(t, s, r)

	again := r
	again.Joined = t0.Add(24 * time.Hour)
	again.Current = true
	again.NextSeq = 3
	mustJoin(t, s, again)
	got := mustRooms(t, s)
	if len(got) != 1 {
		t.Fatalf("joining again made %d rows", len(got))
	}
	if !got[0].Joined.Equal(t0) || !got[0].Current || got[0].NextSeq != 10 {
		t.Errorf("after joining again: Joined %v Current %v NextSeq %d; want the first Joined %v, current, NextSeq 10",
			got[0].Joined, got[0].Current, got[0].NextSeq, t0)
	}

	again.Current, again.NextSeq = false, 20
	mustJoin(t, s, again)
	if got := mustRooms(t, s)[0]; got.Current || got.NextSeq != 20 {
		t.Errorf("joining again not current, NextSeq 20: Current %v NextSeq %d", got.Current, got.NextSeq)
	}

	// Zero Joined and NextSeq take the time of the call and 1.
	fresh := roomRow(t, "#fresh", "", false)
	fresh.Joined, fresh.NextSeq = time.Time{}, 0
	before := time.Now().Truncate(time.Millisecond)
	mustJoin(t, s, fresh)
	for _, g := range mustRooms(t, s) {
		if g.Name == "#fresh" && (g.Joined.Before(before) || g.Joined.After(time.Now()) || g.NextSeq != 1) {
			t.Errorf("a zero Joined and NextSeq became %v and %d", g.Joined, g.NextSeq)
		}
	}
}

// current returns the names of the current rooms.
func current(t *testing.T, s *Store) []string {
	t.Helper()
	var names []string
	for _, r := range mustRooms(t, s) {
		if r.Current {
			names = append(names, r.Name)
		}
	}
	return names
}

func TestCurrentRoomIsExclusive(t *testing.T) {
	s := openMem(t)
	a, b, c := roomRow(t, "#a", "", true), roomRow(t, "#b", "", true), roomRow(t, "#c", "", false)
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"joining a current room", func() error { return s.JoinRoom(t.Context(), a) }, []string{"#a"}},
		{"joining another current room", func() error { return s.JoinRoom(t.Context(), b) }, []string{"#b"}},
		{"joining a room not current", func() error { return s.JoinRoom(t.Context(), c) }, []string{"#b"}},
		{"setting the current room", func() error { return s.SetCurrentRoom(t.Context(), c.ID) }, []string{"#c"}},
		{"setting it again", func() error { return s.SetCurrentRoom(t.Context(), c.ID) }, []string{"#c"}},
		{"clearing it", func() error { return s.SetCurrentRoom(t.Context(), "") }, nil},
		{"clearing it again", func() error { return s.SetCurrentRoom(t.Context(), "") }, nil},
		{"setting it after a clear", func() error { return s.SetCurrentRoom(t.Context(), a.ID) }, []string{"#a"}},
		{"leaving the current room", func() error { return s.LeaveRoom(t.Context(), a.ID) }, nil},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := current(t, s); !reflect.DeepEqual(got, step.want) {
			t.Fatalf("after %s: current rooms %q, want %q", step.name, got, step.want)
		}
	}
	if err := s.SetCurrentRoom(t.Context(), b.ID); err != nil {
		t.Fatal(err)
	}
	err := s.SetCurrentRoom(t.Context(), a.ID) // left
	if !errors.Is(err, errNotJoined) || !strings.Contains(err.Error(), a.ID) {
		t.Errorf("SetCurrentRoom of a room left: %v, want not joined", err)
	}
	if got := current(t, s); !reflect.DeepEqual(got, []string{"#b"}) {
		t.Errorf("a refused SetCurrentRoom changed the current room: %q", got)
	}
}

func TestNextRoomSeqIsMonotonic(t *testing.T) {
	s, path := openTemp(t)
	r := roomRow(t, "#team", "", false)
	mustJoin(t, s, r)
	nextSeq := func(s *Store) uint64 {
		t.Helper()
		return mustRooms(t, s)[0].NextSeq
	}
	for _, step := range []struct{ set, want uint64 }{{5, 5}, {3, 5}, {5, 5}, {6, 6}, {protocol.MaxRoomSeq + 1, protocol.MaxRoomSeq + 1}, {7, protocol.MaxRoomSeq + 1}} {
		if err := s.NextRoomSeq(t.Context(), r.ID, step.set); err != nil {
			t.Fatalf("NextRoomSeq(%d): %v", step.set, err)
		}
		if got := nextSeq(s); got != step.want {
			t.Fatalf("after NextRoomSeq(%d): %d, want %d", step.set, got, step.want)
		}
	}
	// Joining again does not move it back either.
	mustJoin(t, s, r)
	if got := nextSeq(s); got != protocol.MaxRoomSeq+1 {
		t.Errorf("joining again moved NextSeq to %d", got)
	}
	if got := nextSeq(reopen(t, s, path)); got != protocol.MaxRoomSeq+1 {
		t.Errorf("after a reopen NextSeq is %d", got)
	}
}

func TestNextRoomSeqRefuses(t *testing.T) {
	s := openMem(t)
	r := roomRow(t, "#team", "", false)
	mustJoin(t, s, r)
	if err := s.NextRoomSeq(t.Context(), roomC, 5); !errors.Is(err, errNotJoined) {
		t.Errorf("NextRoomSeq of a room not joined: %v, want not joined", err)
	}
	for _, next := range []uint64{0, protocol.MaxRoomSeq + 2} {
		if err := s.NextRoomSeq(t.Context(), r.ID, next); err == nil {
			t.Errorf("NextRoomSeq(%d) succeeded", next)
		}
	}
	if got := mustRooms(t, s)[0].NextSeq; got != 1 {
		t.Errorf("refused NextRoomSeq calls moved it to %d", got)
	}
}

func TestRoomMessageRoundTripAndDedupe(t *testing.T) {
	kinds(t, func(t *testing.T, s *Store) {
		a1 := rmsg(roomA, 'a', 1, t0, "hello, wörld ✓\nsecond line")
		b1 := rmsg(roomA, 'b', 1, t0.Add(time.Second), "hi", protocol.RoomSeq{Author: authorOf('a'), Seq: 1})
		a2 := rmsg(roomA, 'a', 2, t0.Add(2*time.Second), "", protocol.RoomSeq{Author: authorOf('b'), Seq: 1},
			protocol.RoomSeq{Author: authorOf('c'), Seq: 7})
		if got := mustAddRoom(t, s, a1, b1, a2); !reflect.DeepEqual(got, []bool{true, true, true}) {
			t.Fatalf("isNew = %v, want all new", got)
		}
		got, err := s.RoomMessages(t.Context(), roomA, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("RoomMessages = %d rows, want 3", len(got))
		}
		for i, want := range []*RoomMessageRow{a1, b1, a2} {
			if !sameRoomRow(got[i], *want) {
				t.Errorf("stored and read back:\n got %+v\nwant %+v", got[i], *want)
			}
			if err := room.Verify(&got[i].RoomMessage); err != nil {
				t.Errorf("the message read back does not verify: %v", err)
			}
		}

		dedupe := []struct {
			name string
			ms   []*RoomMessageRow
			want []bool
		}{
			{"the same keys in a later call", []*RoomMessageRow{rmsg(roomA, 'a', 1, t0, "again"), rmsg(roomA, 'a', 3, t0, "a3")}, []bool{false, true}},
			{"a repeat within one call", []*RoomMessageRow{rmsg(roomA, 'a', 4, t0, "a4"), rmsg(roomA, 'b', 2, t0, "b2"), rmsg(roomA, 'a', 4, t0, "a4 again")},
				[]bool{true, true, false}},
			{"the same author and seq in another room", []*RoomMessageRow{rmsg(roomB, 'a', 1, t0, "other room")}, []bool{true}},
			{"the same seq of another author", []*RoomMessageRow{rmsg(roomA, 'c', 1, t0, "c1")}, []bool{true}},
			{"nothing", nil, []bool{}},
		}
		for _, tt := range dedupe {
			t.Run(tt.name, func(t *testing.T) {
				if got := mustAddRoom(t, s, tt.ms...); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("isNew = %v, want %v", got, tt.want)
				}
			})
		}
		// The first of equal keys is the one kept.
		all, err := s.RoomMessages(t.Context(), roomA, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range all {
			if strings.Contains(m.Text, "again") {
				t.Errorf("a repeat replaced the stored message: %q", m.Text)
			}
		}
		if len(all) != 7 {
			t.Errorf("room A has %d messages, want 7", len(all))
		}
	})
}

// Repeats in one group commit, across calls, count once: the first
// submitted is stored.
func TestAddRoomMessagesDedupeWithinABatch(t *testing.T) {
	s := openMem(t)
	release := holdWriter(t, s)
	var mu sync.Mutex
	var got [][]bool
	for i := range 3 {
		ms := []*RoomMessageRow{rmsg(roomA, 'a', 1, t0, fmt.Sprint("call ", i)), rmsg(roomA, 'a', uint64(2+i), t0, "own")}
		s.AddRoomMessages(ms, func(isNew []bool, err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			got = append(got, isNew)
			mu.Unlock()
		})
	}
	waitQueued(t, s, 3)
	commits := s.commits()
	release()
	if err := s.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.commits() - commits; n != 1 {
		t.Errorf("%d commits for the queued calls, want 1", n)
	}
	if want := [][]bool{{true, true}, {false, true}, {false, true}}; !reflect.DeepEqual(got, want) {
		t.Errorf("isNew per call = %v, want %v", got, want)
	}
	ms, _ := s.RoomMessages(t.Context(), roomA, 0)
	if len(ms) != 4 || ms[0].Text != "call 0" {
		t.Errorf("stored %q, want the first call's message 1 and three others", texts(ms))
	}
}

func TestAddRoomMessagesAcrossAReopen(t *testing.T) {
	s, path := openTemp(t)
	mustAddRoom(t, s, rmsg(roomA, 'a', 1, t0, "a1"), rmsg(roomA, 'b', 1, t0, "b1"))
	s = reopen(t, s, path)
	got := mustAddRoom(t, s, rmsg(roomA, 'b', 1, t0, "b1"), rmsg(roomA, 'a', 2, t0, "a2"), rmsg(roomA, 'a', 1, t0, "a1"))
	if want := []bool{false, true, false}; !reflect.DeepEqual(got, want) {
		t.Errorf("isNew after a reopen = %v, want %v", got, want)
	}
}

func TestAddRoomMessagesSetsReceived(t *testing.T) {
	s := openMem(t)
	m := rmsg(roomA, 'a', 1, t0, "x")
	m.Received = time.Time{}
	m.Shown = 99 // ignored
	before := time.Now().Truncate(time.Millisecond)
	mustAddRoom(t, s, m)
	got, err := s.RoomMessages(t.Context(), roomA, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("RoomMessages = %v, %v", got, err)
	}
	if got[0].Received.Before(before) || got[0].Received.After(time.Now()) {
		t.Errorf("a zero Received became %v, want the time of the call", got[0].Received)
	}
	if got[0].Shown != 0 {
		t.Errorf("a new row has Shown %d, want 0", got[0].Shown)
	}
}

func TestRoomHistoryIsInShownOrder(t *testing.T) {
	s, path := openTemp(t)
	// Written in one order, received in another, shown in a third.
	a1 := rmsg(roomA, 'a', 1, t0.Add(3*time.Second), "a1")
	a2 := rmsg(roomA, 'a', 2, t0.Add(4*time.Second), "a2")
	b1 := rmsg(roomA, 'b', 1, t0.Add(1*time.Second), "b1")
	b2 := rmsg(roomA, 'b', 2, t0.Add(2*time.Second), "b2")
	held := rmsg(roomA, 'c', 5, t0, "held")
	other := rmsg(roomB, 'a', 1, t0, "other room")
	mustAddRoom(t, s, a2, held, b2, other, a1, b1)

	history := func(s *Store, limit int) []string {
		t.Helper()
		h, err := s.RoomHistory(t.Context(), roomA, limit)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(h); i++ {
			if h[i].Shown <= h[i-1].Shown {
				t.Errorf("Shown numbers %d then %d", h[i-1].Shown, h[i].Shown)
			}
		}
		return texts(h)
	}
	if got := history(s, 10); got != nil {
		t.Fatalf("history before anything was shown: %q", got)
	}
	mustShow(t, s, roomA, b1, a1)
	mustShow(t, s, roomB, other)
	mustShow(t, s, roomA, a2, b1, b2) // b1 again: keeps its number
	mustShow(t, s, roomA, rmsg(roomA, 'd', 1, t0, "never stored"))
	want := []string{"b1", "a1", "a2", "b2"}
	if got := history(s, 10); !reflect.DeepEqual(got, want) {
		t.Errorf("RoomHistory = %q, want %q", got, want)
	}
	if got := history(s, 2); !reflect.DeepEqual(got, want[2:]) {
		t.Errorf("RoomHistory(2) = %q, want %q", got, want[2:])
	}
	if got := history(s, 0); got != nil {
		t.Errorf("RoomHistory(0) = %q, want none", got)
	}

	// Numbers keep increasing across a reopen.
	s = reopen(t, s, path)
	mustShow(t, s, roomA, held)
	if got, want := history(s, 10), append(want, "held"); !reflect.DeepEqual(got, want) {
		t.Errorf("after a reopen RoomHistory = %q, want %q", got, want)
	}
}

// Display numbers are per store: across rooms, in the order given.
func TestMarkRoomShownNumbersAcrossRooms(t *testing.T) {
	s := openMem(t)
	a, b := rmsg(roomA, 'a', 1, t0, "a"), rmsg(roomB, 'a', 1, t0, "b")
	mustAddRoom(t, s, a, b)
	mustShow(t, s, roomB, b)
	mustShow(t, s, roomA, a)
	ha, _ := s.RoomHistory(t.Context(), roomA, 1)
	hb, _ := s.RoomHistory(t.Context(), roomB, 1)
	if len(ha) != 1 || len(hb) != 1 || !(hb[0].Shown < ha[0].Shown) {
		t.Errorf("shown B then A, numbers %v and %v", hb, ha)
	}
}

func TestRoomMessagesNewestByTime(t *testing.T) {
	s := openMem(t)
	var all []*RoomMessageRow
	for i := range 6 {
		// Times not in seq order: 3, 5, 1, 0, 4, 2 seconds after t0.
		at := t0.Add(time.Duration([]int{3, 5, 1, 0, 4, 2}[i]) * time.Second)
		all = append(all, rmsg(roomA, byte('a'+i%2), uint64(1+i/2), at, fmt.Sprint("t", int(at.Sub(t0)/time.Second))))
	}
	mustAddRoom(t, s, all...)
	mustShow(t, s, roomA, all[0], all[2]) // shown or not, all count
	mustAddRoom(t, s, rmsg(roomB, 'a', 1, t0.Add(time.Hour), "other room"))
	for _, tt := range []struct {
		limit int
		want  []string
	}{
		{3, []string{"t3", "t4", "t5"}},
		{0, []string{"t0", "t1", "t2", "t3", "t4", "t5"}},
		{100, []string{"t0", "t1", "t2", "t3", "t4", "t5"}},
	} {
		got, err := s.RoomMessages(t.Context(), roomA, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(texts(got), tt.want) {
			t.Errorf("RoomMessages(%d) = %q, want %q", tt.limit, texts(got), tt.want)
		}
	}
	if got, err := s.RoomMessages(t.Context(), roomC, 0); err != nil || len(got) != 0 {
		t.Errorf("RoomMessages of a room without messages = %v, %v", got, err)
	}
}

func TestRoomAuthors(t *testing.T) {
	s := openMem(t)
	a := []*RoomMessageRow{rmsg(roomA, 'a', 1, t0, ""), rmsg(roomA, 'a', 2, t0, ""), rmsg(roomA, 'a', 3, t0, ""), rmsg(roomA, 'a', 5, t0, "")}
	b := []*RoomMessageRow{rmsg(roomA, 'b', 7, t0, ""), rmsg(roomA, 'b', 8, t0, "")}
	mustAddRoom(t, s, append(a, b...)...)
	mustAddRoom(t, s, rmsg(roomB, 'a', 9, t0, "other room"))
	// a: 1 and 2 shown, then 5 forced past the gap at 4; 3 still held.
	mustShow(t, s, roomA, a[0], a[1], a[3])
	got, err := s.RoomAuthors(t.Context(), roomA)
	if err != nil {
		t.Fatal(err)
	}
	want := []RoomAuthor{
		{Author: authorOf('a'), Lowest: 1, Highest: 5, Count: 4, Shown: 5},
		{Author: authorOf('b'), Lowest: 7, Highest: 8, Count: 2, Shown: 0},
	}
	if want[1].Author < want[0].Author {
		want[0], want[1] = want[1], want[0]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RoomAuthors =\n %+v\nwant\n %+v", got, want)
	}
	if got, err := s.RoomAuthors(t.Context(), roomC); err != nil || len(got) != 0 {
		t.Errorf("RoomAuthors of a room without messages = %v, %v", got, err)
	}
}

func TestLeaveRoomKeepsMessages(t *testing.T) {
	s := openMem(t)
	r := roomRow(t, "#team", "", true)
	mustJoin(t, s, r)
	m := rmsg(r.ID, 'a', 1, t0, "kept")
	mustAddRoom(t, s, m)
	mustShow(t, s, r.ID, m)
	if err := s.LeaveRoom(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.LeaveRoom(t.Context(), r.ID); err != nil {
		t.Errorf("leaving a room not joined: %v", err)
	}
	if rs := mustRooms(t, s); len(rs) != 0 {
		t.Errorf("after LeaveRoom, Rooms = %+v", rs)
	}
	h, err := s.RoomHistory(t.Context(), r.ID, 10)
	if err != nil || !reflect.DeepEqual(texts(h), []string{"kept"}) {
		t.Errorf("history after leaving = %q, %v; want the message kept", texts(h), err)
	}
	// Joining again finds what was shown.
	mustJoin(t, s, r)
	if as, err := s.RoomAuthors(t.Context(), r.ID); err != nil || len(as) != 1 || as[0].Shown != 1 {
		t.Errorf("RoomAuthors after joining again = %+v, %v", as, err)
	}
}

// A room write refused inside a batch (a room not joined) fails only
// itself: the batch's other writes commit.
func TestRefusedRoomWriteLeavesTheBatch(t *testing.T) {
	s := openMem(t)
	release := holdWriter(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() { errs[0] = s.SetCurrentRoom(t.Context(), roomA) })
	wg.Go(func() {
		_, errs[1] = s.AddRoomMessagesSync(t.Context(), []*RoomMessageRow{rmsg(roomB, 'a', 1, t0, "x")})
	})
	wg.Go(func() { errs[2] = s.NextRoomSeq(t.Context(), roomA, 3) })
	waitQueued(t, s, 3)
	commits := s.commits()
	release()
	wg.Wait()
	if n := s.commits() - commits; n != 1 {
		t.Errorf("%d commits, want the three calls in one", n)
	}
	if !errors.Is(errs[0], errNotJoined) || errs[1] != nil || !errors.Is(errs[2], errNotJoined) {
		t.Errorf("errors %v, want not joined, nil, not joined", errs)
	}
	if ms, _ := s.RoomMessages(t.Context(), roomB, 0); len(ms) != 1 {
		t.Errorf("the message of the batch was not stored")
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Errorf("a refused room write counts as a write error: %v", err)
	}
}

func TestRoomBadInputIsAnErrorNotAPanic(t *testing.T) {
	s := openMem(t)
	ctx := t.Context()
	good := func() *RoomMessageRow { return rmsg(roomA, 'a', 1, t0, "good") }
	with := func(f func(m *RoomMessageRow)) *RoomMessageRow { m := good(); f(m); return m }
	badRows := map[string][]*RoomMessageRow{
		"a nil row":                    {good(), nil},
		"a room id that is not hex":    {with(func(m *RoomMessageRow) { m.Room = strings.Repeat("z", 32) })},
		"a room id in capitals":        {with(func(m *RoomMessageRow) { m.Room = strings.ToUpper(roomA) })},
		"a room name for a room id":    {with(func(m *RoomMessageRow) { m.Room = "#team" })},
		"seq 0":                        {with(func(m *RoomMessageRow) { m.Seq = 0 })},
		"a seq past the highest":       {with(func(m *RoomMessageRow) { m.Seq = protocol.MaxRoomSeq + 1 })},
		"no author":                    {with(func(m *RoomMessageRow) { m.Author = "" })},
		"no signature":                 {with(func(m *RoomMessageRow) { m.Sig = "" })},
		"time 0":                       {with(func(m *RoomMessageRow) { m.Time = 0 })},
		"text that is not UTF-8":       {with(func(m *RoomMessageRow) { m.Text = "\xff" })},
		"a dep on the author itself":   {with(func(m *RoomMessageRow) { m.Deps = []protocol.RoomSeq{{Author: m.Author, Seq: 1}} })},
		"a dep with seq 0":             {with(func(m *RoomMessageRow) { m.Deps = []protocol.RoomSeq{{Author: authorOf('b'), Seq: 0}} })},
		"a good row after a bad one":   {with(func(m *RoomMessageRow) { m.Seq = 0 }), good()},
		"a dep whose author is no key": {with(func(m *RoomMessageRow) { m.Deps = []protocol.RoomSeq{{Author: `x","s":1}]`, Seq: 1}} })},
	}
	for name, ms := range badRows {
		t.Run(name, func(t *testing.T) {
			if _, err := s.AddRoomMessagesSync(ctx, ms); err == nil || !strings.HasPrefix(err.Error(), "store: AddRoomMessages: ") {
				t.Errorf("AddRoomMessagesSync: %v, want an error", err)
			}
			var got error
			s.AddRoomMessages(ms, func(isNew []bool, err error) { got = err })
			if err := s.Settle(ctx); err != nil || got == nil {
				t.Errorf("AddRoomMessages: done got %v", got)
			}
		})
	}
	for name, call := range map[string]func() error{
		"MarkRoomShown with a bad room id": func() error { return s.MarkRoomShownSync(ctx, "#team", nil) },
		"MarkRoomShown with seq 0":         func() error { return s.MarkRoomShownSync(ctx, roomA, []RoomMsgKey{{authorOf('a'), 0}}) },
		"JoinRoom with a bad room id": func() error {
			return s.JoinRoom(ctx, RoomRow{ID: "abc", Name: "#team", Key: [32]byte{1}})
		},
		"JoinRoom without a name":   func() error { return s.JoinRoom(ctx, RoomRow{ID: roomA, Key: [32]byte{1}}) },
		"JoinRoom with a bare name": func() error { return s.JoinRoom(ctx, RoomRow{ID: roomA, Name: "team", Key: [32]byte{1}}) },
		"JoinRoom without a key":    func() error { return s.JoinRoom(ctx, RoomRow{ID: roomA, Name: "#team"}) },
		"JoinRoom past the last seq": func() error {
			return s.JoinRoom(ctx, RoomRow{ID: roomA, Name: "#t", Key: [32]byte{1}, NextSeq: 1 << 60})
		},
		"LeaveRoom with a bad id":     func() error { return s.LeaveRoom(ctx, "") },
		"SetCurrentRoom with a name":  func() error { return s.SetCurrentRoom(ctx, "#team") },
		"NextRoomSeq with a bad id":   func() error { return s.NextRoomSeq(ctx, "#team", 1) },
		"RoomHistory with a bad id":   func() error { _, err := s.RoomHistory(ctx, "#team", 1); return err },
		"RoomMessages with a bad id":  func() error { _, err := s.RoomMessages(ctx, "#team", 1); return err },
		"RoomAuthors with a bad id":   func() error { _, err := s.RoomAuthors(ctx, strings.Repeat("0", 33)); return err },
		"MarkRoomShown, asynchronous": func() error { return settleDone(t, s, func(d func(error)) { s.MarkRoomShown("#team", nil, d) }) },
	} {
		if err := call(); err == nil || !strings.HasPrefix(err.Error(), "store: ") || strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("%s: %v, want a one-line store error", name, err)
		}
	}
	// Refused input is no write error, and nothing was stored.
	if err := s.Flush(ctx); err != nil {
		t.Errorf("Flush after refused input: %v", err)
	}
	if ms, err := s.RoomMessages(ctx, roomA, 0); err != nil || len(ms) != 0 {
		t.Errorf("refused input stored %d messages (%v)", len(ms), err)
	}
	if rs := mustRooms(t, s); len(rs) != 0 {
		t.Errorf("refused input stored rooms: %+v", rs)
	}
	if isNew, err := s.AddRoomMessagesSync(ctx, nil); err != nil || len(isNew) != 0 {
		t.Errorf("AddRoomMessages(nil) = %v, %v", isNew, err)
	}
	if err := s.MarkRoomShownSync(ctx, roomA, nil); err != nil {
		t.Errorf("MarkRoomShown(no keys): %v", err)
	}
}

// holdWriter blocks the writer goroutine in a done callback until the
// returned release is called (at the latest by cleanup, before the store
// closes), so that what is submitted meanwhile queues up and is applied as
// one batch.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	held, ch := make(chan struct{}), make(chan struct{})
	s.AddOutgoing(out("K", "k", "holder"), func(error) { close(held); <-ch })
	<-held
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

// waitQueued waits until n operations wait in the writer's queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(s.ops) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", len(s.ops), n)
		}
	}
}

// settleDone calls submit with a done and returns what done got.
func settleDone(t *testing.T, s *Store, submit func(done func(error))) error {
	t.Helper()
	ch := make(chan error, 1)
	submit(func(err error) { ch <- err })
	return <-ch
}

func TestRoomMethodsAfterClose(t *testing.T) {
	s := openMem(t)
	r := roomRow(t, "#team", "", false)
	mustJoin(t, s, r)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	m := rmsg(roomA, 'a', 1, t0, "late")
	var asyncAdd error
	s.AddRoomMessages([]*RoomMessageRow{m}, func(_ []bool, err error) { asyncAdd = err })
	for name, err := range map[string]error{
		"AddRoomMessages":     asyncAdd,
		"AddRoomMessagesSync": func() error { _, err := s.AddRoomMessagesSync(ctx, []*RoomMessageRow{m}); return err }(),
		"MarkRoomShown":       settleDone(t, s, func(d func(error)) { s.MarkRoomShown(roomA, nil, d) }),
		"MarkRoomShownSync":   s.MarkRoomShownSync(ctx, roomA, nil),
		"JoinRoom":            s.JoinRoom(ctx, r),
		"LeaveRoom":           s.LeaveRoom(ctx, r.ID),
		"SetCurrentRoom":      s.SetCurrentRoom(ctx, r.ID),
		"NextRoomSeq":         s.NextRoomSeq(ctx, r.ID, 2),
		"Rooms":               func() error { _, err := s.Rooms(ctx); return err }(),
		"RoomHistory":         func() error { _, err := s.RoomHistory(ctx, roomA, 1); return err }(),
		"RoomMessages":        func() error { _, err := s.RoomMessages(ctx, roomA, 1); return err }(),
		"RoomAuthors":         func() error { _, err := s.RoomAuthors(ctx, roomA); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// Room writes are group-committed with the others: many asynchronous
// calls from many goroutines take far fewer commits, and every done is
// called once.
func TestRoomWritesAreGroupCommitted(t *testing.T) {
	s, _ := openTemp(t)
	const writers, each = 8, 250
	var wg sync.WaitGroup
	var mu sync.Mutex
	calls := make(map[string]int)
	count := func(k string, err error) {
		if err != nil {
			t.Errorf("%s: %v", k, err)
		}
		mu.Lock()
		calls[k]++
		mu.Unlock()
	}
	before := s.commits()
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				k := fmt.Sprint(g, "/", i)
				m := rmsg(roomA, byte('a'+g), uint64(1+i), t0, k)
				s.AddRoomMessages([]*RoomMessageRow{m}, func(_ []bool, err error) { count("add "+k, err) })
				s.MarkRoomShown(roomA, []RoomMsgKey{{m.Author, m.Seq}}, func(err error) { count("show "+k, err) })
			}
		})
	}
	wg.Wait()
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2*writers*each {
		t.Errorf("%d dones, want %d", len(calls), 2*writers*each)
	}
	for k, n := range calls {
		if n != 1 {
			t.Errorf("done of %s called %d times", k, n)
		}
	}
	commits := s.commits() - before
	if commits >= 2*writers*each {
		t.Errorf("%d commits for %d ops: no batching", commits, 2*writers*each)
	}
	t.Logf("%d ops in %d commits", 2*writers*each, commits)
	h, err := s.RoomHistory(t.Context(), roomA, writers*each)
	if err != nil || len(h) != writers*each {
		t.Errorf("history has %d messages (%v), want %d", len(h), err, writers*each)
	}
	// Each writer's messages were shown in the order it showed them.
	last := make(map[string]uint64)
	for _, m := range h {
		if m.Seq <= last[m.Author] {
			t.Fatalf("author %s: seq %d shown after %d", m.Author[:6], m.Seq, last[m.Author])
		}
		last[m.Author] = m.Seq
	}
}

// The room reads walk an index of the one room, and sort no more than
// the rows they return (the outer ORDER BY that turns newest-first into
// oldest-first).
func TestRoomQueriesUseTheirIndexes(t *testing.T) {
	s := openMem(t)
	plans := []struct {
		query string
		args  []any
		want  []string
		sorts int // USE TEMP B-TREE lines allowed
	}{
		{roomHistorySQL, []any{roomA, 10}, []string{"USING INDEX room_messages_shown (room=? AND shown>?)"}, 1},
		{roomMessagesSQL, []any{roomA, 10}, []string{"USING INDEX room_messages_time (room=?)"}, 1},
		{roomAuthorsSQL, []any{roomA}, []string{"USING COVERING INDEX room_messages_key (room=?)",
			"USING INDEX room_messages_key (room=? AND author=?)"}, 0},
		{roomShowSQL, []any{1, roomA, "a", 1}, []string{"USING INDEX room_messages_key (room=? AND author=? AND seq=?)"}, 0},
	}
	for _, p := range plans {
		plan := queryPlan(t, s, p.query, p.args...)
		all := strings.Join(plan, "\n")
		for _, w := range p.want {
			if !strings.Contains(all, w) {
				t.Errorf("plan of %q does not say %q: %q", p.query, w, plan)
			}
		}
		if n := strings.Count(all, "USE TEMP B-TREE"); n > p.sorts {
			t.Errorf("plan of %q sorts %d times, want at most %d: %q", p.query, n, p.sorts, plan)
		}
	}
}

// A store opened at a schema without the room tables (tests only) refuses
// room writes with an error rather than failing to open.
func TestRoomWritesOnAnOldSchema(t *testing.T) {
	s, err := openVersion(filepath.Join(t.TempDir(), "messages.db"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AddRoomMessagesSync(t.Context(), []*RoomMessageRow{rmsg(roomA, 'a', 1, t0, "x")}); !errors.Is(err, errNoRoomTables) {
		t.Errorf("AddRoomMessages at version 2: %v", err)
	}
}

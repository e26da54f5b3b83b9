package cluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

var t0 = time.Unix(1_800_000_000, 0)

func testTiming() Timing {
	return Timing{DeadAfter: 3 * time.Second, SnapshotTimeout: 5 * time.Second, Hold: 30 * time.Second, RejoinGrace: time.Second, MaxBuffered: 4}
}

func bus(typ, server string, gen, seq uint64, arg string) *Msg {
	m := &Msg{Type: typ, Server: server, Gen: gen, Seq: seq}
	switch typ {
	case TypeJoin:
		m.info = protocol.PeerInfo{PeerID: arg, Nickname: arg}
	case TypeLeave:
		m.ID = arg
	}
	return m
}

func snap(server string, gen, seq, req uint64, ids ...string) *Msg {
	m := &Msg{Type: TypeSnap, Server: server, Gen: gen, Seq: seq, Req: req, Parts: 1}
	for _, id := range ids {
		m.snap = append(m.snap, Entry{Info: protocol.PeerInfo{PeerID: id}})
	}
	return m
}

// show renders actions compactly: "join x", "leave x", "replace [a b]",
// "drop silent", "request 1".
func show(acts []Action) string {
	var out []string
	for _, a := range acts {
		switch a.Kind {
		case Join:
			out = append(out, "join "+a.Info.PeerID)
		case Leave:
			out = append(out, "leave "+a.ID)
		case Replace:
			var ids []string
			for _, p := range a.Peers {
				ids = append(ids, p.Info.PeerID)
			}
			out = append(out, fmt.Sprintf("replace %v", ids))
		case Drop:
			out = append(out, "drop "+a.Reason)
		case Request:
			out = append(out, fmt.Sprintf("request %d", a.Req))
		}
	}
	return strings.Join(out, "; ")
}

func TestState(t *testing.T) {
	type step struct {
		at   time.Duration
		do   func(st *State, now time.Time) []Action
		want string
	}
	msg := func(m *Msg) func(*State, time.Time) []Action {
		return func(st *State, now time.Time) []Action { return st.Message(now, m) }
	}
	sn := func(m *Msg) func(*State, time.Time) []Action {
		return func(st *State, now time.Time) []Action { return st.Snapshot(now, m) }
	}
	tick := func(st *State, now time.Time) []Action { return st.Tick(now) }
	up := func(st *State, now time.Time) []Action { return st.Connected(now) }
	down := func(st *State, now time.Time) []Action { st.Disconnected(now); return nil }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a new server is asked for a snapshot, then its events apply in order", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, msg(bus(TypeJoin, "x", 1, 1, "p")), ""}, // buffered
			{0, sn(snap("x", 1, 0, 1)), "replace []; join p"},
			{0, msg(bus(TypeLeave, "x", 1, 2, "p")), "leave p"},
			{0, msg(bus(TypeBeat, "x", 1, 2, "")), ""},
		}},
		{"a gap in the sequence asks for a snapshot; buffered events past it apply after", []step{
			{0, up, ""},
			{0, msg(bus(TypeBeat, "x", 1, 5, "")), "request 1"},
			{0, sn(snap("x", 1, 5, 1, "a")), "replace [a]"},
			{0, msg(bus(TypeJoin, "x", 1, 7, "c")), "request 2"},
			{0, msg(bus(TypeJoin, "x", 1, 8, "d")), ""},
			{0, sn(snap("x", 1, 7, 2, "a", "c")), "replace [a c]; join d"},
			{0, msg(bus(TypeJoin, "x", 1, 8, "d")), ""}, // a duplicate
		}},
		{"a beat ahead of what was applied is a gap too", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, sn(snap("x", 1, 0, 1)), "replace []"},
			{0, msg(bus(TypeBeat, "x", 1, 1, "")), "request 2"},
		}},
		{"a new generation means a new snapshot; the old one's messages are ignored", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, sn(snap("x", 1, 3, 1, "a")), "replace [a]"},
			{0, msg(bus(TypeHello, "x", 2, 3, "")), "request 2"},
			{0, msg(bus(TypeJoin, "x", 1, 4, "old")), ""},
			{0, sn(snap("x", 2, 3, 2, "a")), "replace [a]"},
		}},
		{"a server silent for three beats is dropped", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, sn(snap("x", 1, 0, 1, "a")), "replace [a]"},
			{2900 * time.Millisecond, tick, ""},
			{3 * time.Second, tick, "drop silent"},
			{4 * time.Second, tick, ""},
		}},
		{"cut off from NATS, nobody is taken for dead until Hold", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, sn(snap("x", 1, 0, 1, "a")), "replace [a]"},
			{time.Second, down, ""},
			{10 * time.Second, tick, ""},
			{12 * time.Second, up, ""},
			{15 * time.Second, tick, ""}, // DeadAfter, but the grace too
			{16 * time.Second, tick, "drop silent"},
		}},
		{"cut off for longer than Hold, every remote peer is dropped", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, sn(snap("x", 1, 0, 1, "a")), "replace [a]"},
			{time.Second, down, ""},
			{31 * time.Second, tick, "drop nats_down"},
			{32 * time.Second, up, ""},
			{32 * time.Second, msg(bus(TypeBeat, "x", 1, 0, "")), "request 2"},
		}},
		{"an overdue snapshot is asked for again; a late answer to the old request is ignored", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{time.Second, msg(bus(TypeBeat, "x", 1, 0, "")), ""},
			{5 * time.Second, msg(bus(TypeBeat, "x", 1, 0, "")), ""},
			{5 * time.Second, tick, "request 2"},
			{5 * time.Second, sn(snap("x", 1, 0, 1, "a")), ""},
			{5 * time.Second, sn(snap("x", 1, 0, 2, "b")), "replace [b]"},
		}},
		{"a buffer overflow asks again once the snapshot is in", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "x", 1, 0, "")), "request 1"},
			{0, msg(bus(TypeJoin, "x", 1, 1, "a")), ""},
			{0, msg(bus(TypeJoin, "x", 1, 2, "b")), ""},
			{0, msg(bus(TypeJoin, "x", 1, 3, "c")), ""},
			{0, msg(bus(TypeJoin, "x", 1, 4, "d")), ""},
			{0, msg(bus(TypeJoin, "x", 1, 5, "e")), ""}, // overflow
			{0, sn(snap("x", 1, 0, 1)), "replace []; request 2"},
		}},
		{"our own messages are ignored", []step{
			{0, up, ""},
			{0, msg(bus(TypeHello, "self", 1, 0, "")), ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewState("self", testTiming())
			for i, s := range tc.steps {
				if got := show(s.do(st, t0.Add(s.at))); got != s.want {
					t.Fatalf("step %d at %v: got %q, want %q", i, s.at, got, s.want)
				}
			}
		})
	}
}

func TestSnapshotInParts(t *testing.T) {
	st := NewState("self", testTiming())
	st.Connected(t0)
	if got := show(st.Message(t0, bus(TypeHello, "x", 1, 0, ""))); got != "request 1" {
		t.Fatal(got)
	}
	p0, p1 := snap("x", 1, 2, 1, "a"), snap("x", 1, 2, 1, "b", "c")
	p0.Parts, p1.Parts, p1.Part = 2, 2, 1
	if got := show(st.Snapshot(t0, p1)); got != "" {
		t.Fatalf("after part 1 of 2: %q", got)
	}
	if got := show(st.Snapshot(t0, p1)); got != "" {
		t.Fatalf("after part 1 again: %q", got)
	}
	if got := show(st.Snapshot(t0, p0)); got != "replace [a b c]" {
		t.Fatalf("after both parts: %q", got)
	}
	if !slices.Equal(st.Servers(), []string{"x"}) {
		t.Fatal(st.Servers())
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"not JSON", `{`},
		{"no server", `{"t":"beat"}`},
		{"unknown type", `{"t":"nope","s":"x"}`},
		{"join without peer", `{"t":"join","s":"x","q":1}`},
		{"join without peer_id", `{"t":"join","s":"x","q":1,"p":{"nickname":"a"}}`},
		{"leave without id", `{"t":"leave","s":"x","q":1}`},
		{"snapshot part out of range", `{"t":"snap","s":"x","i":2,"k":2}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := Decode([]byte(tc.in)); err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tc.in, m)
			}
		})
	}
}

func TestEncodeDecodeJoin(t *testing.T) {
	in := &Msg{Type: TypeJoin, Server: "x", Gen: 1, Seq: 7, NS: "room", Peer: []byte(`{"peer_id":"p","nickname":"alice","public_addr":"192.0.2.1:4000","local_addr":"0.0.0.0:4000","last_seen":5}`)}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"t":"join","s":"x","g":1,"q":7,"ns":"room","p":{"peer_id":"p","nickname":"alice","public_addr":"192.0.2.1:4000","local_addr":"0.0.0.0:4000","last_seen":5}}`
	if string(b) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", b, want)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if info := m.Info(); info.PeerID != "p" || info.Nickname != "alice" || m.NS != "room" || m.Seq != 7 {
		t.Fatalf("decoded %+v", m)
	}
}

package room

import (
	"fmt"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

const benchMembers = 100

// benchStream returns n signed messages of a 100-member room, the authors
// taking turns, each depending on the message before it (its deps are
// what changed since the author's previous message, as Next would write).
func benchStream(b *testing.B, n int) []*protocol.RoomMessage {
	b.Helper()
	keys := make([]string, benchMembers)
	for i := range keys {
		keys[i] = protocol.EncodePublicKey(testPub(byte(i + 1)))
	}
	seqs := make([]uint64, benchMembers)
	out := make([]*protocol.RoomMessage, n)
	for i := range out {
		a := i % benchMembers
		seqs[a]++
		m := &protocol.RoomMessage{Room: testRoom, Nick: "member", Seq: seqs[a], Time: t0.UnixMilli() + int64(i), Text: fmt.Sprintf("message %d of the benchmark, of a typical length", i)}
		if i > 0 {
			p := (i - 1) % benchMembers
			m.Deps = []protocol.RoomSeq{{Author: keys[p], Seq: seqs[p]}}
		}
		Sign(testKey(byte(a+1)), m)
		out[i] = m
	}
	return out
}

func benchLog(b *testing.B) *Log {
	b.Helper()
	l, err := NewLog(LogConfig{Room: testRoom, Key: testKey(200)})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkAddReady is the cost per message of taking a message from a
// member of a 100-member room and delivering it: with the signature check
// (what Add does), without it (the log alone), and with messages arriving
// in swapped pairs, so that every other one waits.
func BenchmarkAddReady(b *testing.B) {
	const n = 10_000
	stream := benchStream(b, n)
	swapped := make([]*protocol.RoomMessage, n)
	for i := 0; i+1 < n; i += 2 {
		swapped[i], swapped[i+1] = stream[i+1], stream[i]
	}
	for _, bc := range []struct {
		name     string
		msgs     []*protocol.RoomMessage
		verified bool
	}{
		{"verify/in-order", stream, false},
		{"log-only/in-order", stream, true},
		{"log-only/pairs-swapped", swapped, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var l *Log
			now := t0
			delivered := 0
			for i := 0; b.Loop(); i++ {
				if i%n == 0 {
					l = benchLog(b)
				}
				if _, err := l.add(bc.msgs[i%n], now, bc.verified); err != nil {
					b.Fatal(err)
				}
				delivered += len(l.Ready(now))
				now = now.Add(time.Millisecond)
			}
			if delivered < b.N-1 {
				b.Fatalf("delivered %d of %d", delivered, b.N)
			}
		})
	}
}

// BenchmarkMissing is the cost of answering a summary from a history of
// 500 messages by 100 members: a late joiner's (empty: all 500 go) and a
// returning member's (it lacks the last 50).
func BenchmarkMissing(b *testing.B) {
	l := benchLog(b)
	stream := benchStream(b, 500)
	for _, m := range stream {
		if _, err := l.add(m, t0, true); err != nil {
			b.Fatal(err)
		}
	}
	if got := len(l.Ready(t0)); got != 500 {
		b.Fatalf("delivered %d", got)
	}
	returning := protocol.RoomSummary{Room: testRoom}
	back := benchLog(b)
	for _, m := range stream[:450] {
		back.add(m, t0, true)
	}
	back.Ready(t0)
	returning = back.Summary()
	for _, bc := range []struct {
		name   string
		theirs protocol.RoomSummary
		want   int
	}{
		{"late-joiner", protocol.RoomSummary{Room: testRoom}, 500},
		{"returning-member", returning, 50},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if got := len(l.Missing(bc.theirs, t0)); got != bc.want {
					b.Fatalf("missing %d, want %d", got, bc.want)
				}
			}
		})
	}
}

// BenchmarkNext is the cost of writing our message in a room of 100
// members who speak in turn, our log holding a history of 500: between two
// of ours, the 99 others each write one. Next then has 99 candidates for
// deps, and lists the one whose past holds the others. The others' deps
// are what Next writes now (the message before theirs: "others-reduced"),
// or what it wrote before the reduction (every author seen since their
// previous message: "others-full").
//
// Metrics: deps/op and line-bytes/op are what Next wrote; candidates/op
// and full-line-bytes/op what it would have written listing every
// candidate, as it did before the reduction.
func BenchmarkNext(b *testing.B) {
	for _, bc := range turnCases {
		b.Run(bc.name, func(b *testing.B) {
			r := newTurnRoom(b, bc.full)
			var deps, bytes, cands, fullBytes int
			for b.Loop() {
				b.StopTimer()
				r.round()
				full := r.fullMessage()
				b.StartTimer()
				m := r.post()
				b.StopTimer()
				line, err := protocol.EncodeRoomMessage(m)
				if err != nil {
					b.Fatal(err)
				}
				fullLine, err := protocol.EncodeRoomMessage(full)
				if err != nil {
					b.Fatal(err)
				}
				deps += len(m.Deps)
				bytes += len(line)
				cands += len(full.Deps)
				fullBytes += len(fullLine)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(deps)/n, "deps/op")
			b.ReportMetric(float64(bytes)/n, "line-bytes/op")
			b.ReportMetric(float64(cands)/n, "candidates/op")
			b.ReportMetric(float64(fullBytes)/n, "full-line-bytes/op")
		})
	}
}

// BenchmarkNextDeps is the part of BenchmarkNext that chooses the deps
// (the walk of the history), on the same rooms. It changes nothing, so
// it runs again and again on one round's state.
func BenchmarkNextDeps(b *testing.B) {
	for _, bc := range turnCases {
		b.Run(bc.name, func(b *testing.B) {
			r := newTurnRoom(b, bc.full)
			r.round()
			for b.Loop() {
				if deps, _ := r.l.nextDeps(); len(deps) != 1 {
					b.Fatalf("%d deps", len(deps))
				}
			}
		})
	}
}

var turnCases = []struct {
	name string
	full bool // the others list every author seen, not only the last
}{
	{"others-reduced", false},
	{"others-full", true},
}

// turnRoom is a room of benchMembers speaking in turn, we last.
type turnRoom struct {
	b    *testing.B
	l    *Log
	full bool
	keys []string // ours last
	seqs []uint64
	last int // who spoke last
	sig  string
	now  time.Time
}

// newTurnRoom returns a room whose log has had six rounds, so that its
// history is full.
func newTurnRoom(b *testing.B, full bool) *turnRoom {
	r := &turnRoom{b: b, l: benchLog(b), full: full, last: -1, now: t0}
	r.keys = make([]string, benchMembers)
	for i := range benchMembers - 1 {
		r.keys[i] = protocol.EncodePublicKey(testPub(byte(i + 1)))
	}
	r.keys[benchMembers-1] = r.l.self
	r.seqs = make([]uint64, benchMembers)
	// The others' messages only need a signature of the right shape: add
	// skips the check.
	r.sig = benchStream(b, 1)[0].Sig
	for range 6 {
		r.round()
		r.post()
	}
	if len(r.l.history) != DefaultHistoryMessages {
		b.Fatalf("history %d", len(r.l.history))
	}
	return r
}

// round has the others speak once each, delivered to our log.
func (r *turnRoom) round() {
	for a := range benchMembers - 1 {
		r.seqs[a]++
		m := &protocol.RoomMessage{Room: testRoom, Author: r.keys[a], Nick: "member", Seq: r.seqs[a], Time: r.now.UnixMilli(), Text: "a message of a typical length", Sig: r.sig}
		for o := range benchMembers {
			if o != a && r.seqs[o] > 0 && (r.full || o == r.last) {
				m.Deps = append(m.Deps, protocol.RoomSeq{Author: r.keys[o], Seq: r.seqs[o]})
			}
		}
		if _, err := r.l.add(m, r.now, true); err != nil {
			r.b.Fatal(err)
		}
		if len(r.l.Ready(r.now)) != 1 {
			r.b.Fatalf("%d of seq %d not delivered", a, r.seqs[a])
		}
		r.last = a
		r.now = r.now.Add(time.Millisecond)
	}
}

// post writes our message.
func (r *turnRoom) post() *protocol.RoomMessage {
	m, err := r.l.Next(r.now, "our message, of a typical length", "us")
	if err != nil {
		r.b.Fatal(err)
	}
	r.seqs[benchMembers-1] = m.Seq
	r.last = benchMembers - 1
	return m
}

// fullMessage is our next message as Next wrote it before the reduction,
// listing every candidate (signature of the right shape only).
func (r *turnRoom) fullMessage() *protocol.RoomMessage {
	m := &protocol.RoomMessage{Room: testRoom, Author: r.l.self, Nick: "us", Seq: r.seqs[benchMembers-1] + 1, Time: r.now.UnixMilli(), Text: "our message, of a typical length", Sig: r.sig}
	for _, a := range r.l.authors {
		if a.key != r.l.self && a.highest > a.shown {
			m.Deps = append(m.Deps, protocol.RoomSeq{Author: a.key, Seq: a.highest})
		}
	}
	return m
}

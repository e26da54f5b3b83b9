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

package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// benchStore opens a store with synchronous=FULL on a file in a fresh
// directory.
func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "messages.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

var benchKeys = func() []string {
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("UHVibGljS2V5T2ZQZWVyTnVtYmVy%04dAAAAAAAAAAA=", i)
	}
	return keys
}()

// incomingBatch builds n incoming messages with ~40-byte texts from 16
// peers. Ids are 16 hex digits: random, as the chat makes them today, or
// time-ordered (a counter standing in for a clock, then random bits).
func incomingBatch(rnd *rand.Rand, ordered bool, next *int, n int, now time.Time) []*Message {
	ms := make([]*Message, n)
	for i := range ms {
		k := *next
		*next++
		id := fmt.Sprintf("%016x", rnd.Uint64())
		if ordered {
			id = fmt.Sprintf("%011x%05x", k, rnd.Uint32()&0xfffff)
		}
		ms[i] = &Message{
			ID: id, PeerKey: benchKeys[k%len(benchKeys)], PeerNick: "peer",
			Text: fmt.Sprintf("message number %d about the weather, hi", k),
			Sent: now, Received: now, Encrypted: true,
		}
	}
	return ms
}

// BenchmarkAddIncoming stores b.N incoming messages in AddIncoming calls
// of 256 and reports rows/s.
func BenchmarkAddIncoming(b *testing.B) {
	for _, ordered := range []bool{false, true} {
		name := "random ids"
		if ordered {
			name = "time-ordered ids"
		}
		b.Run(name, func(b *testing.B) {
			s := benchStore(b)
			var failed atomic.Int64
			done := func(_ []bool, err error) {
				if err != nil {
					failed.Add(1)
				}
			}
			rnd := rand.New(rand.NewPCG(1, 2))
			next, now := 0, time.Now()
			b.ResetTimer()
			for left := b.N; left > 0; left -= 256 {
				s.AddIncoming(incomingBatch(rnd, ordered, &next, min(left, 256), now), done)
			}
			if err := s.Flush(b.Context()); err != nil || failed.Load() != 0 {
				b.Fatalf("Flush: %v, %d failed batches", err, failed.Load())
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkAddOutgoingAndDeliver stores b.N outgoing messages one
// AddOutgoing each and marks them delivered in MarkDelivered calls of 256,
// as acknowledgements come in; it reports messages/s through both.
func BenchmarkAddOutgoingAndDeliver(b *testing.B) {
	s := benchStore(b)
	var failed atomic.Int64
	acks := make(chan int64, b.N) // room for all: done must not block
	collected := make(chan struct{})
	b.ResetTimer()
	go func() {
		defer close(collected)
		seqs := make([]int64, 0, 256)
		for seq := range acks {
			if seqs = append(seqs, seq); len(seqs) == 256 {
				s.MarkDelivered(seqs, time.Now(), nil)
				seqs = make([]int64, 0, 256)
			}
		}
		if len(seqs) > 0 {
			s.MarkDelivered(seqs, time.Now(), nil)
		}
	}()
	now := time.Now()
	var sent atomic.Int64
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range b.N {
		m := &Message{
			ID: fmt.Sprintf("%016x", rnd.Uint64()), PeerKey: benchKeys[i%len(benchKeys)], PeerNick: "peer", Dir: Out,
			Text: fmt.Sprintf("message number %d about the weather, hi", i), Sent: now,
			Expires: now.Add(time.Hour), Status: Pending, Encrypted: true,
		}
		s.AddOutgoing(m, func(err error) {
			if err != nil {
				failed.Add(1)
			} else {
				acks <- m.Seq
			}
			if sent.Add(1) == int64(b.N) {
				close(acks)
			}
		})
	}
	<-collected
	if err := s.Flush(b.Context()); err != nil || failed.Load() != 0 {
		b.Fatalf("Flush: %v, %d failed", err, failed.Load())
	}
	b.StopTimer()
	if st, err := s.Stats(b.Context()); err != nil || st.Delivered != b.N {
		b.Fatalf("Stats = %+v, %v; want %d delivered", st, err, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkIndexSearch indexes b.N stored messages for full-text search
// and reports rows/s.
func BenchmarkIndexSearch(b *testing.B) {
	s := benchStore(b)
	rnd := rand.New(rand.NewPCG(1, 2))
	next, now := 0, time.Now()
	for left := b.N; left > 0; left -= 256 {
		s.AddIncoming(incomingBatch(rnd, false, &next, min(left, 256), now), nil)
	}
	if err := s.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := s.IndexSearch(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	if ms, err := s.Search(b.Context(), "weather", 1); err != nil || (b.N > 0 && len(ms) != 1) {
		b.Fatalf("Search after indexing: %d results, %v", len(ms), err)
	}
}

// roomBatch builds n messages of one room from 16 authors, each seq after
// the author's last, with ~40-byte texts and a dep on the previous author
// (as a live room's messages mostly have). The signature is well-formed
// but not computed: the store checks its form, not its value.
func roomBatch(next *int, n int, now time.Time) []*RoomMessageRow {
	const authors = 16
	sig := strings.Repeat("A", 86) + "=="
	ms := make([]*RoomMessageRow, n)
	for i := range ms {
		k := *next
		*next++
		a, seq := k%authors, uint64(1+k/authors)
		m := &RoomMessageRow{
			RoomMessage: protocol.RoomMessage{
				Room: roomA, Author: benchKeys[a], Nick: "peer", Seq: seq, Time: now.UnixMilli(),
				Text: fmt.Sprintf("message number %d about the weather, hi", k), Sig: sig,
			},
			Received: now,
		}
		if k > 0 {
			m.Deps = []protocol.RoomSeq{{Author: benchKeys[(k-1)%authors], Seq: uint64(1 + (k-1)/authors)}}
		}
		ms[i] = m
	}
	return ms
}

// BenchmarkAddRoomMessages stores b.N room messages in AddRoomMessages
// calls of 256 and reports rows/s; "and show" also marks each call's
// messages shown, as the chat does once a room.Log delivers them.
func BenchmarkAddRoomMessages(b *testing.B) {
	for _, show := range []bool{false, true} {
		name := "add"
		if show {
			name = "add and show"
		}
		b.Run(name, func(b *testing.B) {
			s := benchStore(b)
			var failed atomic.Int64
			next, now := 0, time.Now()
			b.ResetTimer()
			for left := b.N; left > 0; left -= 256 {
				ms := roomBatch(&next, min(left, 256), now)
				s.AddRoomMessages(ms, func(_ []bool, err error) {
					if err != nil {
						failed.Add(1)
					}
				})
				if show {
					keys := make([]RoomMsgKey, len(ms))
					for i, m := range ms {
						keys[i] = RoomMsgKey{m.Author, m.Seq}
					}
					s.MarkRoomShown(roomA, keys, func(err error) {
						if err != nil {
							failed.Add(1)
						}
					})
				}
			}
			if err := s.Flush(b.Context()); err != nil || failed.Load() != 0 {
				b.Fatalf("Flush: %v, %d failed calls", err, failed.Load())
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.StopTimer()
			if as, err := s.RoomAuthors(b.Context(), roomA); err != nil || len(as) != min(b.N, 16) {
				b.Fatalf("RoomAuthors: %d authors, %v", len(as), err)
			}
		})
	}
}

// BenchmarkRoomReads times what a restart reads of a room that holds
// 100,000 messages of 16 authors, all shown but the last 256: RoomAuthors,
// RoomMessages of the newest 500 and RoomHistory of the last 50.
func BenchmarkRoomReads(b *testing.B) {
	s := benchStore(b)
	next, now := 0, time.Now()
	const total = 100_000
	for left := total; left > 0; left -= 256 {
		ms := roomBatch(&next, min(left, 256), now.Add(time.Duration(next)*time.Millisecond))
		s.AddRoomMessages(ms, nil)
		if left > 256 {
			keys := make([]RoomMsgKey, len(ms))
			for i, m := range ms {
				keys[i] = RoomMsgKey{m.Author, m.Seq}
			}
			s.MarkRoomShown(roomA, keys, nil)
		}
	}
	if err := s.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		name string
		read func() (int, error)
		want int
	}{
		{"RoomAuthors", func() (int, error) { as, err := s.RoomAuthors(b.Context(), roomA); return len(as), err }, 16},
		{"RoomMessages of 500", func() (int, error) { ms, err := s.RoomMessages(b.Context(), roomA, 500); return len(ms), err }, 500},
		{"RoomHistory of 50", func() (int, error) { ms, err := s.RoomHistory(b.Context(), roomA, 50); return len(ms), err }, 50},
	} {
		b.Run(r.name, func(b *testing.B) {
			for b.Loop() {
				if n, err := r.read(); err != nil || n != r.want {
					b.Fatalf("%d rows, %v; want %d", n, err, r.want)
				}
			}
		})
	}
}

package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
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

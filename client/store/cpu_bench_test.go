package store

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmarks in this file write rows the way msgbench's two chat
// processes do and report, besides ns/op and allocs/op (an op is one
// row), the process's CPU time per row (user and system, from
// getrusage), which a shared machine disturbs less than wall time.

// cpuTime is the CPU time the process has used so far: user and system.
func cpuTime(b *testing.B) [2]time.Duration {
	b.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return [2]time.Duration{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// reportCPU reports the CPU time used since start per b.N rows, in all
// and the system's part (writes and fsyncs, mostly).
func reportCPU(b *testing.B, start [2]time.Duration) {
	now := cpuTime(b)
	user, sys := now[0]-start[0], now[1]-start[1]
	b.ReportMetric(float64(user+sys)/float64(b.N), "cpu-ns/row")
	b.ReportMetric(float64(sys)/float64(b.N), "sys-ns/row")
}

// chatStore opens a store as the chat does (synchronous=FULL, FoldWait
// DefaultFoldWait) on a file in a fresh directory.
func chatStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "messages.db"), Options{FoldWait: DefaultFoldWait})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// memoryStore opens a memory store with the chat's options.
func memoryStore(b *testing.B) *Store {
	b.Helper()
	s, err := OpenMemory(Options{FoldWait: DefaultFoldWait})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// chatID is a message id as the chat makes them: the time in
// milliseconds shifted left 20 bits plus a counter, in 16 hex digits.
func chatID(start time.Time, i int) string {
	return fmt.Sprintf("%016x", uint64(start.UnixMilli())<<20+uint64(i))
}

// chatTime is when message i of a stream that started at start was sent
// (or received): 50 messages a millisecond, about the chat's full rate.
func chatTime(start time.Time, i int) time.Time {
	return start.Add(time.Duration(i/50) * time.Millisecond)
}

// BenchmarkReceiverRows stores b.N messages from one peer in
// AddIncomingSync calls of a batch each, as a receiver's connection does
// (up to 512 pipelined lines a batch). "in memory" leaves out the file
// system's share (writes, fsyncs), which varies most from run to run.
func BenchmarkReceiverRows(b *testing.B) {
	for _, bench := range []struct {
		batch  int
		memory bool
	}{{64, false}, {256, false}, {512, false}, {256, true}} {
		name := fmt.Sprintf("batch %d", bench.batch)
		if bench.memory {
			name += " in memory"
		}
		batch := bench.batch
		b.Run(name, func(b *testing.B) {
			var s *Store
			if bench.memory {
				s = memoryStore(b)
			} else {
				s = chatStore(b)
			}
			now := time.Now()
			ms := make([]*Message, b.N)
			for i := range ms {
				ms[i] = &Message{
					ID: chatID(now, i), PeerKey: benchKeys[0], PeerNick: "alice", Dir: In,
					Text: fmt.Sprintf("message number %d about the weather, hi", i),
					Sent: chatTime(now, i), Received: chatTime(now, i).Add(time.Millisecond), Status: Received, Encrypted: true,
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime(b)
			for lo := 0; lo < len(ms); lo += batch {
				isNew, err := s.AddIncomingSync(b.Context(), ms[lo:min(lo+batch, len(ms))])
				if err != nil || !isNew[0] {
					b.Fatalf("AddIncomingSync: %v, isNew %v", err, isNew)
				}
			}
			reportCPU(b, start)
		})
	}
}

// BenchmarkSenderRows stores b.N outgoing messages to one peer, one
// AddOutgoing each, and marks them delivered in MarkDelivered calls of
// 64 right after, as acks come back while the rows wait (FoldWait): every
// row should be written once, Delivered.
func BenchmarkSenderRows(b *testing.B) {
	s := chatStore(b)
	now := time.Now()
	ms := make([]*Message, b.N)
	for i := range ms {
		ms[i] = &Message{
			ID: chatID(now, i), PeerKey: benchKeys[0], PeerNick: "bob", Dir: Out,
			Text: fmt.Sprintf("message number %d about the weather, hi", i),
			Sent: chatTime(now, i), Expires: chatTime(now, i).Add(7 * 24 * time.Hour), Status: Pending, Encrypted: true,
		}
	}
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	const acks = 64
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime(b)
	folded := s.WriterStats().Folded
	seqs := make([]int64, 0, acks)
	for _, m := range ms {
		s.AddOutgoing(m, done)
		if seqs = append(seqs, m.Seq); len(seqs) == acks {
			s.MarkDelivered(seqs, time.Now(), done)
			seqs = make([]int64, 0, acks)
		}
	}
	if len(seqs) > 0 {
		s.MarkDelivered(seqs, time.Now(), done)
	}
	if err := s.Flush(b.Context()); err != nil || failed.Load() != 0 {
		b.Fatalf("Flush: %v, %d failed", err, failed.Load())
	}
	reportCPU(b, start)
	b.StopTimer()
	b.ReportMetric(float64(s.WriterStats().Folded-folded)/float64(b.N), "folded/row")
}

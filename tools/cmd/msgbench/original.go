package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/tools/internal/procstat"
)

// originalResult is what the original baseline measured.
type originalResult struct {
	messages   int
	received   int // distinct sequence numbers
	dup        int
	invalid    int
	sendErrors int
	firstErr   error
	sendTime   time.Duration // first send to last send returned
	total      time.Duration // first send to the receiver holding them all
	cpu        float64       // this process's CPU seconds over total (both peers)
	others     float64       // the CPU seconds other processes used meanwhile
}

func (r originalResult) rate() float64 { return float64(r.received) / r.total.Seconds() }

// runOriginal sends n messages from one original Peer to another, one
// after the other, the original's way: a connection per message. With a
// profile path, it writes this process's CPU profile of the sending there.
func runOriginal(ctx context.Context, n int, profile string) (originalResult, error) {
	r := originalResult{messages: n}
	nw := chat.OSNetwork{}
	// The sender joins the group first, so it hears the announce the
	// receiver sends as it starts.
	snd, err := original.StartPeer(ctx, nw, "orig-sender")
	if err != nil {
		return r, err
	}
	defer snd.Close()
	rcv, err := original.StartPeer(ctx, nw, "orig-receiver")
	if err != nil {
		return r, err
	}
	defer rcv.Close()
	// Normally the receiver's first announce; else the next, within
	// AnnounceInterval.
	listed := func() bool { return slices.Contains(snd.Peers(), "orig-receiver") }
	if err := waitUntil(ctx, 2*original.AnnounceInterval, 5*time.Millisecond, listed); err != nil {
		return r, fmt.Errorf("original sender does not list the original receiver: %w", err)
	}

	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return r, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return r, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	cpu0, err := procstat.CPUSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	busy0, _, err := procstat.MachineBusy()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	for i := range n {
		if err := snd.Send(ctx, "orig-receiver", messageText(i)); err != nil {
			r.sendErrors++
			if r.firstErr == nil {
				r.firstErr = fmt.Errorf("message %d: %w", i, err)
			}
		}
	}
	r.sendTime = time.Since(t0)
	// The receiver reads each connection in its own goroutine: the last
	// lines may still be on their way.
	all := func() bool { return len(rcv.Received()) >= n-r.sendErrors }
	_ = waitUntil(ctx, 10*time.Second, time.Millisecond, all)
	r.total = time.Since(t0)
	cpu1, err := procstat.CPUSeconds(os.Getpid())
	if err != nil {
		return r, err
	}
	r.cpu = cpu1 - cpu0
	busy1, _, _ := procstat.MachineBusy()
	r.others = max(0, busy1-busy0-r.cpu)

	seen := make([]bool, n)
	for _, m := range rcv.Received() {
		seq, ok := parseSeq(m.Content)
		switch {
		case !ok || seq >= n:
			r.invalid++
		case seen[seq]:
			r.dup++
		default:
			seen[seq] = true
			r.received++
		}
	}
	return r, nil
}

// waitUntil polls cond every step until it holds, for at most limit.
func waitUntil(ctx context.Context, limit, step time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(step)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

package rendezvous

import (
	"context"
	"sync"
	"time"
)

// A pool runs work on goroutines that outlive one piece of it. A new
// goroutine starts with a 2 KiB stack and grows it, by copying, the
// first time the work goes deeper (a deadline update alone does); a
// pooled one has grown already. The server's readers, writers and
// handshakes each have one (issue 13: in a burst of connects, stack
// copies of fresh goroutines were 8% of the server's CPU).
//
// An idle goroutine exits after between poolIdle and twice that: its
// timer is reset once per idle period rather than per piece of work,
// as a timer update costs about as much as a small piece of work.
type pool[T any] struct {
	work func(T)
	ch   chan T
}

// poolIdle is how long a pooled goroutine waits for work before it exits.
const poolIdle = 2 * time.Second

func newPool[T any](work func(T)) *pool[T] {
	return &pool[T]{work: work, ch: make(chan T)}
}

// run gives v to an idle goroutine, or to a new one that wg counts. It
// never blocks, so callers may hold locks.
func (p *pool[T]) run(ctx context.Context, wg *sync.WaitGroup, v T) {
	select {
	case p.ch <- v:
	default:
		wg.Go(func() { p.loop(ctx, v) })
	}
}

func (p *pool[T]) loop(ctx context.Context, v T) {
	p.work(v)
	t := time.NewTimer(poolIdle)
	defer t.Stop()
	busy := false // worked since t was last set
	for {
		select {
		case v = <-p.ch:
			p.work(v)
			busy = true
		case <-t.C:
			if !busy {
				return
			}
			busy = false
			t.Reset(poolIdle)
		case <-ctx.Done():
			return
		}
	}
}

package rendezvous

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// goid is the calling goroutine's id, from its stack trace's header.
func goid() int {
	var b [64]byte
	s := b[:runtime.Stack(b[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	id, _ := strconv.Atoi(string(s[:bytes.IndexByte(s, ' ')]))
	return id
}

// A pooled goroutine takes the next piece of work while it waits, and
// exits between poolIdle and twice that after its last.
func TestPoolReusesAndExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		ran := map[int][]int{} // goroutine -> work
		p := newPool(func(v int) {
			mu.Lock()
			ran[goid()] = append(ran[goid()], v)
			mu.Unlock()
		})
		var wg sync.WaitGroup
		for v := range 5 {
			p.run(t.Context(), &wg, v)
			synctest.Wait() // the goroutine waits for work again
			// Busy often enough to stay; not when its timer fires, when
			// it is not waiting for work.
			time.Sleep(poolIdle/2 + time.Millisecond)
		}
		if len(ran) != 1 {
			t.Fatalf("work ran on %d goroutines, want 1: %v", len(ran), ran)
		}
		last := time.Now()
		exited := make(chan time.Duration)
		go func() {
			wg.Wait()
			exited <- time.Since(last)
		}()
		if d := <-exited; d < poolIdle || d > 2*poolIdle {
			t.Errorf("idle goroutine exited %v after its last work, want between %v and %v", d, poolIdle, 2*poolIdle)
		}
	})
}

// A pool gives concurrent work to more goroutines, and its goroutines
// end with the context.
func TestPoolGrowsAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var started sync.WaitGroup
		started.Add(3)
		p := newPool(func(int) {
			started.Done()
			<-release
		})
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for v := range 3 {
			p.run(ctx, &wg, v) // never blocks, though every goroutine is busy
		}
		started.Wait()
		close(release)
		synctest.Wait()
		cancel()
		wg.Wait() // at once: synctest would report a deadlock otherwise
	})
}

// deadlineConn counts the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// The writes of a burst share one deadline, and the socket is told it
// once: gorilla sets the deadline before every write.
func TestWriteDeadlineReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{cfg: Config{WriteTimeout: 10 * time.Second}}
		dc := &deadlineConn{}
		c := &conn{s: s, fc: &frameConn{Conn: dc}}
		start := time.Now()
		want := []float64{10, 10, 10, 11.2, 11.2} // seconds after start
		for i, w := range want {
			if i > 0 {
				time.Sleep(400 * time.Millisecond)
			}
			d := c.writeDeadline()
			c.fc.SetWriteDeadline(d)
			if got := d.Sub(start); got != time.Duration(float64(w)*float64(time.Second)) {
				t.Errorf("write %d, %v after the first: deadline %v after it, want %vs", i, time.Since(start), got, float64(w))
			}
		}
		if len(dc.set) != 2 {
			t.Errorf("socket deadline set %d times, want 2: %v", len(dc.set), dc.set)
		}
		// A zero deadline (none) is always passed on.
		c.fc.SetWriteDeadline(time.Time{})
		c.fc.SetWriteDeadline(time.Time{})
		if len(dc.set) != 4 {
			t.Errorf("zero deadlines passed on %d times, want 2", len(dc.set)-2)
		}
	})
}

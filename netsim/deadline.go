package netsim

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadline is the standard library's pipe deadline: a channel closed when
// the deadline passes, by a time.AfterFunc timer, so that a call already
// blocked is interrupted. In a synctest bubble the timer follows the fake
// clock.
//
// notify, if set, is also signalled when the deadline passes, so a waiter
// can block on one channel (cheaper than a select) and see the deadline.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
	notify chan struct{}
	passed atomic.Bool // cancel is closed; read without the lock on hot paths
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func makeNotifyingDeadline(notify chan struct{}) deadline {
	return deadline{cancel: make(chan struct{}), notify: notify}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		d.passed.Store(false)
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		d.passed.Store(false)
		cancel, notify := d.cancel, d.notify
		d.timer = time.AfterFunc(dur, func() {
			d.passed.Store(true)
			close(cancel)
			if notify != nil {
				signal(notify)
			}
		})
		return
	}
	d.passed.Store(true)
	if !closed {
		close(d.cancel)
		if d.notify != nil {
			signal(d.notify)
		}
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) expired() bool { return d.passed.Load() }

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// signal wakes one waiter on a capacity-1 channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

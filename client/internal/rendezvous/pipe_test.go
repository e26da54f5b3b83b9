package rendezvous_test

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// bufPipe returns a connected pair of in-memory conns whose writes never
// block (like TCP with ample socket buffers), with deadlines that follow
// the clock, so they work inside a synctest bubble. net.Pipe is
// unbuffered: a server write to a client that is not reading would block.
func bufPipe() (net.Conn, net.Conn) {
	ab, ba := newHalf(), newHalf()
	return &pipeConn{r: ba, w: ab, rd: newDeadline(), wd: newDeadline()},
		&pipeConn{r: ab, w: ba, rd: newDeadline(), wd: newDeadline()}
}

// half is one direction: an unbounded buffer.
type half struct {
	mu     sync.Mutex
	buf    []byte
	closed bool
	ready  chan struct{} // signalled (cap 1) when buf grows or closed
}

func newHalf() *half { return &half{ready: make(chan struct{}, 1)} }

func (h *half) signal() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

type pipeConn struct {
	r, w      *half
	rd, wd    *deadline
	closeOnce sync.Once
}

func (c *pipeConn) Read(p []byte) (int, error) {
	for {
		c.r.mu.Lock()
		if len(c.r.buf) > 0 {
			n := copy(p, c.r.buf)
			c.r.buf = c.r.buf[n:]
			more := len(c.r.buf) > 0
			c.r.mu.Unlock()
			if more {
				c.r.signal()
			}
			return n, nil
		}
		if c.r.closed {
			c.r.mu.Unlock()
			return 0, io.EOF
		}
		c.r.mu.Unlock()
		select {
		case <-c.r.ready:
		case <-c.rd.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (c *pipeConn) Write(p []byte) (int, error) {
	select {
	case <-c.wd.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	c.w.mu.Lock()
	if c.w.closed {
		c.w.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.w.buf = append(c.w.buf, p...)
	c.w.mu.Unlock()
	c.w.signal()
	return len(p), nil
}

func (c *pipeConn) Close() error {
	c.closeOnce.Do(func() {
		for _, h := range []*half{c.r, c.w} {
			h.mu.Lock()
			h.closed = true
			h.mu.Unlock()
			h.signal()
		}
	})
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }
func (c *pipeConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { c.rd.set(t); return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

// deadline is the standard library's pipeDeadline: a channel closed when
// the deadline passes.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() *deadline { return &deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired and closed it
	}
	d.timer = nil
	closed := false
	select {
	case <-d.cancel:
		closed = true
	default:
	}
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

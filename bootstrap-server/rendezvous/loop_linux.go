//go:build linux

package rendezvous

// The event loop (issue 13). On Linux, Serve on a plain TCP listener
// takes the listening socket out of Go's netpoller and runs epoll loops
// of its own (Config.EventLoops): the first accepts, and each connection
// belongs to one loop, in turn. A loop reads a connection only while
// nobody else does, and no goroutine waits for it meanwhile:
//
//   - its first report: a request head that came whole is answered on
//     the loop (greet, Server.handshake); one in pieces goes to a
//     pooled handshake goroutine, which reads the rest;
//   - while idle (parked): heartbeats, registers and the other short
//     messages the loop reads are handled there and then, their answers
//     written there too as far as the socket takes them (conn.inline);
//     any other input wakes a pooled reader, which reads the connection
//     through loopConn (a net.Conn) until it is idle again and parks it
//     back with the loop (park).
//
// So an idle connection costs no goroutine, stack or poll descriptor,
// and a connect and register wake no goroutine: with Go's netpoller,
// each connection's goroutine and its fresh stack were about 15% of a
// register's CPU, and the hand-offs between goroutines most of the rest
// of what separated us from an epoll server (BENCHMARKS.md, issue 13's
// fifth round).
//
// Everything else is as without the loop: readers, writers, relays,
// lingering closes and declined requests run on the server's goroutines
// over a loopConn instead of a *net.TCPConn; a goroutine that must wait
// for the socket (a message half read, a full send buffer) waits for the
// loop's word on a channel, as it would in Go's netpoller.
//
// Sockets are registered edge-triggered for reading and writing, as
// Go's netpoller registers them: the kernel reports a socket when new
// bytes arrive or room frees up after a write found none. A read that
// returns less than it asked for has emptied the socket, so any later
// byte brings a new report.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loopSupported says whether Serve can run an event loop here.
const loopSupported = true

// Event tags for the listener and the stop signal; connections are
// tagged with their slot (0 and up).
const (
	tagListener = -1
	tagStop     = -2
)

// loop is one of a listener's event loops.
type loop struct {
	s   *Server
	fb  *fallbackListener
	ep  int      // epoll
	epf *os.File // ep, in Go's netpoller
	efd int      // eventfd: stop accepting, or the last connection is gone
	lfd int      // the listening socket; the loop's own, -1 once closed

	peers []*loop // the accepting loop's: all the listener's loops, itself first
	next  int     // the accepting loop's: the loop for the next connection

	stopReq  atomic.Bool
	stopOnce sync.Once
	stopped  chan struct{} // closed once the listener is closed

	mu      sync.Mutex
	conns   []*loopConn // by slot; nil: free
	gens    []int32     // by slot: bumped when the slot is freed
	free    []int32
	live    int
	lclosed bool        // the listener is closed: the last Close ends the loop
	freshQ  []*loopConn // accepted connections by age, for expireFresh
}

// newLoops takes ln's socket for Config.EventLoops event loops: the
// first accepts and gives the connections to the loops in turn. It returns none if ln is not a plain TCP listener or
// GoroutinePerConn is set. Once the loops have the socket (a duplicate
// of its descriptor), ln is closed.
func (s *Server) newLoops(ln net.Listener, fb *fallbackListener) ([]*loop, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok || s.cfg.GoroutinePerConn {
		return nil, nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, err
	}
	lfd := -1
	if cerr := rc.Control(func(fd uintptr) {
		lfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	n := s.cfg.EventLoops
	if n == 0 {
		n = max(1, runtime.GOMAXPROCS(0)/4)
	}
	var loops []*loop
	for i := range n {
		l, err := s.newLoop(fb, lfd, i == 0)
		if err != nil {
			if i == 0 {
				unix.Close(lfd)
			}
			for _, l := range loops {
				l.closeFds()
			}
			return nil, err
		}
		loops = append(loops, l)
	}
	loops[0].peers = loops
	// Go's netpoller lets go of the socket: its notifications would
	// wake a thread for nothing on every connect.
	tl.Close()
	fb.stop = func() {
		for _, l := range loops {
			l.stop()
		}
	}
	return loops, nil
}

// newLoop makes a loop; the accepting one owns the listening socket
// lfd.
func (s *Server) newLoop(fb *fallbackListener, lfd int, accepting bool) (*loop, error) {
	l := &loop{s: s, fb: fb, lfd: -1, ep: -1, efd: -1, stopped: make(chan struct{})}
	fail := func(op string, err error) (*loop, error) {
		l.closeFds()
		return nil, os.NewSyscallError(op, err)
	}
	var err error
	if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail("epoll_create1", err)
	}
	if l.efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail("eventfd", err)
	}
	if err = unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tagStop}); err != nil {
		return fail("epoll_ctl", err)
	}
	if accepting {
		// Level-triggered: a connection left in the backlog (accept
		// failed for want of descriptors) is reported again.
		if err = unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tagListener}); err != nil {
			return fail("epoll_ctl", err)
		}
		l.lfd = lfd
	}
	// The loop waits for ep in Go's netpoller (run).
	if err = unix.SetNonblock(l.ep, true); err != nil {
		return fail("fcntl", err)
	}
	l.epf = os.NewFile(uintptr(l.ep), "epoll")
	if err = l.epf.SetReadDeadline(time.Time{}); err != nil {
		return fail("netpoller", err) // not pollable
	}
	return l, nil
}

func (l *loop) closeFds() {
	if l.epf != nil {
		l.epf.Close()
		l.ep = -1
	}
	for _, fd := range []*int{&l.lfd, &l.efd, &l.ep} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// stop closes the listener: Serve returns, and the loop ends once the
// last connection is closed. Called by fallbackListener.Close.
func (l *loop) stop() {
	l.stopOnce.Do(func() {
		l.stopReq.Store(true)
		l.signal()
	})
}

// signal has the loop look at the stop request and its connections.
func (l *loop) signal() {
	var one = [8]byte{1}
	unix.Write(l.efd, one[:])
}

// wait returns once the listener is closed: ErrServerClosed, unless
// the loop itself failed.
func (l *loop) wait() error {
	<-l.stopped
	l.s.mu.Lock()
	closing := l.s.closing
	l.s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	return errLoopFailed
}

var (
	errLoopFailed = errors.New("event loop failed")
	errSocketFull = errors.New("rendezvous: socket full during the event loop's handshake")
)

// run is the loop. It returns once the listener is closed and every
// connection it accepted is closed too.
//
// The loop does not block a thread in epoll_wait: the epoll descriptor
// itself waits in Go's netpoller (it is readable while a report is
// ready), and the loop takes the reports with epoll_wait's timeout 0.
// A thread blocked in a system call has its P taken by the runtime's
// monitor after 10 ms, and each such take-back keeps the monitor
// polling every 20 us for a while: on this machine that was a fifth of
// the CPU of an idle server with 10,000 connections.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 128)
	var (
		retry time.Time // accept paused until then (out of descriptors)
		done  bool
		werr  error
	)
	take := func(uintptr) bool {
		for {
			n, err := unix.EpollWait(l.ep, events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = os.NewSyscallError("epoll_wait", err)
				return true
			}
			for _, ev := range events[:n] {
				switch ev.Fd {
				case tagListener:
					if l.lfd >= 0 && retry.IsZero() {
						if retry = l.accept(); !retry.IsZero() {
							l.epf.SetReadDeadline(retry)
						}
					}
				case tagStop:
					var b [8]byte
					unix.Read(l.efd, b[:])
					if done = l.stopAccepting(); done {
						return true
					}
				default:
					c := l.conn(ev.Fd, ev.Pad)
					if c == nil {
						continue // closed since
					}
					if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
						notify(c.wwake)
					}
					if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
						c.readable()
					}
				}
			}
			if n < len(events) {
				return false // all taken: wait in the netpoller
			}
		}
	}
	rc, err := l.epf.SyscallConn()
	for err == nil && !done && werr == nil {
		err = rc.Read(take)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Time to try accepting again.
			err = l.epf.SetReadDeadline(time.Time{})
			retry = time.Time{}
			if l.lfd >= 0 {
				l.listen(true)
				if retry = l.accept(); !retry.IsZero() {
					l.epf.SetReadDeadline(retry)
				}
			}
		}
	}
	if !done {
		l.fail(errors.Join(err, werr))
		return
	}
	unix.Close(l.efd)
	l.epf.Close()
}

// stopAccepting closes the listener once it is stopped (stop), and
// reports whether the last connection is gone too.
func (l *loop) stopAccepting() bool {
	stop := l.stopReq.Load()
	if l.lfd >= 0 && stop {
		unix.Close(l.lfd)
		l.lfd = -1
		close(l.stopped)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lclosed = stop
	return l.lclosed && l.live == 0
}

// fail ends the loop after waiting failed, which it does only for a bug
// (EBADF, EFAULT, EINVAL): every connection is closed.
func (l *loop) fail(err error) {
	l.s.log.Error("event loop failed; closing its connections", "err", err)
	if l.lfd >= 0 {
		unix.Close(l.lfd)
		l.lfd = -1
		close(l.stopped)
	}
	l.mu.Lock()
	l.lclosed = false // no signal: nothing reads efd any more
	conns := make([]*loopConn, 0, l.live)
	for _, c := range l.conns {
		if c != nil {
			conns = append(conns, c)
		}
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	unix.Close(l.efd)
	l.epf.Close()
}

// acceptDelay is how long accepting pauses when the process is out of
// descriptors (net/http waits 5 ms to 1 s).
const acceptDelay = 50 * time.Millisecond

// accept accepts every waiting connection and starts its handshake. It
// returns when to try again if it had to stop for want of descriptors.
func (l *loop) accept() (retry time.Time) {
	s := l.s
	for {
		fd, sa, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
			if err == unix.EAGAIN {
				return time.Time{}
			}
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			s.log.Warn("accept failed; retrying", "err", os.NewSyscallError("accept4", err), "delay", acceptDelay)
			l.listen(false)
			return time.Now().Add(acceptDelay)
		default:
			s.log.Warn("accept failed", "err", os.NewSyscallError("accept4", err))
			return time.Time{}
		}
		// As net's accepted connections: small frames go out at once.
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		to := l.peers[l.next%len(l.peers)]
		l.next++
		c := &loopConn{l: to, fd: fd, remote: sockaddrTCP(sa), fresh: true, born: time.Now().UnixNano(),
			rwake: make(chan struct{}, 1), wwake: make(chan struct{}, 1), done: make(chan struct{})}
		if !to.add(c) {
			unix.Close(fd)
			continue
		}
		s.hsMu.Lock()
		if s.hsClosed {
			s.hsMu.Unlock()
			c.Close()
			continue
		}
		// The handshake starts when the request arrives (greet).
		s.handshaking[c] = struct{}{}
		s.hsMu.Unlock()
	}
}

// greet starts c's handshake, on its first report: here, on the loop,
// if its request head came whole in the first read (the usual case);
// on a pooled goroutine otherwise, which waits for the rest.
func (l *loop) greet(c *loopConn) {
	c.mu.Lock()
	whole := c.n > c.off && bytes.HasSuffix(c.buf[c.off:c.n], []byte("\r\n\r\n"))
	c.noWait = whole
	c.mu.Unlock()
	if !whole {
		l.s.shakers.run(l.s.ctx, &l.s.wg, accepted{c, l.fb})
		return
	}
	l.s.handshake(accepted{c, l.fb})
	c.mu.Lock()
	c.noWait = false
	c.mu.Unlock()
}

// expireFresh closes the connections that have sent no request head
// for the handshake timeout (the sweep calls it): a connection waiting
// in the loop has no read deadline. So a silent connection ends between
// the handshake timeout and that plus Sweep after it was accepted.
func (l *loop) expireFresh(now time.Time) {
	l.mu.Lock()
	i := 0
	for i < len(l.freshQ) && now.UnixNano()-l.freshQ[i].born >= int64(l.s.hsTimeout) {
		i++
	}
	old := l.freshQ[:i]
	l.freshQ = append([]*loopConn(nil), l.freshQ[i:]...)
	l.mu.Unlock()
	for _, c := range old {
		c.mu.Lock()
		silent := c.fresh && !c.closed
		c.mu.Unlock()
		if silent {
			l.s.handshakeDone(c)
			c.Close()
		}
	}
}

// listen turns the listener's reports on or off (while out of
// descriptors: it is level-triggered).
func (l *loop) listen(on bool) {
	ev := unix.EpollEvent{Fd: tagListener}
	if on {
		ev.Events = unix.EPOLLIN
	}
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, l.lfd, &ev)
}

// add gives c a slot and registers its socket.
func (l *loop) add(c *loopConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) > 0 {
		c.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	} else {
		c.slot = int32(len(l.conns))
		l.conns = append(l.conns, nil)
		l.gens = append(l.gens, 0)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.slot, Pad: l.gens[c.slot]}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		l.s.log.Warn("accept: epoll_ctl failed", "err", err)
		l.free = append(l.free, c.slot)
		return false
	}
	l.conns[c.slot] = c
	l.live++
	l.freshQ = append(l.freshQ, c)
	return true
}

// conn returns the connection in slot, unless the slot was freed since
// the event (gen) was registered.
func (l *loop) conn(slot, gen int32) *loopConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slot < 0 || int(slot) >= len(l.conns) || l.gens[slot] != gen {
		return nil
	}
	return l.conns[slot]
}

func (l *loop) remove(c *loopConn) {
	l.mu.Lock()
	l.conns[c.slot] = nil
	l.gens[c.slot]++
	l.free = append(l.free, c.slot)
	l.live--
	last := l.lclosed && l.live == 0
	l.mu.Unlock()
	if last {
		l.signal()
	}
}

func sockaddrTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// notify wakes whoever waits on ch, or the next to wait.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// loopConn is a connection accepted by a loop: a net.Conn whose reads
// and writes never block a thread. A goroutine that finds nothing to
// read (or no room to write) waits for the loop's next report, its
// deadline or Close. While parked (park), the connection is the loop's
// to read.
type loopConn struct {
	l      *loop
	slot   int32
	remote *net.TCPAddr
	rwake  chan struct{} // the loop saw it readable
	wwake  chan struct{} // the loop saw it writable
	done   chan struct{} // closed by Close

	// Handlers, set by setHandlers: heartbeats handles what the loop
	// read while the connection was parked (conn.inline) and returns what
	// is left for a reader; wake starts a reader (for that, the end of the stream, an
	// error, Close or a read deadline).
	heartbeats func([]byte) []byte
	wake       func()

	born int64 // UnixNano: accepted

	mu      sync.Mutex // guards what follows, and every use of fd
	fd      int
	closed  bool
	fresh   bool     // accepted, no request read yet (greet)
	noWait  bool     // the loop itself writes: a full socket is an error
	parked  bool     // the loop reads it
	edge    bool     // reported readable since the last read
	emptied bool     // the last read left the socket empty
	buf     *waitBuf // read, not yet taken: buf[off:n]
	off, n  int
	rerr    error // how the stream ended, once a read saw it
	rdl     time.Time
	wdl     time.Time
	local   net.Addr
}

// fill reads the socket into c.buf, which is empty. It reports false if
// nothing was waiting. c.mu is held.
func (c *loopConn) fill() bool {
	if c.buf == nil {
		c.buf = waitBufs.Get().(*waitBuf)
	}
	c.edge = false
	n, errno := readNow(uintptr(c.fd), c.buf[:])
	if r := c.l.s.waitReads; r != nil {
		r.Add(1)
	}
	c.off, c.n = 0, 0
	switch {
	case errno != 0 && wouldBlock(errno):
		c.emptied = true
		c.release()
		return false
	case errno != 0:
		c.rerr = os.NewSyscallError("read", errno)
	case n == 0:
		c.rerr = io.EOF
	default:
		c.n = n
		c.emptied = n < len(c.buf)
		return true
	}
	c.release()
	return true
}

func (c *loopConn) release() {
	if c.buf != nil && c.off == c.n {
		waitBufs.Put(c.buf)
		c.buf, c.off, c.n = nil, 0, 0
	}
}

// readable is the loop's: the socket has news. A parked connection is
// read here; otherwise whoever reads it is told.
func (c *loopConn) readable() {
	c.mu.Lock()
	if c.fresh && !c.closed {
		c.fresh = false
		c.fill() // the request, the end of the stream, or nothing yet
		c.mu.Unlock()
		c.l.greet(c)
		return
	}
	if c.closed || !c.parked {
		c.edge = true
		c.mu.Unlock()
		notify(c.rwake)
		return
	}
	c.parked = false
	if !c.fill() {
		c.parked = true // nothing after all
		c.mu.Unlock()
		return
	}
	b := c.buf
	off, n := c.off, c.n
	c.mu.Unlock()
	// No lock while the server handles heartbeats: it takes its own,
	// under which it may close c. Nobody else reads c meanwhile.
	rest := off
	if n > off {
		rest = n - len(c.heartbeats(b[off:n]))
	}
	c.mu.Lock()
	c.off = rest
	if c.off == c.n && c.rerr == nil && !c.closed && c.emptied && !c.edge && c.rdl.IsZero() {
		c.release()
		c.parked = true
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.wake()
}

// park hands c back to the loop once every byte read is taken and the
// socket is empty, and reports whether it did; if not, there is more to
// read. The caller reads c until then.
func (c *loopConn) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.rerr != nil || c.off < c.n || !c.rdl.IsZero() {
		return false
	}
	if (!c.emptied || c.edge) && c.fill() {
		return false
	}
	c.release()
	c.parked = true
	return true
}

// setHandlers sets what the loop does with the connection once parked.
func (c *loopConn) setHandlers(heartbeats func([]byte) []byte, wake func()) {
	c.mu.Lock()
	c.heartbeats, c.wake = heartbeats, wake
	c.mu.Unlock()
}

func (c *loopConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.off < c.n {
			k := copy(p, c.buf[c.off:c.n])
			c.off += k
			c.release()
			c.mu.Unlock()
			return k, nil
		}
		if c.rerr != nil {
			err := c.rerr
			c.mu.Unlock()
			return 0, err
		}
		dl := c.rdl
		if !dl.IsZero() && !time.Now().Before(dl) {
			c.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		got := c.fill()
		c.mu.Unlock()
		if !got {
			if err := c.wait(c.rwake, dl); err != nil {
				return 0, err
			}
		}
	}
}

func (c *loopConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return written, net.ErrClosed
		}
		dl := c.wdl
		if !dl.IsZero() && !time.Now().Before(dl) {
			c.mu.Unlock()
			return written, os.ErrDeadlineExceeded
		}
		k, err := unix.Write(c.fd, p[written:])
		c.mu.Unlock()
		if k > 0 {
			written += k
		}
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN:
			c.mu.Lock()
			noWait := c.noWait
			c.mu.Unlock()
			if noWait {
				return written, errSocketFull
			}
			if err := c.wait(c.wwake, dl); err != nil {
				return written, err
			}
		default:
			return written, os.NewSyscallError("write", err)
		}
	}
	return written, nil
}

// tryWrite writes hdr and data with one writev, as much of them as the
// socket takes without waiting (nothing, with a nil error, if it takes
// none).
func (c *loopConn) tryWrite(hdr, data []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	for {
		n, err := unix.Writev(c.fd, [][]byte{hdr, data})
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, os.NewSyscallError("writev", err)
	}
}

// wait waits for word on ch, Close or the deadline dl (none if zero).
// A change of deadline is word on ch too.
func (c *loopConn) wait(ch chan struct{}, dl time.Time) error {
	if dl.IsZero() {
		select {
		case <-ch:
			return nil
		case <-c.done:
			return net.ErrClosed
		}
	}
	d := time.Until(dl)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-c.done:
		return net.ErrClosed
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// Close closes the socket. A parked connection is woken, so that its
// end is handled as a reader would handle it.
func (c *loopConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	wasParked := c.parked
	c.parked = false
	close(c.done)
	// Closing the descriptor also takes it out of the epoll set; the
	// slot's generation keeps a report already taken from reaching a
	// connection that reuses the number.
	err := unix.Close(c.fd)
	c.fd = -1
	wake := c.wake
	c.mu.Unlock()
	c.l.remove(c)
	if wasParked && wake != nil {
		wake()
	}
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// CloseWrite shuts the sending half (lingerClose, net/http).
func (c *loopConn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return os.NewSyscallError("shutdown", unix.Shutdown(c.fd, unix.SHUT_WR))
}

func (c *loopConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local == nil && !c.closed {
		if sa, err := unix.Getsockname(c.fd); err == nil {
			c.local = sockaddrTCP(sa)
		}
	}
	if c.local == nil {
		return &net.TCPAddr{}
	}
	return c.local
}

func (c *loopConn) RemoteAddr() net.Addr { return c.remote }

func (c *loopConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline. A parked connection with a
// deadline is woken: a reader waits for it (a lingering close).
func (c *loopConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.rdl = t
	wake := c.parked && !t.IsZero()
	if wake {
		c.parked = false
	}
	c.mu.Unlock()
	notify(c.rwake)
	if wake {
		c.wake()
	}
	return nil
}

func (c *loopConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.wdl = t
	c.mu.Unlock()
	notify(c.wwake)
	return nil
}

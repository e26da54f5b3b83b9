package rendezvous

// Serve's own accept loop (issue 13). Each connection's first request is
// read by a short-lived goroutine of ours; a WebSocket upgrade that
// parseUpgrade takes is answered by gorilla's Upgrader right there, with
// no net/http server connection, request or response in between.
// Everything else (/healthz, /metrics, the 426 answer, any unusual
// upgrade) is declined: the connection goes to the http.Server, which
// reads the bytes already read first (prefixConn) and then the socket, as
// if it had accepted the connection itself.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// handshakeTimeout bounds the fast path's handshake, from accept to the
// written 101: net/http's ReadHeaderTimeout and gorilla's
// HandshakeTimeout before it.
const handshakeTimeout = 10 * time.Second

// acceptLoop accepts connections on ln until it fails, giving each to a
// handshake goroutine. It returns ErrServerClosed once the server is
// closing, or the error Accept failed with.
func (s *Server) acceptLoop(ln net.Listener, fb *fallbackListener) error {
	var delay time.Duration // backoff after a temporary error, as net/http's
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			// EMFILE and the like: wait for descriptors to be freed
			// rather than spin or give up. Temporary is deprecated for
			// its vagueness, but it is what net/http's Serve asks.
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-fb.done:
					t.Stop()
				}
				continue
			}
			return err
		}
		delay = 0
		s.hsMu.Lock()
		if s.hsClosed {
			s.hsMu.Unlock()
			nc.Close()
			continue // Accept fails next: Shutdown has closed ln
		}
		s.handshaking[nc] = struct{}{}
		// Under hsMu while not closed, so that a goroutine it starts is
		// counted before Shutdown's Wait.
		s.shakers.run(s.ctx, &s.wg, accepted{nc, fb})
		s.hsMu.Unlock()
	}
}

// handshakeDone forgets nc, which its handshake goroutine no longer reads
// or writes: Shutdown need not close it.
func (s *Server) handshakeDone(nc net.Conn) {
	s.hsMu.Lock()
	delete(s.handshaking, nc)
	s.hsMu.Unlock()
}

// closeHandshakes closes the connections still in their handshake and
// lets no new one start. Called by Shutdown.
func (s *Server) closeHandshakes() {
	s.hsMu.Lock()
	s.hsClosed = true
	ncs := make([]net.Conn, 0, len(s.handshaking))
	for nc := range s.handshaking {
		ncs = append(ncs, nc)
	}
	s.hsMu.Unlock()
	for _, nc := range ncs {
		nc.Close()
	}
}

// accepted is a connection Serve accepted, and where to decline it.
type accepted struct {
	nc net.Conn
	fb *fallbackListener
}

// handshake reads the first request on a.nc and answers it if it is an
// upgrade parseUpgrade takes; otherwise it declines the connection to
// net/http.
func (s *Server) handshake(a accepted) {
	nc, fb := a.nc, a.fb
	// One deadline, read and write, for the whole handshake: one timer.
	if err := nc.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		s.handshakeDone(nc)
		nc.Close()
		return
	}
	if tc, ok := nc.(*tls.Conn); ok {
		// A failed TLS handshake, or a protocol other than HTTP/1
		// agreed by ALPN, is net/http's to handle, on the *tls.Conn
		// as it is: the handshake error is kept and returned again.
		if tc.HandshakeContext(s.ctx) != nil {
			s.decline(nc, nil, fb)
			return
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" && p != "http/1.0" {
			s.decline(nc, nil, fb)
			return
		}
	}
	u := s.upgrades.Get().(*fastUpgrade)
	defer s.upgrades.Put(u)
	n, end, err := readHead(nc, u.head[:])
	if end == 0 && (n == 0 || isTimeout(err)) {
		// net/http answers neither a connection that sent nothing nor
		// one too slow with its request head.
		s.handshakeDone(nc)
		nc.Close()
		return
	}
	if end == 0 || end != n {
		// Incomplete (too long, or the client went away: net/http
		// answers 400), or followed by data before the 101, which
		// gorilla refuses.
		s.decline(nc, u.head[:n], fb)
		return
	}
	req, ok := parseUpgrade(u.head[:end])
	if !ok || req.protocol && s.upgrader.Subprotocols != nil || req.extensions && s.upgrader.EnableCompression {
		s.decline(nc, u.head[:n], fb)
		return
	}
	var xff string
	if s.cfg.TrustForwardedFor {
		xff = string(req.xff)
	}
	ip, port := s.clientAddr(nc.RemoteAddr().String(), xff)
	st, overLimit, ok := s.admit(ip)
	if !ok {
		s.decline(nc, u.head[:n], fb) // net/http answers 503 while it still runs
		return
	}
	// The handshake's deadline stays: startConn sets the read deadline,
	// and every write sets its own (gorilla's write and WriteControl
	// do, each time).
	ws, fc, err := u.upgrade(&s.upgrader, nc, string(req.key))
	s.handshakeDone(nc)
	if err != nil {
		s.log.Debug("handshake failed", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		s.releaseIP(ip)
		return
	}
	s.metrics.fastUpgrades.Inc()
	s.startConn(ws, fc, ip, port, st, overLimit)
}

// decline hands nc to net/http, which reads first read, the bytes the
// fast path took from nc, then nc itself.
func (s *Server) decline(nc net.Conn, read []byte, fb *fallbackListener) {
	s.handshakeDone(nc)
	if err := nc.SetDeadline(time.Time{}); err != nil { // net/http sets its own
		nc.Close()
		return
	}
	if len(read) > 0 {
		nc = &prefixConn{Conn: nc, prefix: bytes.Clone(read)}
	}
	fb.hand(nc)
}

// readHead reads from nc into buf until it holds a request head through
// its blank line, buf is full or a read fails. It returns the bytes read
// and the length of the head, 0 if incomplete.
func readHead(nc net.Conn, buf []byte) (n, end int, err error) {
	for n < len(buf) {
		var k int
		k, err = nc.Read(buf[n:])
		from := max(0, n-3)
		n += k
		if i := bytes.Index(buf[from:n], []byte("\r\n\r\n")); i >= 0 {
			return n, from + i + 4, nil
		}
		if err != nil {
			return n, 0, err
		}
	}
	return n, 0, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fastUpgrade is one fast-path handshake's memory, pooled: the head, and
// what gorilla's Upgrade takes, a request and a ResponseWriter that hijacks.
type fastUpgrade struct {
	head [maxHead]byte
	req  http.Request
	key  [1]string // req.Header's Sec-Websocket-Key
	bw   *bufio.Writer
	rw   bufio.ReadWriter
	hc   handshakeConn
	fc   *frameConn // made by Hijack
}

func newFastUpgrade() any {
	u := &fastUpgrade{
		// gorilla writes the 101 in this buffer (about 130 bytes) and
		// keeps nothing of it: the server's Upgrader has a
		// WriteBufferPool.
		bw: bufio.NewWriterSize(nil, 256),
	}
	u.req = http.Request{
		Method: http.MethodGet,
		Header: http.Header{
			// What gorilla's Upgrade checks, as parseUpgrade made sure.
			"Connection":            {"Upgrade"},
			"Upgrade":               {"websocket"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     u.key[:],
		},
	}
	// gorilla only checks that nothing is buffered in the reader (the
	// fast path made sure) and reads through a reader of its own.
	u.rw = bufio.ReadWriter{Reader: bufio.NewReaderSize(nil, 16), Writer: u.bw}
	return u
}

// upgrade has gorilla's Upgrader answer the request with key on nc, and
// returns the connection as serveWebSocket gets it (a frameConn on nc).
//
// Upgrade clears the connection's deadlines, then sets and clears a
// write deadline around its write of the 101: three runtime timer
// updates per connection that the fast path does not need, since the
// handshake's deadline, set at accept, bounds that write already (the
// caller then clears only its write half). So the frameConn gorilla gets
// wraps a handshakeConn, which ignores those calls, for the duration of
// Upgrade, and nc itself once Upgrade has returned; gorilla keeps only
// the frameConn.
func (u *fastUpgrade) upgrade(up *websocket.Upgrader, nc net.Conn, key string) (*websocket.Conn, *frameConn, error) {
	u.key[0] = key
	u.hc.Conn = nc
	ws, err := up.Upgrade(u, &u.req, nil)
	fc := u.fc
	u.key[0], u.hc.Conn, u.fc = "", nil, nil
	u.bw.Reset(nil)
	if err != nil {
		return nil, nil, err
	}
	fc.Conn = nc
	return ws, fc, nil
}

// Header, Write and WriteHeader serve gorilla's error answer, which a
// request parseUpgrade takes never gets; the connection is closed
// after a failed Upgrade.
func (u *fastUpgrade) Header() http.Header         { return http.Header{} }
func (u *fastUpgrade) Write(b []byte) (int, error) { return len(b), nil }
func (u *fastUpgrade) WriteHeader(int)             {}

func (u *fastUpgrade) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	u.fc = &frameConn{Conn: &u.hc}
	return u.fc, &u.rw, nil
}

// handshakeConn is the connection during gorilla's Upgrade on the fast
// path: deadlines stay as the handshake set them.
type handshakeConn struct{ net.Conn }

func (*handshakeConn) SetDeadline(time.Time) error      { return nil }
func (*handshakeConn) SetWriteDeadline(time.Time) error { return nil }

// fallbackListener is the listener Serve's http.Server accepts on: the
// connections the fast path declines. Closing it (http.Server's Close
// does) closes the listener Serve accepts on too.
type fallbackListener struct {
	ln    net.Listener
	stop  func() // stops Serve's event loop, if it runs one
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newFallbackListener(ln net.Listener) *fallbackListener {
	return &fallbackListener{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives nc to the http.Server, or closes it once the listener is
// closed.
func (l *fallbackListener) hand(nc net.Conn) {
	select {
	case l.conns <- nc:
	case <-l.done:
		nc.Close()
	}
}

func (l *fallbackListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.conns:
		return nc, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *fallbackListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		if l.stop != nil {
			l.stop()
			err = nil // the loop had taken the socket and closed ln
		}
	})
	return err
}

func (l *fallbackListener) Addr() net.Addr { return l.ln.Addr() }

// prefixConn is a declined connection: Read returns the bytes the fast
// path read before those still in the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.prefix)
	c.prefix = c.prefix[n:]
	return n, nil
}

// CloseWrite is the socket's: net/http half-closes before it closes
// after some errors.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

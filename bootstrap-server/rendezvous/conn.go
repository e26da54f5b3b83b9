package rendezvous

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

type msgKind uint8

const (
	msgText msgKind = iota
	msgPing
	msgClose
)

// outMsg is one frame waiting to be written. data may be shared by many
// connections (peer lists, pushed updates) and is never modified.
type outMsg struct {
	kind msgKind
	data []byte
}

// conn is one WebSocket client. One reader goroutine per connection
// (readLoop) reads and handles messages; a writer goroutine exists only
// while frames are queued, so an idle connection owns no writer.
type conn struct {
	s    *Server
	ws   *websocket.Conn
	ip   string
	port string
	ipst *ipState

	lastReadNano atomic.Int64
	done         chan struct{} // a worker finished this conn's frame

	// Guarded by Server.mu.
	peer    *peer // current registration, nil when none
	expired bool  // the last registration expired (or was removed)

	mu      sync.Mutex
	queue   []outMsg
	queued  int  // bytes in queue
	writing bool // a writer goroutine is running
	closing bool // a close frame is queued; accept nothing more
	netOnce sync.Once
}

func (c *conn) touch()                { c.lastReadNano.Store(time.Now().UnixNano()) }
func (c *conn) lastRead() time.Time   { return time.Unix(0, c.lastReadNano.Load()) }
func (c *conn) closeNet()             { c.netOnce.Do(func() { c.ws.NetConn().Close() }) }
func (c *conn) abort()                { c.closeNet() }
func (c *conn) send(m outMsg)         { c.enqueue(false, m) }
func (c *conn) closeWith(m ...outMsg) { c.enqueue(true, m...) }

// enqueue queues frames and starts the writer if none runs. It never
// blocks, so callers may hold Server.mu. A client that lets more than
// MaxQueueBytes pile up is dropped.
func (c *conn) enqueue(closeAfter bool, ms ...outMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	for _, m := range ms {
		c.queue = append(c.queue, m)
		c.queued += len(m.data)
	}
	if c.s.cfg.MaxQueueBytes > 0 && c.queued > c.s.cfg.MaxQueueBytes {
		c.s.metrics.err(errKindSlowReader)
		c.s.log.Info("dropping slow reader", "ip", c.ip, "queued_bytes", c.queued)
		c.queue, c.queued, c.closing = nil, 0, true
		c.closeNet()
		return
	}
	if closeAfter {
		c.closing = true
	}
	if !c.writing {
		c.writing = true
		c.s.wg.Go(c.writeLoop)
	}
}

// writeLoop writes queued frames until the queue is empty, then exits.
// After a close frame, or a failed write, it closes the connection.
func (c *conn) writeLoop() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.writing = false
			c.queue = nil // an idle connection keeps no queue
			done := c.closing
			c.mu.Unlock()
			if done {
				c.closeNet()
			}
			return
		}
		m := c.queue[0]
		c.queue[0] = outMsg{}
		c.queue = c.queue[1:]
		c.queued -= len(m.data)
		c.mu.Unlock()

		deadline := time.Now().Add(c.s.cfg.WriteTimeout)
		var err error
		switch m.kind {
		case msgText:
			c.ws.SetWriteDeadline(deadline)
			err = c.ws.WriteMessage(websocket.TextMessage, m.data)
		case msgPing:
			err = c.ws.WriteControl(websocket.PingMessage, nil, deadline)
		case msgClose:
			err = c.ws.WriteControl(websocket.CloseMessage, m.data, deadline)
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.s.metrics.err(errKindWrite)
				c.s.log.Debug("write failed", "ip", c.ip, "err", err)
			}
			c.mu.Lock()
			c.queue, c.queued, c.closing, c.writing = nil, 0, true, false
			c.mu.Unlock()
			c.closeNet()
			return
		}
	}
}

// readLoop reads and handles frames until the connection fails or is
// closed, then removes the connection's registration.
func (c *conn) readLoop() {
	s := c.s
	defer s.dropConn(c)
	defer func() {
		// Unless a close frame is on its way (its writer closes the
		// socket once it is written), close the socket now.
		c.mu.Lock()
		pending := c.closing && c.writing
		c.closing = true
		c.mu.Unlock()
		if !pending {
			c.closeNet()
		}
	}()
	c.ws.SetPongHandler(func(string) error {
		c.touch()
		return c.ws.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	})
	for {
		if err := c.ws.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout)); err != nil {
			return
		}
		_, r, err := c.ws.NextReader()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.metrics.err(errKindReadTimeout)
				s.log.Debug("read timeout", "ip", c.ip)
			}
			return
		}
		c.touch()
		bp := s.getBuf()
		n, tooBig, err := readFrame(r, *bp)
		if err != nil {
			s.putBuf(bp)
			return
		}
		if !s.allow(c) {
			s.putBuf(bp)
			s.metrics.err(errKindRateLimited)
			s.metrics.rateLimited.Inc()
			s.log.Info("closing connection: message rate exceeded", "ip", c.ip)
			c.closeWith(
				outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: ErrTextRateLimited})},
				outMsg{kind: msgClose, data: websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "rate limit exceeded")},
			)
			return
		}
		if tooBig {
			s.putBuf(bp)
			s.metrics.err(errKindTooLarge)
			s.metrics.msg("invalid")
			s.log.Info("closing connection: frame too large", "ip", c.ip, "limit", s.cfg.MaxFrame)
			c.closeWith(
				outMsg{kind: msgText, data: s.frameErr},
				outMsg{kind: msgClose, data: websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "frame too large")},
			)
			return
		}
		// Decoding and handling run on one of the server's workers,
		// while this goroutine waits: its stack stays as shallow as a
		// blocked read needs, which is most of what an idle connection
		// costs.
		select {
		case s.jobs <- job{c: c, buf: bp, n: n}:
		case <-s.ctx.Done():
			s.putBuf(bp)
			return
		}
		<-c.done
	}
}

// job is one received frame for a worker.
type job struct {
	c   *conn
	buf *[]byte
	n   int
}

// workLoop decodes and handles frames for every connection. A job, once
// taken, is always finished and acknowledged on its conn's done channel.
func (s *Server) workLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.jobs:
			s.process(j.c, (*j.buf)[:j.n])
			s.putBuf(j.buf)
			j.c.done <- struct{}{}
		}
	}
}

func (s *Server) process(c *conn, frame []byte) {
	m, err := protocol.DecodeClientMessage(frame)
	if err != nil {
		s.metrics.msg("invalid")
		s.metrics.err(errKindInvalid)
		c.send(outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: protocol.ErrTextInvalidPrefix + err.Error()})})
		return
	}
	s.handle(c, m)
}

// readFrame reads one message into buf (len MaxFrame+1). tooBig reports a
// message longer than MaxFrame; it is not read further.
func readFrame(r io.Reader, buf []byte) (n int, tooBig bool, err error) {
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return n, false, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, true, nil
}

func (s *Server) getBuf() *[]byte {
	if v := s.bufs.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, s.cfg.MaxFrame+1)
	return &b
}

func (s *Server) putBuf(b *[]byte) { s.bufs.Put(b) }

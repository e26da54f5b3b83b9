package rendezvous

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

type msgKind uint8

const (
	msgText msgKind = iota
	msgPing
	msgClose
	msgRaw // the rest of frames a direct write began (writeNow): written as they are
)

// outMsg is one frame waiting to be written. data may be shared by many
// connections (peer lists, pushed updates) and is never modified.
type outMsg struct {
	kind msgKind
	data []byte
}

// conn is one WebSocket client. One goroutine per connection waits for,
// reads and handles messages (wait and read, below); a writer goroutine
// exists only while frames are queued, so an idle connection owns no
// writer.
type conn struct {
	s    *Server
	ws   *websocket.Conn
	ip   string
	port string
	ipst *ipState

	lastReadNano atomic.Int64
	lingerUntil  atomic.Int64 // UnixNano, once lingerClose runs
	fc           *frameConn
	raw          syscall.RawConn // the TCP socket, for wait; nil for TLS
	lane         *loopConn       // the socket, when an event loop waits for it (raw is nil)

	// The wait goroutine's own (startReading, onReadable).
	readableFn func(fd uintptr) bool // c.onReadable, made once
	rbuf       *waitBuf              // what it read, while anyone uses it
	reading    bool                  // a reader has the conn (handBack)
	handing    atomic.Bool           // a reader handles what onReadable read, inside raw.Read

	// Guarded by Server.mu.
	peer    *peer        // current registration, nil when none
	expired bool         // the last registration expired (or was removed)
	used    bool         // a message was handled
	relay   *relayStream // a relay WebSocket: set by its first message, read without the lock by its own reader

	wdl int64 // UnixNano: the deadline of the last write (writeDeadline); the writer's

	mu        sync.Mutex
	queue     []outMsg
	queued    int  // bytes in queue
	writing   bool // a writer goroutine is running
	held      bool // the event loop handles a message: it writes the answer (releaseWrites)
	closing   bool // a close frame is queued; accept nothing more
	closeSent bool // the queued close frame is written
	readDone  bool // the reader has ended (close frame, EOF, error)
	netOnce   sync.Once
}

func (c *conn) touch()              { c.lastReadNano.Store(time.Now().UnixNano()) }
func (c *conn) lastRead() time.Time { return time.Unix(0, c.lastReadNano.Load()) }

// closeNet closes the socket. Close waits until nothing uses the
// socket, and while a reader handles what the waiting goroutine read,
// that goroutine is inside raw.Read (onReadable): the caller may be the
// reader itself, so the socket is then closed on another goroutine,
// once the reader is done.
func (c *conn) closeNet() {
	c.netOnce.Do(func() {
		if c.handing.Load() {
			go c.ws.NetConn().Close()
			return
		}
		c.ws.NetConn().Close()
	})
}
func (c *conn) abort()        { c.closeNet() }
func (c *conn) send(m outMsg) { c.enqueue(false, m) }

// closeWith queues ms, the last of them a close frame, and closes the
// connection once that is written and the client's answer read (see
// lingerClose). From now on the client's messages are discarded unread.
func (c *conn) closeWith(ms ...outMsg) {
	c.fc.draining.Store(true)
	c.enqueue(true, ms...)
}

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
	if !c.writing && !c.held {
		c.writing = true
		c.s.writers.run(c.s.ctx, &c.s.wg, c)
	}
}

// directWriteMax bounds the frames releaseWrites writes itself.
const directWriteMax = 4 << 10

// holdWrites keeps what is queued from now on for releaseWrites: the
// event loop is about to handle a message of c's.
func (c *conn) holdWrites() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// releaseWrites writes, on the event loop, the frames queued since
// holdWrites (the answer to the message it handled, and anything else
// queued meanwhile), as far as the socket takes them at once without
// waiting; a writer goroutine writes whatever is left. Writing small
// answers here spares waking a writer for each (issue 13).
func (c *conn) releaseWrites() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	if c.writing || len(c.queue) == 0 {
		return
	}
	for !c.closing && len(c.queue) > 0 && c.queue[0].kind == msgText && len(c.queue[0].data) <= directWriteMax {
		m := c.queue[0]
		c.queue[0] = outMsg{}
		c.queue = c.queue[1:]
		c.queued -= len(m.data)
		if rest := c.writeNow(m.data); rest != nil {
			if r := c.s.rawWrites; r != nil {
				r.Add(1)
			}
			c.queue = append([]outMsg{{kind: msgRaw, data: rest}}, c.queue...)
			c.queued += len(rest)
			break
		}
	}
	if len(c.queue) == 0 {
		c.queue = nil
		return
	}
	c.writing = true
	c.s.writers.run(c.s.ctx, &c.s.wg, c)
}

// writeNow writes a text frame holding data to the socket, as much as
// it takes without waiting, and returns the frame's bytes it did not
// take (nil once all are written). A failed write leaves them all: the
// writer meets the error again and ends the connection.
func (c *conn) writeNow(data []byte) (rest []byte) {
	var hb [4]byte
	hdr := append(hb[:0], 0x81)
	if len(data) < 126 {
		hdr = append(hdr, byte(len(data)))
	} else {
		hdr = append(hdr, 126, byte(len(data)>>8), byte(len(data)))
	}
	n, err := c.lane.tryWrite(hdr, data)
	if err == nil && n == len(hdr)+len(data) {
		return nil
	}
	frame := append(hdr, data...)
	return frame[n:]
}

// Bounds of a lingering close.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// errLingerBytes ends a lingering close whose client sent lingerBytes.
var errLingerBytes = errors.New("rendezvous: client sent too much after the close frame")

// lingerClose runs once our close frame is written. RFC 6455 section 7.1.1:
// the server closes the TCP connection once it has both sent and received
// a close frame. If the reader has already ended (the client's close
// frame, EOF or an error came first), that is now. Otherwise the socket
// is half-closed (FIN after everything written) and the reader, which
// discards data messages since closeWith, goes on until the client's
// close frame or EOF arrives, for at most lingerTimeout and lingerBytes;
// its end (conn.end) closes the socket. A well-behaved client answers at
// once, so the connection ends in one round trip.
//
// Closing at once with unread input instead makes the kernel answer with
// a reset, which can destroy the error and close frame before the client
// reads them (RFC 7230 section 6.6): a client cut off for a flood or an
// oversized frame would not learn why.
func (c *conn) lingerClose() {
	c.mu.Lock()
	readDone := c.readDone
	c.mu.Unlock()
	if readDone {
		c.closeNet()
		return
	}
	nc := c.fc.Conn // the socket itself: frameConn hides CloseWrite
	until := time.Now().Add(lingerTimeout)
	c.lingerUntil.Store(until.UnixNano())
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || nc.SetReadDeadline(until) != nil {
		c.closeNet()
		return
	}
	c.mu.Lock()
	c.closeSent = true
	readDone = c.readDone
	c.mu.Unlock()
	if readDone { // the reader ended meanwhile, seeing closeSent false
		c.closeNet()
	}
}

// writeDeadline returns the deadline of a write starting now: WriteTimeout
// from now, or the deadline the last write had while that is less than
// writeDeadlineReuse older. Reusing it spares the timer update of a new
// deadline (frameConn.SetWriteDeadline) for every frame of a burst.
func (c *conn) writeDeadline() time.Time {
	now := time.Now().UnixNano()
	if now+int64(c.s.cfg.WriteTimeout-writeDeadlineReuse) > c.wdl {
		c.wdl = now + int64(c.s.cfg.WriteTimeout)
	}
	return time.Unix(0, c.wdl)
}

// writeDeadlineReuse is how much shorter than WriteTimeout a write's
// deadline may be.
const writeDeadlineReuse = time.Second

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
				c.lingerClose()
			}
			return
		}
		m := c.queue[0]
		c.queue[0] = outMsg{}
		c.queue = c.queue[1:]
		c.queued -= len(m.data)
		c.mu.Unlock()

		deadline := c.writeDeadline()
		var err error
		switch m.kind {
		case msgText:
			c.ws.SetWriteDeadline(deadline)
			err = c.ws.WriteMessage(websocket.TextMessage, m.data)
		case msgPing:
			err = c.ws.WriteControl(websocket.PingMessage, nil, deadline)
		case msgClose:
			err = c.ws.WriteControl(websocket.CloseMessage, m.data, deadline)
		case msgRaw:
			if err = c.fc.SetWriteDeadline(deadline); err == nil {
				_, err = c.fc.Conn.Write(m.data)
			}
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

// An idle connection costs little because of how it waits. Its one
// goroutine (startReading) parks in a readiness check on the socket
// that is only a few frames deep, so its stack stays at the 2 KiB a
// goroutine starts with. When bytes arrive it reads them (onReadable),
// handles heartbeats itself, and hands the rest to a pooled reader
// goroutine, which has gorilla read and handle the messages on its own,
// already grown stack, asking the waiting goroutine for more bytes
// whenever a message is half read. (Parked inside gorilla's reader, a
// goroutine is about 1.8 KiB deep and grows to 4 KiB, which the runtime
// never shrinks back; reading on a fresh goroutine per message would
// pay for growing its stack every time instead.) A client that sends
// half a frame holds one reader until the sweep ends it, ReadTimeout
// after its last message, as it held its own goroutine before.
//
// The wait has no deadline: the sweep ends silent connections
// (Server.sweep). A read deadline would wake every idle connection once
// per ReadTimeout, however often it sends heartbeats, and handling that
// wake-up grew the goroutine's stack to 4 KiB for good.
//
// The wait may trust the socket only when nothing is buffered above it:
// frameConn hands gorilla the bytes of one frame at a time, so once a
// message is read to its end, gorilla's buffer is empty, and a reader
// is done only once it has taken every byte the waiting goroutine read
// (frameConn.pend). A TLS conn buffers whole records itself, so there
// the goroutine reads directly.

// startReading runs c's goroutine; the caller has counted it in s.wg.
// Nothing deep runs on this stack before the end.
func (c *conn) startReading() {
	if c.raw == nil {
		for c.readMessage() {
		}
		if c.relay != nil {
			c.s.relayPump(c)
		}
		c.end()
		return
	}
	c.readableFn = c.onReadable
	for {
		// raw.Read returns nil only once a reader has ended the
		// connection or handed it to relayPump (onReadable).
		err := c.raw.Read(c.readableFn)
		if err == nil {
			break
		}
		if !c.reading {
			c.readFailed(err)
			break
		}
		// A reader waits for the rest of a message: it meets the
		// error (and counts it) and ends.
		c.fc.perr = err
		for c.handBack() == turnMore {
		}
		c.reading = false
		break
	}
	c.releaseBuf()
	c.fc.turn = nil // from now on (relayPump) gorilla reads the socket itself
	if c.relay != nil {
		c.s.relayPump(c)
	}
	c.end()
}

// A heartbeat, the frame every registered client sends every 10 s, is
// read and handled by the waiting goroutine itself when it arrives as
// its own, canonical frame: no hand-over to a reader and back, no
// gorilla, no JSON (issue 13). The frame is 26 bytes: FIN and text, a
// masked 20-byte length, the mask, and {"type":"heartbeat"} masked.
const heartbeatFrameLen = 2 + 4 + len(heartbeatJSON)

// waitReadSize is how much the waiting goroutine reads at once: a
// heartbeat, a register or a list_peers request comes in one read.
const waitReadSize = 2048

type waitBuf [waitReadSize]byte

// waitBufs lend the waiting goroutines their read buffers, so that an
// idle connection owns none.
var waitBufs = sync.Pool{New: func() any { return new(waitBuf) }}

func (c *conn) releaseBuf() {
	if c.rbuf != nil {
		waitBufs.Put(c.rbuf)
		c.rbuf = nil
	}
}

// What a reader tells the waiting goroutine on frameConn.turn, and the
// waiting goroutine's answer to turnMore.
const (
	turnMore int8 = iota // pend is used up in the middle of a message: read more
	turnDone             // every message read is handled: wait for the next
	turnEnd              // the connection is to end, or is a relay now (relayPump)
	turnGo               // the waiting goroutine's answer: pend or perr is set
)

// onReadable is called by the waiting goroutine's raw.Read whenever the
// socket may be readable. Every read of the socket is made here, in
// raw.Read's callback, with one read(2) of up to waitReadSize bytes:
// heartbeat frames at its start are handled at once, and everything
// else (with the end of the stream and errors, as frameConn.perr) is
// handed to a pooled reader, which gorilla reads it from (frameConn.Read)
// while this goroutine waits (handBack). A reader that needs more of a
// message asks for it (turnMore); a reader done with all it was given
// answers turnDone, and one that ends the connection turnEnd, the only
// case where onReadable returns true.
//
// A read that returns fewer bytes than asked emptied the socket, so after
// it onReadable returns false without reading again (what costs a second
// read(2) that fails with EAGAIN): raw.Read then waits for the next
// readiness notification, which the kernel sends for any byte that
// arrives after the read. This holds only because the bytes are handled
// inside raw.Read: a new raw.Read starts by discarding the notifications
// seen so far (pollDesc.prepareRead) and must read before it waits. So a
// message that comes in one piece costs one read(2); the reader never
// touches the socket, whose read lock raw.Read holds meanwhile.
func (c *conn) onReadable(fd uintptr) bool {
	for {
		if c.rbuf == nil {
			c.rbuf = waitBufs.Get().(*waitBuf)
		}
		n, errno := readNow(fd, c.rbuf[:])
		if r := c.s.waitReads; r != nil {
			r.Add(1)
		}
		if errno != 0 && wouldBlock(errno) {
			c.releaseBuf()
			return false
		}
		emptied := n < len(c.rbuf)
		switch {
		case errno != 0:
			c.fc.perr = os.NewSyscallError("read", errno)
		case n == 0:
			c.fc.perr = io.EOF
		default:
			b := c.rbuf[:n]
			if !c.reading {
				b = c.heartbeats(b)
			}
			if len(b) == 0 {
				if emptied {
					c.releaseBuf()
					return false
				}
				continue
			}
			c.fc.pend = b
		}
		c.handing.Store(true)
		turn := c.handBack()
		c.handing.Store(false)
		if turn == turnEnd || c.fc.perr != nil {
			c.reading = false
			// relayPump reads what is left before the socket.
			c.fc.pend = bytes.Clone(c.fc.pend)
			c.releaseBuf()
			return true
		}
		c.reading = turn == turnMore
		if emptied {
			c.releaseBuf()
			return false
		}
	}
}

// heartbeats handles the heartbeat frames at the start of b and returns
// the rest.
func (c *conn) heartbeats(b []byte) []byte {
	for len(b) >= heartbeatFrameLen && isHeartbeatFrame(b[:heartbeatFrameLen]) && !c.fc.draining.Load() {
		c.s.fastHeartbeat(c)
		b = b[heartbeatFrameLen:]
	}
	return b
}

// inline handles, on the event loop, the messages at the start of b
// that need no reader, and returns the rest for one: heartbeats, and
// each other message that comes in a short frame of its own and that
// decodeFast takes, but list_peers, whose answer can take milliseconds
// to build. It is readMessage and process for those, with no gorilla
// and no goroutine but the loop's.
func (c *conn) inline(b []byte) []byte {
	s := c.s
	for len(b) >= 6 && !c.fc.draining.Load() {
		if len(b) >= heartbeatFrameLen && isHeartbeatFrame(b[:heartbeatFrameLen]) {
			s.fastHeartbeat(c)
			b = b[heartbeatFrameLen:]
			continue
		}
		// FIN, text, no extension bits; masked, with a 7-bit length.
		n := int(b[1] & 0x7f)
		if b[0] != 0x81 || b[1]&0x80 == 0 || n >= 126 || len(b) < 6+n || n > s.cfg.MaxFrame {
			break
		}
		var buf [125]byte
		payload := buf[:n]
		for i := range payload {
			payload[i] = b[6+i] ^ b[2+i%4]
		}
		m, ok := decodeFast(payload)
		if _, list := m.(*protocol.ListPeers); !ok || list {
			break
		}
		b = b[6+n:]
		c.touch()
		if !s.allow(c) {
			s.rateLimited(c) // the rest is drained by a reader
			continue
		}
		c.holdWrites()
		s.handle(c, m)
		c.releaseWrites()
	}
	return b
}

// handBack gives what frameConn holds (pend or perr) to the reader,
// starting one or answering the one that asked for more, and returns
// the reader's next turn. The reader and the waiting goroutine take
// turns on one unbuffered channel: at any time exactly one of them
// sends and the other receives.
func (c *conn) handBack() int8 {
	if c.reading {
		c.fc.turn <- turnGo
	} else {
		c.reading = true
		c.s.dispatch(c)
	}
	return <-c.fc.turn
}

// isHeartbeatFrame reports whether b, heartbeatFrameLen bytes, is a
// masked text frame holding exactly heartbeatJSON.
func isHeartbeatFrame(b []byte) bool {
	if b[0] != 0x81 || b[1] != 0x80|byte(len(heartbeatJSON)) {
		return false
	}
	for i := range len(heartbeatJSON) {
		if b[6+i]^b[2+i%4] != heartbeatJSON[i] {
			return false
		}
	}
	return true
}

// fastHeartbeat handles a heartbeat taken off the socket by
// onReadable, as readMessage and handle would.
// One clock reading serves all three uses.
func (s *Server) fastHeartbeat(c *conn) {
	now := time.Now()
	c.lastReadNano.Store(now.UnixNano())
	if lim := c.ipst.lim; lim != nil && !lim.AllowN(now, 1) {
		s.rateLimited(c)
		return
	}
	s.heartbeat(c, now)
}

// dispatch gives c to a pooled reader.
func (s *Server) dispatch(c *conn) { s.readers.run(s.ctx, &s.wg, c) }

// read is a pooled reader's work: c has input (onReadable, or the
// event loop).
func (s *Server) read(c *conn) {
	if c.lane != nil {
		s.readLane(c)
		return
	}
	turn := turnEnd
	if c.readAvailable() {
		turn = turnDone
	}
	c.fc.turn <- turn
}

// readLane reads c, which an event loop woke, until the loop can have it
// back (loopConn.park), or until it ends or becomes a relay stream.
func (s *Server) readLane(c *conn) {
	for c.readAvailable() {
		if c.lane.park() {
			return
		}
	}
	if c.relay != nil {
		s.relayPump(c)
	}
	c.end()
}

// readAvailable reads and handles messages until none is partly read. It
// reports false when the connection is to end.
func (c *conn) readAvailable() bool {
	for {
		if !c.readMessage() {
			return false
		}
		if c.fc.atBoundary() {
			return true
		}
	}
}

// end closes c and removes its registration once its reader has ended.
// A close frame that is queued but not yet written is left to its
// writer, which closes the socket once it is written (lingerClose).
func (c *conn) end() {
	c.mu.Lock()
	pending := c.closing && !c.closeSent
	c.closing = true
	c.readDone = true
	c.mu.Unlock()
	if !pending {
		c.closeNet()
	}
	c.s.dropConn(c)
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.s.metrics.err(errKindReadTimeout)
		c.s.log.Debug("read timeout", "ip", c.ip)
	}
}

// readMessage reads and handles one message. It reports false when the
// connection is to end.
func (c *conn) readMessage() bool {
	s := c.s
	_, r, err := c.ws.NextReader()
	if err != nil {
		c.readFailed(err)
		return false
	}
	if c.fc.draining.Load() {
		// Our close frame is on its way: discard what the client
		// still sends (the next NextReader skips it) until its close
		// frame or EOF.
		return true
	}
	bp := s.getBuf()
	defer s.putBuf(bp)
	n, tooBig, err := readFrame(r, *bp)
	if err != nil {
		return false
	}
	c.touch() // the message is complete: ReadTimeout counts from here
	if !s.allow(c) {
		s.rateLimited(c)
		return true // drain until the client's close frame
	}
	if tooBig {
		s.metrics.err(errKindTooLarge)
		s.metrics.msg("invalid")
		s.log.Info("closing connection: frame too large", "ip", c.ip, "limit", s.cfg.MaxFrame)
		c.closeWith(
			outMsg{kind: msgText, data: s.frameErr},
			outMsg{kind: msgClose, data: websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "frame too large")},
		)
		return true // drain: the next NextReader skips the rest
	}
	if c.lane != nil {
		// As on the event loop (inline): the answer is written here.
		c.holdWrites()
		s.process(c, (*bp)[:n])
		c.releaseWrites()
	} else {
		s.process(c, (*bp)[:n])
	}
	// A relay message hands the connection to relayPump (startReading).
	return c.relay == nil
}

// rateLimited closes c, whose address sent more than its message rate.
func (s *Server) rateLimited(c *conn) {
	s.metrics.err(errKindRateLimited)
	s.metrics.rateLimited.Inc()
	s.log.Info("closing connection: message rate exceeded", "ip", c.ip)
	c.closeWith(
		outMsg{kind: msgText, data: s.frames.rateLimited},
		outMsg{kind: msgClose, data: s.frames.rateLimitedClose},
	)
}

func (s *Server) process(c *conn, frame []byte) {
	if m, ok := decodeFast(frame); ok {
		s.handle(c, m)
		return
	}
	m, err := protocol.DecodeClientMessage(frame)
	if err != nil {
		s.metrics.msg("invalid")
		s.metrics.err(errKindInvalid)
		c.send(outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: protocol.ErrTextInvalidPrefix + err.Error()})})
		return
	}
	s.handle(c, m)
}

// frameConn is the conn gorilla reads from. Each Read returns bytes of
// one WebSocket frame only, so that nothing of a next frame waits in
// gorilla's buffer when a message has been read to its end (see startReading).
// A client frame's header is 6 to 14 bytes (clients must mask); the
// first read of a header asks for 6, the rest once the length is known.
type frameConn struct {
	net.Conn
	pend     []byte    // read from the socket by onReadable, not yet by gorilla
	perr     error     // how the socket's stream ended, once onReadable saw it
	turn     chan int8 // to ask onReadable for more (handBack); nil: read the socket
	wdl      int64     // UnixNano: the write deadline last set on the socket
	hdr      [14]byte
	draining atomic.Bool // a close frame is queued: count what is read
	drained  uint32      // bytes read while draining (reader only)
	nhdr     int         // header bytes seen
	need     int         // header length, once nhdr >= 2
	left     uint64      // payload bytes of the current frame still to come
}

// SetWriteDeadline sets t on the socket unless it is set already:
// gorilla sets the deadline before every write, and writeDeadline gives
// one deadline to all the writes of a burst. Writes are serialized by
// gorilla, and nothing else sets the write deadline after the upgrade.
func (f *frameConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() && t.UnixNano() == f.wdl {
		return nil
	}
	f.wdl = t.UnixNano()
	return f.Conn.SetWriteDeadline(t)
}

func (f *frameConn) atBoundary() bool { return f.nhdr == 0 && f.left == 0 && len(f.pend) == 0 }

func (f *frameConn) Read(p []byte) (int, error) {
	var limit uint64
	switch {
	case f.left > 0:
		limit = f.left
	case f.nhdr < 2:
		limit = uint64(6 - f.nhdr)
	default:
		limit = uint64(f.need - f.nhdr)
	}
	if uint64(len(p)) > limit {
		p = p[:limit]
	}
	var n int
	var err error
	if len(f.pend) == 0 && f.turn != nil && f.perr == nil {
		f.turn <- turnMore
		<-f.turn
	}
	switch {
	case len(f.pend) > 0:
		n = copy(p, f.pend)
		f.pend = f.pend[n:]
	case f.turn != nil:
		err = f.perr
	default:
		n, err = f.Conn.Read(p)
	}
	f.advance(p[:n])
	if err == nil && f.draining.Load() {
		f.drained += uint32(n)
		if f.drained > lingerBytes {
			err = errLingerBytes
		}
	}
	return n, err
}

// advance follows the frame structure over b, bytes just read.
func (f *frameConn) advance(b []byte) {
	for len(b) > 0 {
		if f.left > 0 {
			k := min(f.left, uint64(len(b)))
			f.left -= k
			b = b[k:]
			continue
		}
		if f.nhdr < len(f.hdr) {
			f.hdr[f.nhdr] = b[0]
		}
		f.nhdr++
		b = b[1:]
		if f.nhdr == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
		}
		if f.nhdr >= 2 && f.nhdr == f.need {
			switch l := f.hdr[1] & 0x7f; l {
			case 126:
				f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
			case 127:
				f.left = binary.BigEndian.Uint64(f.hdr[2:10])
			default:
				f.left = uint64(l)
			}
			f.nhdr, f.need = 0, 0
		}
	}
}

// hijacker wraps the ResponseWriter gorilla upgrades, so that the conn it
// takes over is a frameConn.
type hijacker struct {
	http.ResponseWriter
	fc *frameConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if pc, ok := nc.(*prefixConn); ok && len(pc.prefix) == 0 {
		// Declined by Serve's fast path, and net/http has read what
		// it had read: the socket itself, which startConn looks for.
		nc = pc.Conn
	}
	h.fc = &frameConn{Conn: nc}
	return h.fc, brw, nil
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

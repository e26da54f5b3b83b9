package rendezvous

// Cross-server relayed streams (cluster mode; the design and its bounds
// are in the package doc of internal/cluster, "Relayed streams").
//
// A stream between A, registered here, and B, registered with server S,
// is one relayStream on each server, with the same id: here it holds A's
// registration and relay WebSocket, on S B's, and x says where the other
// half is. Each server runs, for its half, the pump it runs for a local
// stream (the WebSocket's reader: frames out, here onto NATS) and a
// writer goroutine (frames in from NATS, onto the WebSocket). Accept
// and idle timeouts, per-peer limits and rates are applied on each
// server to its own registration, as for a local stream.
//
// Flow control is by credit, per direction: a receiver announces a
// window (Config.RelayWindow) when the stream opens, and the sender
// publishes a frame only while the bytes it sent stay within what the
// receiver granted; otherwise its pump waits, reads nothing more from
// its WebSocket, and TCP slows the client down. The receiver queues
// what arrives (never more than its window: more is a protocol error)
// and grants more as its writer's WebSocket writes complete, a quarter
// window at a time. So a slow reader holds at most one window on its
// server, and nothing on the other.
//
// Locks: Server.mu for the stream's state (as for local streams); x.mu,
// never held across anything that blocks, for the credit and the queue
// between the NATS handler, the pump and the writer. Control messages
// sent under Server.mu go through the Node's queue (QueueRelay), which
// never blocks; the pump and the writer publish data and credits
// themselves. A close is queued only after the pump's last publish of
// data has returned, so it follows the data.

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/bootstrap-server/internal/cluster"
	"github.com/parlance-chat/parlance/protocol"
)

// xstream is the cross-server part of a relayStream.
type xstream struct {
	server  string // the other server's id
	subject string // where its half of the stream is addressed
	window  uint64 // this server's receive window (Config.RelayWindow)

	// gen is the other server's generation the stream lives on (0:
	// not known yet); guarded by Server.mu.
	gen uint64

	mu sync.Mutex
	// started: the writer runs (written under Server.mu and mu).
	started bool

	// Sending (the pump): sent bytes so far, the other's grant so far,
	// and its window (0 until known).
	sent, limit, peerWindow uint64
	credit                  chan struct{} // 1-buffered: limit grew

	// Receiving (the NATS handler queues, the writer writes): offsets
	// received, written and granted so far.
	queue                   [][]byte
	recvd, written, granted uint64
	wake                    chan struct{} // 1-buffered: queue grew
	done                    bool          // the writer has ended: drop what comes
	flush                   []outMsg      // after the queue is written: the frames that end the stream
}

func newXstream(server, subject string, window uint64) *xstream {
	return &xstream{
		server: server, subject: subject, window: window,
		granted: window, // the window announced
		credit:  make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// xconnectLocked handles relay_connect from A (from) to to, which is
// registered with another server: it asks that server for the stream.
func (s *Server) xconnectLocked(c *conn, from, to *peer) {
	if !protocol.HasCap(to.info.Caps, protocol.CapRelay) {
		s.refuseRelayLocked(c, outcomeNoCap, ErrTextRelayNoCap)
		return
	}
	if s.cluster == nil || !s.clusterUp {
		s.refuseRelayLocked(c, outcomeUnreachable, ErrTextRelayServerUnreachable)
		return
	}
	if lim := s.cfg.RelayStreamsPerPeer; lim > 0 && len(from.relay.streams) >= lim {
		s.refuseRelayLocked(c, outcomeStreamLimit, fmt.Sprintf(ErrTextRelayTooManyStreams, lim))
		return
	}
	id, ok := s.newRelayIDLocked(c)
	if !ok {
		return
	}
	srv := to.remote.id
	x := newXstream(srv, s.cluster.RelaySubject(srv, id), uint64(s.cfg.RelayWindow))
	x.gen = s.xgens[srv]
	st := &relayStream{id: id, from: from, a: c, state: relayPending, ready: make(chan struct{}), x: x}
	s.addStreamLocked(st)
	from.relay.streams[st] = struct{}{}
	c.relay = st
	s.cluster.QueueRelay(srv, id, &cluster.RelayMsg{
		Type: cluster.RelayOpen, NS: from.ns.name, From: from.info.PeerID, To: to.info.PeerID, Window: x.window,
	})
	s.log.Debug("relay requested", "stream", id, "from", from.info.PeerID, "to", to.info.PeerID, "server", srv)
}

// addStreamLocked lists a new pending stream and starts its accept
// timeout.
func (s *Server) addStreamLocked(st *relayStream) {
	st.ctx, st.cancel = context.WithCancel(s.ctx)
	st.touch()
	s.relayStreams[st.id] = st
	if st.x != nil {
		s.xstreams.Store(st.id, st)
	}
	s.metrics.relayStreams.WithLabelValues(relayPending).Inc()
	st.timer = time.AfterFunc(s.cfg.RelayAcceptTimeout, func() { s.relayAcceptTimedOut(st) })
}

// relayMsg is the cluster.RelayHandler: what another server says about
// a stream. Data and credits take no Server.mu.
func (s *Server) relayMsg(id string, m *cluster.RelayMsg) {
	switch m.Type {
	case cluster.RelayData:
		s.xdata(id, m)
		return
	case cluster.RelayCredit:
		if st := s.xstream(id); st != nil && st.x.server == m.Server {
			x := st.x
			x.mu.Lock()
			x.limit = max(x.limit, m.Grant)
			x.mu.Unlock()
			signal(x.credit)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.Type {
	case cluster.RelayOpen:
		s.xopenLocked(id, m)
	case cluster.RelayAccept:
		s.xacceptedLocked(id, m)
	case cluster.RelayClose:
		s.xclosedLocked(id, m)
	}
}

func (s *Server) xstream(id string) *relayStream {
	v, ok := s.xstreams.Load(id)
	if !ok {
		return nil
	}
	return v.(*relayStream)
}

// xopenLocked handles A's server's request for a stream to B, registered
// here: it tells B (relay_incoming), or refuses for the reasons a local
// relay_connect would be refused for.
func (s *Server) xopenLocked(id string, m *cluster.RelayMsg) {
	if !s.xnoteGenLocked(m.Server, m.Gen) {
		return // its server has reconnected to NATS since, and ended it
	}
	refuse := func(outcome, text string) {
		s.log.Debug("relay refused", "stream", id, "server", m.Server, "outcome", outcome)
		s.cluster.QueueRelay(m.Server, id, &cluster.RelayMsg{
			Type: cluster.RelayClose, Code: websocket.ClosePolicyViolation, Reason: "relay refused", Error: text, Outcome: outcome,
		})
	}
	to := s.peersByID[m.To]
	switch {
	case s.closing || s.relayStreams[id] != nil:
		refuse(outcomeUnreachable, ErrTextRelayServerUnreachable)
		return
	case to == nil || to.remote != nil || to.ns.name != m.NS:
		refuse(outcomeUnknownPeer, ErrTextRelayUnknownPeer)
		return
	case to.relay == nil:
		refuse(outcomeNoCap, ErrTextRelayNoCap)
		return
	}
	if lim := s.cfg.RelayStreamsPerPeer; lim > 0 && len(to.relay.streams) >= lim {
		refuse(outcomeStreamLimit, fmt.Sprintf(ErrTextRelayPeerTooManyStreams, lim))
		return
	}
	x := newXstream(m.Server, s.cluster.RelaySubject(m.Server, id), uint64(s.cfg.RelayWindow))
	x.gen, x.peerWindow, x.limit = m.Gen, m.Window, m.Window
	st := &relayStream{id: id, to: to, state: relayPending, ready: make(chan struct{}), x: x}
	s.addStreamLocked(st)
	to.relay.streams[st] = struct{}{}
	to.conn.send(outMsg{kind: msgText, data: encodeServer(&protocol.RelayIncoming{Stream: id, PeerID: m.From})})
	s.log.Debug("relay requested", "stream", id, "from", m.From, "to", to.info.PeerID, "server", m.Server)
}

// xacceptedLocked handles B's server's word that B accepted: the stream
// is open, and A's writer tells A (relay_ready).
func (s *Server) xacceptedLocked(id string, m *cluster.RelayMsg) {
	s.xnoteGenLocked(m.Server, m.Gen)
	st := s.relayStreams[id]
	if st == nil || st.x == nil || st.x.server != m.Server || st.state != relayPending || st.a == nil {
		if st == nil {
			// Ended here meanwhile (its close is on the way, or was
			// lost): say it again.
			s.cluster.QueueRelay(m.Server, id, &cluster.RelayMsg{
				Type: cluster.RelayClose, Code: websocket.CloseGoingAway, Reason: closeReasonPeerGone, Outcome: outcomeCancelled,
			})
		}
		return
	}
	x := st.x
	x.gen = m.Gen
	st.timer.Stop()
	st.state = relayOpen
	s.metrics.relayStreams.WithLabelValues(relayPending).Dec()
	s.metrics.relayStreams.WithLabelValues(relayOpen).Inc()
	st.touch()
	st.timer = time.AfterFunc(s.cfg.RelayIdleTimeout, func() { s.relayIdleCheck(st) })
	x.mu.Lock()
	x.peerWindow, x.limit = m.Window, max(x.limit, m.Window)
	x.mu.Unlock()
	signal(x.credit)
	s.xstartLocked(st, st.a)
	s.log.Debug("relay open", "stream", st.id, "server", m.Server)
}

// xclosedLocked handles the end of the other half: this half ends with
// the frames it names. When the writer runs, it writes what is queued
// first (the other side's last bytes), then those frames.
func (s *Server) xclosedLocked(id string, m *cluster.RelayMsg) {
	st := s.relayStreams[id]
	if st == nil || st.x == nil || st.x.server != m.Server {
		return
	}
	var ms []outMsg
	if m.Error != "" {
		ms = append(ms, outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: m.Error})})
	}
	ms = append(ms, closeFrame(m.Code, m.Reason))
	c := st.a
	if c == nil {
		c = st.b
	}
	x := st.x
	if c != nil && x.started {
		x.mu.Lock()
		x.flush = ms
		x.mu.Unlock()
		c = nil // the writer closes it
	}
	s.retireStreamLocked(st, knownOutcome(m.Outcome))
	if c != nil {
		c.closeWith(ms...)
	}
	s.log.Debug("relay ended", "stream", st.id, "outcome", m.Outcome, "by", m.Server)
}

// knownOutcome keeps the outcome label to the values this server counts.
func knownOutcome(o string) string {
	switch o {
	case outcomeUnknownPeer, outcomeNoCap, outcomeUnreachable, outcomeStreamLimit, outcomeAcceptTimeout,
		outcomeCancelled, outcomeClosed, outcomeIdle, outcomePeerLeft, outcomeFrameTooLarge, outcomeProtocol,
		outcomeServerLost, outcomeNATSDown, outcomeLost:
		return o
	}
	return outcomeClosed
}

// xtellEndLocked tells the other server that st ended here, with the
// frames ms this server sends its own side (the last a close frame).
func (s *Server) xtellEndLocked(st *relayStream, outcome string, ms []outMsg) {
	m := &cluster.RelayMsg{Type: cluster.RelayClose, Code: websocket.CloseGoingAway, Reason: closeReasonPeerGone, Outcome: outcome}
	for _, om := range ms {
		switch om.kind {
		case msgText:
			if e, err := protocol.DecodeServerMessage(om.data); err == nil {
				if e, ok := e.(*protocol.Error); ok {
					m.Error = e.Message
				}
			}
		case msgClose:
			if len(om.data) >= 2 {
				m.Code, m.Reason = int(binary.BigEndian.Uint16(om.data)), string(om.data[2:])
			}
		}
	}
	s.cluster.QueueRelay(st.x.server, st.id, m)
}

// xstartLocked starts the writer of st's half here, onto c.
func (s *Server) xstartLocked(st *relayStream, c *conn) {
	if s.closing {
		s.endStreamLocked(st, outcomeServerLost, nil, closeFrame(websocket.CloseGoingAway, closeReasonPeerGone))
		return
	}
	st.x.mu.Lock()
	st.x.started = true
	st.x.mu.Unlock()
	s.wg.Go(func() { s.xwrite(st, c) }) // under s.mu while not closing: Shutdown's Wait sees it
}

// xwrite is the writer of st's half here: relay_ready to c (B's half
// first tells A's server that B accepted), then the frames from the
// other server, granting credit as they are written.
func (s *Server) xwrite(st *relayStream, c *conn) {
	x := st.x
	defer s.xwriterDone(x)
	if st.ctx.Err() != nil { // ended before it started
		close(st.ready)
		return
	}
	if c == st.b {
		if err := s.cluster.SendRelay(x.server, st.id, &cluster.RelayMsg{Type: cluster.RelayAccept, Window: x.window}); err != nil {
			close(st.ready)
			s.xfail(st, outcomeNATSDown)
			return
		}
	}
	c.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	err := c.ws.WriteMessage(websocket.TextMessage, encodeServer(&protocol.RelayReady{Stream: st.id}))
	close(st.ready)
	if err != nil {
		s.relayEnded(st, c, err)
		return
	}
	for {
		ended := st.ctx.Err() != nil
		x.mu.Lock()
		if len(x.queue) == 0 || (ended && x.flush == nil) {
			flush := x.flush
			x.mu.Unlock()
			if ended {
				if flush != nil {
					c.closeWith(flush...)
				}
				return
			}
			select {
			case <-x.wake:
			case <-st.ctx.Done():
			}
			continue
		}
		data := x.queue[0]
		x.queue[0] = nil
		x.queue = x.queue[1:]
		x.mu.Unlock()
		n := len(data)
		if !ended && s.throttle(st, n) != nil {
			ended = true // and write it all the same, if flushing
		}
		c.ws.SetWriteDeadline(time.Now().Add(s.cfg.RelayIdleTimeout))
		err := c.ws.WriteMessage(websocket.BinaryMessage, data)
		s.cm.relayBuffered.Sub(float64(n))
		if err != nil {
			s.relayEnded(st, c, err)
			return
		}
		s.metrics.relayBytes.Add(float64(n))
		s.cm.relayBytes.WithLabelValues("in").Add(float64(n))
		st.touch()
		// Grant a quarter window at a time. A sender waits only while
		// less than a frame of its grant is left, and a frame is at most
		// three quarters of the window (xforward), so once everything
		// sent is written a grant is due: it never waits for one that
		// does not come.
		x.mu.Lock()
		x.written += uint64(n)
		var grant uint64
		if x.written+x.window-x.granted >= x.window/4 {
			x.granted = x.written + x.window
			grant = x.granted
		}
		x.mu.Unlock()
		if grant != 0 && !ended {
			s.cluster.SendRelay(x.server, st.id, &cluster.RelayMsg{Type: cluster.RelayCredit, Grant: grant}) // NATS down: the stream ends anyway
		}
	}
}

// xwriterDone drops what is still queued once the writer has ended.
func (s *Server) xwriterDone(x *xstream) {
	x.mu.Lock()
	x.done = true
	left := 0
	for _, d := range x.queue {
		left += len(d)
	}
	x.queue = nil
	x.mu.Unlock()
	s.cm.relayBuffered.Sub(float64(left))
}

// xdata queues data from the other server for the writer. Data that is
// not where the stream stands (a message lost) or beyond this server's
// window ends the stream.
func (s *Server) xdata(id string, m *cluster.RelayMsg) {
	st := s.xstream(id)
	if st == nil {
		return // ended here; the other server has been told
	}
	x := st.x
	n := uint64(len(m.Data))
	x.mu.Lock()
	if x.done {
		x.mu.Unlock()
		return
	}
	if m.Offset != x.recvd || x.recvd+n > x.written+x.window || !x.started {
		x.mu.Unlock()
		s.log.Warn("relay: data lost or beyond the window", "stream", id, "server", x.server, "offset", m.Offset, "want", x.recvd, "bytes", n)
		s.xfail(st, outcomeLost)
		return
	}
	x.queue = append(x.queue, m.Data)
	x.recvd += n
	s.cm.relayBuffered.Add(float64(n)) // under mu: never behind the writer's Sub
	x.mu.Unlock()
	signal(x.wake)
}

// xforward sends a frame read from c (after room for the header) to the
// other server, once the receiver's window has room for it and it fits
// the rates of c's registration and the server's total.
func (s *Server) xforward(st *relayStream, c *conn, frame []byte) {
	x := st.x
	n := uint64(len(frame) - cluster.RelayDataHeader)
	x.mu.Lock()
	window := x.peerWindow
	x.mu.Unlock()
	if lim := window - window/4; n > lim {
		// The other server's window cannot take it (servers configured
		// with different relay frame limits): the receiver grants a
		// quarter window at a time, so a frame must fit in three.
		s.endRelay(st, c, outcomeFrameTooLarge, websocket.CloseMessageTooBig, fmt.Sprintf(closeReasonFrame, lim))
		return
	}
	var since time.Time
	for {
		x.mu.Lock()
		if x.sent+n <= x.limit {
			break
		}
		x.mu.Unlock()
		if since.IsZero() {
			since = time.Now()
			s.cm.relayWaits.Inc()
		}
		select {
		case <-x.credit:
		case <-st.ctx.Done():
			return
		}
	}
	off := x.sent
	x.sent += n
	x.mu.Unlock()
	if !since.IsZero() {
		s.cm.relayCreditWait.Add(time.Since(since).Seconds())
	}
	if s.throttle(st, int(n)) != nil {
		return
	}
	if err := s.cluster.SendRelayData(x.subject, off, frame); err != nil {
		s.xfail(st, outcomeNATSDown)
		return
	}
	s.cm.relayBytes.WithLabelValues("out").Add(float64(n))
	st.touch()
}

// xfail ends st for a failure between the servers: both sides get
// "peer connection lost".
func (s *Server) xfail(st *relayStream, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endStreamLocked(st, outcome, nil, closeFrame(websocket.CloseGoingAway, closeReasonPeerGone))
}

// xnoteGenLocked records server's generation gen. A newer one than known
// ends the streams that live on an older one (the server lost NATS and
// ended its halves meanwhile); it reports false for an older one, whose
// messages are stale.
func (s *Server) xnoteGenLocked(server string, gen uint64) bool {
	known := s.xgens[server]
	switch {
	case gen < known:
		return false
	case gen > known:
		s.xgens[server] = gen
		if known != 0 {
			s.xendServerLocked(server, func(x *xstream) bool { return x.gen != 0 && x.gen < gen }, outcomeServerLost)
		}
	}
	return true
}

// xendServerLocked ends the cross-server streams with server (every
// server: "") for which match holds.
func (s *Server) xendServerLocked(server string, match func(*xstream) bool, outcome string) {
	for _, st := range s.xstreamsLocked() {
		if (server == "" || st.x.server == server) && (match == nil || match(st.x)) {
			s.endStreamLocked(st, outcome, nil, closeFrame(websocket.CloseGoingAway, closeReasonPeerGone))
		}
	}
}

// xstreamsLocked returns the cross-server streams, sorted by id.
func (s *Server) xstreamsLocked() []*relayStream {
	m := make(map[*relayStream]struct{})
	for _, st := range s.relayStreams {
		if st.x != nil {
			m[st] = struct{}{}
		}
	}
	return sortedStreams(m)
}

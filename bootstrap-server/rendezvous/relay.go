package rendezvous

// The relay: a byte stream between two registered peers that both listed
// protocol.CapRelay, for peers that cannot reach each other directly.
//
// Each stream is a pair of WebSockets of their own (not the control
// connections): A's, opened with relay_connect, and B's, opened with
// relay_accept after B was told on its control connection. Both arrive
// through serveWebSocket like any connection, count against the
// per-address limits, and are read by the ordinary reader until their
// first message; handle then marks the conn as relayed (conn.relay) and
// its reader, instead of waiting for the next message, runs relayPump on
// the same goroutine for the rest of the connection's life.
//
// Each pump reads frames from its side and writes them to the other
// side's WebSocket itself, so TCP's backpressure reaches the sender: a
// receiver that does not read stalls the writer, which stops reading
// from the sender. Writers of one WebSocket never overlap: before
// relay_ready only the conn's own writeLoop writes text (refusals), B's
// pump writes relay_ready to both sides and only then closes ready, after
// which the other side's pump alone writes data frames; everything else
// is a control frame (ping, close), which gorilla allows at any time. So
// a stream ends with a close frame and a reason, never a text frame.
//
// Stream state changes (pending -> open -> ended) happen under Server.mu,
// which makes accepting, the accept timeout, the end of a registration
// and the close of either side exclusive. Timers are time.AfterFunc
// callbacks that only take Server.mu and queue frames; every stream's
// timer is stopped when it ends.
//
// In cluster mode, a stream whose ends are registered with different
// servers has a half on each (xrelay.go): there a writer goroutine, not
// the other side's pump, writes relay_ready and the data to the
// WebSocket, and the pump hands its frames to NATS.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/bootstrap-server/internal/cluster"
	"github.com/parlance-chat/parlance/protocol"
	"golang.org/x/time/rate"
)

// Error texts of relay refusals: each is sent as an error message, and
// the relay WebSocket is then closed (1008).
const (
	// ErrTextRelayBadToken: the token is not that of a current
	// registration that listed protocol.CapRelay.
	ErrTextRelayBadToken = "Unknown or expired relay token"
	// ErrTextRelayUnknownPeer: no registration with that peer_id in the
	// sender's namespace (or the sender itself).
	ErrTextRelayUnknownPeer = "Unknown peer"
	// ErrTextRelayNoCap: the target did not list protocol.CapRelay.
	ErrTextRelayNoCap = "Peer does not accept relayed streams"
	// ErrTextRelayServerUnreachable: in cluster mode, the target is
	// registered with another server of the cluster, which this server
	// cannot reach now (it is not connected to NATS).
	ErrTextRelayServerUnreachable = "Peer is connected to another server of this cluster, which cannot be reached now"
	// ErrTextRelayTooManyStreams (a format taking the limit): the sender
	// takes part in RelayStreamsPerPeer streams already.
	ErrTextRelayTooManyStreams = "Too many relayed streams (limit %d)"
	// ErrTextRelayPeerTooManyStreams: the target does.
	ErrTextRelayPeerTooManyStreams = "Peer has too many relayed streams (limit %d)"
	// ErrTextRelayAcceptTimeout (a format taking RelayAcceptTimeout):
	// sent to A when B did not accept in time.
	ErrTextRelayAcceptTimeout = "Peer did not accept the relayed stream within %v"
	// ErrTextRelayUnknownStream: relay_accept names no pending stream
	// for the sender.
	ErrTextRelayUnknownStream = "Unknown or expired relay stream"
	// ErrTextRelayNotFirst: a relay message that is not the first
	// message on its connection.
	ErrTextRelayNotFirst = "A relay message must open a connection of its own"
)

// Reasons in the close frame that ends an open stream.
const (
	closeReasonPeerClosed = "peer closed"
	closeReasonPeerGone   = "peer connection lost"
	closeReasonPeerLeft   = "peer registration ended"
	closeReasonIdle       = "relayed stream idle"
	closeReasonFrame      = "frame exceeds the limit of %d bytes"
	closeReasonText       = "only binary frames after relay_ready"
)

// Outcomes counted in relay_streams_total.
const (
	outcomeBadToken      = "bad_token"
	outcomeUnknownPeer   = "unknown_peer"
	outcomeNoCap         = "no_relay_cap"
	outcomeUnreachable   = "server_unreachable" // cluster mode: the target's server cannot be reached
	outcomeStreamLimit   = "stream_limit"
	outcomeNotFirst      = "not_first"
	outcomeUnknownStream = "unknown_stream"
	outcomeAcceptTimeout = "accept_timeout"
	outcomeCancelled     = "cancelled" // A left before B accepted
	outcomeClosed        = "closed"    // an open stream closed by a side
	outcomeIdle          = "idle_timeout"
	outcomePeerLeft      = "peer_left" // a registration ended
	outcomeFrameTooLarge = "frame_too_large"
	outcomeProtocol      = "protocol_error" // a text frame after relay_ready
	// Cluster mode: ends of cross-server streams (xrelay.go).
	outcomeServerLost = "server_lost" // the other server died, shut down or reconnected to NATS
	outcomeNATSDown   = "nats_down"   // this server lost NATS
	outcomeLost       = "lost"        // data lost or out of its window between the servers
)

// States of a relayed stream, also the labels of the relay_streams gauge.
const (
	relayPending = "pending"
	relayOpen    = "open"
	relayEnded   = "ended"
)

// relayStream is one relayed stream. Fields other than ready, ctx and
// lastActive are guarded by Server.mu; a, b, from, to and x do not
// change once set.
type relayStream struct {
	id       string
	from, to *peer // A's and B's registrations; nil for the one on another server
	a, b     *conn // A's and B's relay WebSockets; b is nil while pending, and nil (or a) on the server without it
	state    string
	timer    *time.Timer // the accept timeout, then the idle check
	x        *xstream    // cluster mode: the other end is on another server (xrelay.go); nil for a local stream

	ready      chan struct{} // closed once relay_ready went to both sides
	ctx        context.Context
	cancel     context.CancelFunc
	lastActive atomic.Int64 // UnixNano of the last frame forwarded
}

func (st *relayStream) touch() { st.lastActive.Store(time.Now().UnixNano()) }

// relayState is what a registration holds for the relay. Guarded by
// Server.mu, except lim (safe for concurrent use).
type relayState struct {
	token   string
	lim     *rate.Limiter // nil: no per-peer rate
	streams map[*relayStream]struct{}
}

func (s *Server) newRelayLimiter(bytesPerSec int) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), s.cfg.RelayMaxFrame)
}

// relayRegisterLocked gives p a relay token when the server relays and
// the client listed protocol.CapRelay.
func (s *Server) relayRegisterLocked(p *peer, caps []string) error {
	if s.cfg.NoRelay || !protocol.HasCap(caps, protocol.CapRelay) {
		return nil
	}
	tok, err := protocol.NewRelayToken(s.cfg.Rand)
	if err != nil {
		return err
	}
	p.relay = &relayState{token: tok, lim: s.newRelayLimiter(s.cfg.RelayPeerRate), streams: map[*relayStream]struct{}{}}
	s.relayTokens[tok] = p
	return nil
}

// relayUnregisterLocked ends p's streams and forgets its token.
func (s *Server) relayUnregisterLocked(p *peer) {
	if p.relay == nil {
		return
	}
	delete(s.relayTokens, p.relay.token)
	for _, st := range sortedStreams(p.relay.streams) {
		s.endStreamLocked(st, outcomePeerLeft, nil, closeFrame(websocket.CloseGoingAway, closeReasonPeerLeft))
	}
}

func sortedStreams(m map[*relayStream]struct{}) []*relayStream {
	sts := make([]*relayStream, 0, len(m))
	for st := range m {
		sts = append(sts, st)
	}
	slices.SortFunc(sts, func(x, y *relayStream) int {
		switch {
		case x.id < y.id:
			return -1
		case x.id > y.id:
			return 1
		}
		return 0
	})
	return sts
}

func closeFrame(code int, reason string) outMsg {
	return outMsg{kind: msgClose, data: websocket.FormatCloseMessage(code, reason)}
}

// refuseRelayLocked answers a relay message with an error and closes the
// connection.
func (s *Server) refuseRelayLocked(c *conn, outcome, text string) {
	s.metrics.relayOutcomes.WithLabelValues(outcome).Inc()
	s.log.Debug("relay refused", "ip", c.ip, "outcome", outcome)
	c.closeWith(
		outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: text})},
		closeFrame(websocket.ClosePolicyViolation, "relay refused"),
	)
}

// relayConnectLocked handles relay_connect: A asks for a stream to
// m.PeerID. first reports whether it is the connection's first message.
func (s *Server) relayConnectLocked(c *conn, m *protocol.RelayConnect, first bool) {
	if !first {
		s.refuseRelayLocked(c, outcomeNotFirst, ErrTextRelayNotFirst)
		return
	}
	from := s.relayTokens[m.Token]
	if from == nil {
		s.refuseRelayLocked(c, outcomeBadToken, ErrTextRelayBadToken)
		return
	}
	to := s.peersByID[m.PeerID]
	if to == nil || to.ns != from.ns || to == from {
		s.refuseRelayLocked(c, outcomeUnknownPeer, ErrTextRelayUnknownPeer)
		return
	}
	if to.remote != nil {
		s.xconnectLocked(c, from, to)
		return
	}
	if to.relay == nil {
		s.refuseRelayLocked(c, outcomeNoCap, ErrTextRelayNoCap)
		return
	}
	if lim := s.cfg.RelayStreamsPerPeer; lim > 0 {
		if len(from.relay.streams) >= lim {
			s.refuseRelayLocked(c, outcomeStreamLimit, fmt.Sprintf(ErrTextRelayTooManyStreams, lim))
			return
		}
		if len(to.relay.streams) >= lim {
			s.refuseRelayLocked(c, outcomeStreamLimit, fmt.Sprintf(ErrTextRelayPeerTooManyStreams, lim))
			return
		}
	}
	id, ok := s.newRelayIDLocked(c)
	if !ok {
		return
	}
	st := &relayStream{id: id, from: from, to: to, a: c, state: relayPending, ready: make(chan struct{})}
	st.ctx, st.cancel = context.WithCancel(s.ctx)
	st.touch()
	from.relay.streams[st] = struct{}{}
	to.relay.streams[st] = struct{}{}
	s.relayStreams[id] = st
	c.relay = st
	s.metrics.relayStreams.WithLabelValues(relayPending).Inc()
	st.timer = time.AfterFunc(s.cfg.RelayAcceptTimeout, func() { s.relayAcceptTimedOut(st) })
	to.conn.send(outMsg{kind: msgText, data: encodeServer(&protocol.RelayIncoming{Stream: id, PeerID: from.info.PeerID})})
	s.log.Debug("relay requested", "stream", id, "from", from.info.PeerID, "to", to.info.PeerID)
}

// relayAcceptLocked handles relay_accept: B takes the stream.
func (s *Server) relayAcceptLocked(c *conn, m *protocol.RelayAccept, first bool) {
	if !first {
		s.refuseRelayLocked(c, outcomeNotFirst, ErrTextRelayNotFirst)
		return
	}
	to := s.relayTokens[m.Token]
	if to == nil {
		s.refuseRelayLocked(c, outcomeBadToken, ErrTextRelayBadToken)
		return
	}
	st := s.relayStreams[m.Stream]
	if st == nil || st.to != to || st.state != relayPending {
		s.refuseRelayLocked(c, outcomeUnknownStream, ErrTextRelayUnknownStream)
		return
	}
	st.timer.Stop() // a callback already running sees the state and returns
	st.b, st.state = c, relayOpen
	c.relay = st
	s.metrics.relayStreams.WithLabelValues(relayPending).Dec()
	s.metrics.relayStreams.WithLabelValues(relayOpen).Inc()
	st.touch()
	st.timer = time.AfterFunc(s.cfg.RelayIdleTimeout, func() { s.relayIdleCheck(st) })
	if st.x != nil {
		// A is on another server: this side's writer tells it, then B.
		s.xstartLocked(st, c)
	}
	s.log.Debug("relay open", "stream", st.id)
}

func (s *Server) relayAcceptTimedOut(st *relayStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.state != relayPending {
		return
	}
	s.endStreamLocked(st, outcomeAcceptTimeout, nil,
		outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: fmt.Sprintf(ErrTextRelayAcceptTimeout, s.cfg.RelayAcceptTimeout)})},
		closeFrame(websocket.ClosePolicyViolation, "relay refused"))
}

func (s *Server) relayIdleCheck(st *relayStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.state != relayOpen {
		return
	}
	idle := time.Since(time.Unix(0, st.lastActive.Load()))
	if idle >= s.cfg.RelayIdleTimeout {
		s.endStreamLocked(st, outcomeIdle, nil, closeFrame(websocket.CloseGoingAway, closeReasonIdle))
		return
	}
	st.timer.Reset(s.cfg.RelayIdleTimeout - idle)
}

// endStreamLocked ends st once: it forgets the stream, counts its
// outcome, and queues ms (ending with a close frame) on each of its
// WebSockets but skip, whose reader has ended already. The other server
// of a cross-server stream is told, with the same frames for its side.
func (s *Server) endStreamLocked(st *relayStream, outcome string, skip *conn, ms ...outMsg) {
	if st.state == relayEnded {
		return
	}
	s.retireStreamLocked(st, outcome)
	if st.x != nil {
		s.xtellEndLocked(st, outcome, ms)
	}
	for _, c := range []*conn{st.a, st.b} {
		if c != nil && c != skip {
			c.closeWith(ms...)
		}
	}
	s.log.Debug("relay ended", "stream", st.id, "outcome", outcome)
}

// retireStreamLocked marks st ended, counts its outcome and forgets it.
func (s *Server) retireStreamLocked(st *relayStream, outcome string) {
	s.metrics.relayStreams.WithLabelValues(st.state).Dec()
	s.metrics.relayOutcomes.WithLabelValues(outcome).Inc()
	st.state = relayEnded
	st.cancel()
	st.timer.Stop()
	delete(s.relayStreams, st.id)
	for _, p := range []*peer{st.from, st.to} {
		if p != nil {
			delete(p.relay.streams, st)
		}
	}
	if st.x != nil {
		s.xstreams.Delete(st.id)
	}
}

// relayEnded ends st because c's reader failed with err.
func (s *Server) relayEnded(st *relayStream, c *conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	outcome, reason := outcomeClosed, closeReasonPeerClosed
	code := websocket.CloseNormalClosure
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		code, reason = websocket.CloseGoingAway, closeReasonPeerGone
	}
	if st.state == relayPending {
		outcome = outcomeCancelled
	}
	s.endStreamLocked(st, outcome, c, closeFrame(code, reason))
}

// endRelay ends st for what c sent (a frame over the limit, a text
// frame): c gets code and reason, the other side a going-away close.
func (s *Server) endRelay(st *relayStream, c *conn, outcome string, code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.state == relayEnded {
		return
	}
	s.endStreamLocked(st, outcome, c, closeFrame(websocket.CloseGoingAway, closeReasonPeerGone))
	c.closeWith(closeFrame(code, reason))
}

// relayPump is the rest of a relay WebSocket's life, on its reader's
// goroutine: for B it first sends relay_ready to both sides, then it
// forwards c's binary frames to the other side until c's reader fails.
// Once the stream has ended it discards what c still sends until the
// close handshake completes (bounded like any lingering close).
func (s *Server) relayPump(c *conn) {
	st := c.relay
	c.ws.SetPongHandler(nil)
	// No read deadline (there is none but a lingering close's): the
	// accept timeout and the idle timeout bound a relay conn, and the
	// sweep leaves it alone.
	if c == st.b && st.x == nil {
		s.sendReady(st)
	}
	// A frame for another server is read after room for its header.
	hdr := 0
	if st.x != nil {
		hdr = cluster.RelayDataHeader
	}
	buf := make([]byte, hdr+s.cfg.RelayMaxFrame+1)
	for {
		typ, r, err := c.ws.NextReader()
		if err != nil {
			s.relayEnded(st, c, err)
			return
		}
		if st.ctx.Err() != nil {
			continue // ended: the next NextReader skips this message
		}
		if typ != websocket.BinaryMessage {
			s.endRelay(st, c, outcomeProtocol, websocket.CloseUnsupportedData, closeReasonText)
			continue
		}
		n, tooBig, err := readFrame(r, buf[hdr:])
		if err != nil {
			s.relayEnded(st, c, err)
			return
		}
		if tooBig {
			s.endRelay(st, c, outcomeFrameTooLarge, websocket.CloseMessageTooBig, fmt.Sprintf(closeReasonFrame, s.cfg.RelayMaxFrame))
			continue
		}
		st.touch()
		select {
		case <-st.ready:
		case <-st.ctx.Done():
			continue
		}
		if st.x != nil {
			s.xforward(st, c, buf[:hdr+n])
			continue
		}
		if s.throttle(st, n) != nil {
			continue
		}
		other := st.b
		if c == st.b {
			other = st.a
		}
		other.ws.SetWriteDeadline(time.Now().Add(s.cfg.RelayIdleTimeout))
		if err := other.ws.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
			s.relayEnded(st, other, err)
			continue
		}
		s.metrics.relayBytes.Add(float64(n))
		st.touch()
	}
}

// sendReady writes relay_ready to A and then to B, and opens the stream
// for data. It runs on B's reader before B's pump reads anything.
func (s *Server) sendReady(st *relayStream) {
	defer close(st.ready)
	ready := encodeServer(&protocol.RelayReady{Stream: st.id})
	for _, c := range []*conn{st.a, st.b} {
		if st.ctx.Err() != nil {
			return
		}
		c.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, ready); err != nil {
			s.relayEnded(st, c, err)
			return
		}
	}
}

// throttle waits until n bytes fit the rates of both registrations and
// the server's total. It fails only when the stream ends meanwhile.
func (s *Server) throttle(st *relayStream, n int) error {
	if n == 0 {
		return nil
	}
	now := time.Now()
	var (
		rs    [3]*rate.Reservation
		delay time.Duration
	)
	// A cross-server stream has one registration here: the other
	// server applies the other's rate (xrelay.go).
	var fromLim, toLim *rate.Limiter
	if st.from != nil {
		fromLim = st.from.relay.lim
	}
	if st.to != nil {
		toLim = st.to.relay.lim
	}
	for i, lim := range []*rate.Limiter{fromLim, toLim, s.relayLim} {
		if lim == nil {
			continue
		}
		r := lim.ReserveN(now, n) // n <= RelayMaxFrame, the burst: always OK
		rs[i] = r
		delay = max(delay, r.DelayFrom(now))
	}
	if delay <= 0 {
		return nil
	}
	s.metrics.relayThrottled.Add(delay.Seconds())
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-st.ctx.Done():
		for _, r := range rs {
			if r != nil {
				r.CancelAt(time.Now())
			}
		}
		return errors.New("rendezvous: relayed stream ended")
	}
}

// newRelayIDLocked makes a new relay stream's ID; when it cannot, it
// answers c with an internal error, closes it and reports false.
func (s *Server) newRelayIDLocked(c *conn) (string, bool) {
	id, err := protocol.NewRelayToken(s.cfg.Rand)
	if err != nil {
		s.log.Error("relay failed", "err", err)
		s.sendErrorLocked(c, errKindInternal, "Internal error")
		c.closeWith(closeFrame(websocket.CloseInternalServerErr, "internal error"))
		return "", false
	}
	return id, true
}

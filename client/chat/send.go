package chat

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// Status says how far a sent message is known to have got.
type Status uint8

const (
	// Delivered: the peer acknowledged the message.
	Delivered Status = iota + 1
	// Sent: the message was written to an original peer, which cannot
	// acknowledge; like the original, we know no more.
	Sent
	// Queued: the peer is offline or unreachable; the message waits in
	// the store and goes out, in order, when the peer is seen again.
	// EventDelivered or EventExpired tells how it ended.
	Queued
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Sent:
		return "sent"
	case Queued:
		return "queued"
	}
	return "status(?)"
}

// SendResult describes a message that left this node.
type SendResult struct {
	Peer   registry.Peer
	Status Status
	// ID is the message id; empty for original peers.
	ID string
	// Encrypted says the message went inside a session with the peer's
	// key; false for a peer without a key (an original client).
	Encrypted bool
	// Trust is the peer's trust state when the message was sent.
	Trust trust.State
	// Seq is the message's row in the store (store.Message.Seq), once it
	// is there; 0 for a message that was not stored.
	Seq int64
}

// Send posts text (see Post) and waits for the outcome (see
// Outgoing.Wait).
func (n *Node) Send(ctx context.Context, name, text string) (SendResult, error) {
	o, res, err := n.post(ctx, name, text)
	if err != nil {
		return res, err
	}
	return o.Wait(ctx)
}

// Post sends text to the peer a user means by name: a nickname, or
// nickname@ip:port, nickname@ip or nickname#<instance prefix> to pick one
// of several peers with that nickname (see registry.Resolve), and returns
// at once; Outgoing.Wait tells the outcome. Posts to one peer are
// delivered in the order of the Post calls.
//
// A message to a peer with a key (announced, or pinned for a nickname not
// seen now) is stored first and then delivered over a pipelined
// connection; when the peer is offline or unreachable it stays queued in
// the store for MessageTTL. A message to a peer without a key is not
// queued: a failure is an error, as before.
//
// Errors: registry.ErrUnknownPeer (wrapped: a nickname never seen and not
// pinned), *registry.AmbiguousError (errors.As), ErrKeyChanged,
// ErrDowngrade, ErrUnencrypted, ErrTooLong, ErrClosed, a store error
// (store.ErrDiskFull...); and from Wait, for peers without a key,
// ErrRefused, ErrTimeout and ErrBroken wrapped with the peer.
func (n *Node) Post(ctx context.Context, name, text string) (*Outgoing, error) {
	o, _, err := n.post(ctx, name, text)
	return o, err
}

// resolution is what Post learned about a name on the event loop, at
// stateVer ver.
type resolution struct {
	name      string
	ver       uint64
	peer      registry.Peer
	state     trust.State
	key, nick string
	err       error
}

// resolve finds the peer name means (see Post), reusing the last
// resolution while the registry and the trust store are unchanged.
func (n *Node) resolve(ctx context.Context, name string) (*resolution, error) {
	if r := n.resolved.Load(); r != nil && r.name == name && r.ver == n.stateVer.Load() {
		return r, nil
	}
	r := &resolution{name: name}
	err := n.read(ctx, func(ls *loopState) {
		r.ver = n.stateVer.Load()
		r.peer, r.state, r.err = ls.resolveTrusted(name)
		if errors.Is(r.err, registry.ErrUnknownPeer) {
			// Not listed now: a pinned nickname is queued for its key.
			if pin, ok := ls.trust.Lookup(name); ok && pin.Key != "" {
				r.key, r.nick, r.err = pin.Key, name, nil
				r.state = ls.trust.State(name, pin.Key)
				r.peer = registry.Peer{Nickname: name, PubKey: pin.Key}
			}
		} else if r.err == nil {
			r.key, r.nick = sessionKey(r.peer), r.peer.Nickname
		}
	})
	if err != nil {
		return nil, err
	}
	n.resolved.Store(r)
	return r, nil
}

func (n *Node) post(ctx context.Context, name, text string) (*Outgoing, SendResult, error) {
	r, err := n.resolve(ctx, name)
	if err != nil {
		if errors.Is(err, ErrClosed) || n.ctx.Err() != nil {
			err = ErrClosed
		}
		return nil, SendResult{}, err
	}
	peer, state, key, nick := r.peer, r.state, r.key, r.nick
	sentAt := time.Now()
	var id string
	if r.err == nil && (key != "" || protocol.HasCap(peer.Caps, protocol.CapAck)) {
		id = n.nextMessageID(sentAt)
	}
	res := SendResult{Peer: peer, ID: id, Encrypted: key != "", Trust: state}
	if r.err != nil {
		return nil, res, r.err
	}
	// JSON escaping grows text at most sixfold: only a long text needs a
	// trial encoding.
	if 6*(len(text)+len(n.cfg.Nickname))+200 > protocol.MaxLineSize {
		if _, err := protocol.EncodeChatLine(&protocol.ChatMessage{From: n.cfg.Nickname, Content: text, Timestamp: sentAt.Unix(), ID: id, Instance: n.instance, Expires: sentAt.Unix()}); err != nil {
			return nil, res, fmt.Errorf("%w: %d bytes of text, the limit is about %d", ErrTooLong, len(text), protocol.MaxLineSize-200)
		}
	}
	// Backpressure: at most MaxOutstanding Posts wait for an outcome.
	select {
	case n.outstanding <- struct{}{}:
	case <-ctx.Done():
		return nil, res, ctx.Err()
	case <-n.ctx.Done():
		return nil, res, ErrClosed
	}
	o := newOutgoing(res, func() { <-n.outstanding })
	if key == "" {
		if !n.goIfOpen(func() { n.sendPlain(o, peer, text, id, sentAt) }) {
			o.resolve(0, ErrClosed)
		}
		return o, res, nil
	}
	ob := n.outboxFor(key)
	m := &store.Message{
		ID: id, PeerKey: key, PeerNick: nick, Dir: store.Out, Text: text,
		Sent: sentAt, Expires: sentAt.Add(n.cfg.MessageTTL), Status: store.Pending, Encrypted: true,
	}
	e := &outEntry{id: id, text: text, sent: sentAt, expires: m.Expires}
	ob.postMu.Lock()
	defer ob.postMu.Unlock()
	n.store.AddOutgoing(m, func(err error) {
		// On the store's writer goroutine: must not block.
		if err != nil {
			ob.failed(e, m.Seq)
			o.resolve(0, fmt.Errorf("message to %s not stored (%[1]s may have received it): %w", nick, err))
			return
		}
		n.lastStored.Store(sentAt.UnixNano()) // close enough for the idle check, without a clock read per message
		o.res.Seq = m.Seq
		o.rowStored()
	})
	if e.failed.Load() {
		return o, res, nil // refused already (the store is closed): o has the error
	}
	e.seq = m.Seq
	ob.push(e, o)
	return o, res, nil
}

// sendPlain sends to a peer without a key, as before the offline queue:
// one line on a new connection to an original peer, or one acknowledged
// line on the kept-open connection to an ack-capable one. What was sent
// is stored afterwards, for the history.
func (n *Node) sendPlain(o *Outgoing, peer registry.Peer, text, id string, sentAt time.Time) {
	line, err := protocol.EncodeChatLine(&protocol.ChatMessage{From: n.cfg.Nickname, Content: text, Timestamp: sentAt.Unix(), ID: id, Instance: n.instance})
	if err != nil {
		o.resolve(0, fmt.Errorf("%w: %d bytes of text", ErrTooLong, len(text)))
		return
	}
	ctx := n.ctx
	st := Sent
	if id == "" {
		err = n.sendOnce(ctx, peer, line)
	} else {
		st = Delivered
		err = n.sendAcked(ctx, peer, line, id)
	}
	if err != nil {
		if n.ctx.Err() != nil && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		o.resolve(0, err)
		return
	}
	now := time.Now()
	m := &store.Message{ID: id, PeerNick: peer.Nickname, Dir: store.Out, Text: text, Sent: sentAt, Delivered: now, Status: store.Sent}
	if st == Delivered {
		m.Status = store.Delivered
	}
	if err := n.store.AddOutgoingSync(context.WithoutCancel(ctx), m); err != nil {
		n.log.Error("sent message not stored in the history", "peer", peer.Nickname, "err", err)
	}
	o.res.Seq = m.Seq
	o.resolve(st, nil)
}

// sendOnce is the original's way: connect, write one line, close.
func (n *Node) sendOnce(ctx context.Context, peer registry.Peer, line []byte) error {
	c, raw, err := n.connect(ctx, peer)
	if err != nil {
		return err
	}
	defer n.untrackConn(raw)
	if err := n.write(ctx, c, line); err != nil {
		return sendError(peer, "write", err)
	}
	return nil
}

func (n *Node) dial(ctx context.Context, peer registry.Peer) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	c, err := n.cfg.Network.DialContext(dctx, "tcp", peer.Addr.String())
	if err != nil {
		return nil, sendError(peer, "connect", err)
	}
	if !n.trackConn(c) {
		return nil, ErrClosed
	}
	return c, nil
}

func (n *Node) write(ctx context.Context, c net.Conn, line []byte) error {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if err := c.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout)); err != nil {
		return err
	}
	_, err := c.Write(line)
	return err
}

// encrypts reports whether messages to peer travel inside a session: it
// announced a key and the capability.
func encrypts(peer registry.Peer) bool {
	return peer.PubKey != "" && protocol.HasCap(peer.Caps, protocol.CapNoise)
}

// peerConn is a connection kept open to an ack-capable peer. token is a
// one-slot semaphore: whoever holds it owns conn, raw and lr. A channel
// rather than a mutex, because the holder blocks in I/O.
type peerConn struct {
	token    chan struct{}
	conn     net.Conn // the session, or raw for a peer without a key
	raw      net.Conn // the tracked TCP conn (or relayed stream)
	path     string   // PathDirect or PathRelayed
	punched  bool     // the conn is a punched one: kept alive longer
	lr       *protocol.LineReader
	lastUsed time.Time
	idle     *time.Timer
}

func (n *Node) peerConn(peer registry.Peer) (*peerConn, error) {
	key := peer.Addr.String() + "#" + peer.Instance
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	pc, ok := n.pool[key]
	if !ok {
		pc = &peerConn{token: make(chan struct{}, 1)}
		n.pool[key] = pc
	}
	return pc, nil
}

// sendAcked writes line on the kept-open connection (dialling one if
// needed) and waits for the ack. A reused connection that turns out closed
// is redialled once and the line sent again; the receiver drops the
// duplicate if the first copy did arrive.
func (n *Node) sendAcked(ctx context.Context, peer registry.Peer, line []byte, id string) error {
	pc, err := n.peerConn(peer)
	if err != nil {
		return err
	}
	select {
	case pc.token <- struct{}{}:
	case <-ctx.Done():
		return sendError(peer, "wait for connection", ctx.Err())
	}
	defer func() { <-pc.token }()
	if pc.idle != nil {
		pc.idle.Stop()
	}
	for attempt := 0; ; attempt++ {
		reused := pc.conn != nil
		if !reused {
			c, raw, err := n.connect(ctx, peer)
			if err != nil {
				return err
			}
			pc.conn, pc.raw, pc.lr, pc.path, pc.punched = c, raw, protocol.NewLineReader(c), n.pathTo(peer), false
		}
		err := n.exchange(ctx, pc, line, id)
		if err == nil {
			pc.lastUsed = time.Now()
			n.armIdle(pc)
			if !reused && pc.path == PathRelayed {
				n.maybePunch(peer, pc)
			}
			return nil
		}
		n.untrackConn(pc.raw)
		pc.conn, pc.raw, pc.lr = nil, nil, nil
		err = sendError(peer, "send", err)
		if reused && attempt == 0 && errors.Is(err, ErrBroken) && ctx.Err() == nil {
			n.log.Debug("kept-open connection was closed; redialling", "peer", peer.Nickname, "addr", peer.Addr)
			continue
		}
		return err
	}
}

func (n *Node) exchange(ctx context.Context, pc *peerConn, line []byte, id string) error {
	if err := n.write(ctx, pc.conn, line); err != nil {
		return err
	}
	// The callback may run after exchange has returned and the caller has
	// cleared pc.conn: give it the conn itself, not pc.
	conn := pc.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := pc.conn.SetReadDeadline(time.Now().Add(n.cfg.AckTimeout)); err != nil {
		return err
	}
	for {
		b, err := pc.lr.ReadLine()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("no ack within %v: %w", n.cfg.AckTimeout, err)
			}
			return err
		}
		ack, err := protocol.DecodeAck(b)
		if err != nil {
			n.log.Debug("unexpected line while waiting for ack", "err", err)
			continue
		}
		if ack.ID == id {
			return nil
		}
		// An ack for an earlier message whose wait timed out.
	}
}

// armIdle closes pc's connection after IdleTimeout unused. Called with the
// token held.
func (n *Node) armIdle(pc *peerConn) {
	d := n.cfg.IdleTimeout
	if pc.punched {
		d = KeepaliveInterval
	}
	if pc.idle != nil {
		pc.idle.Reset(d)
		return
	}
	pc.idle = time.AfterFunc(d, func() { n.idleFired(pc) })
}

// idleFired closes pc's connection once unused for IdleTimeout (a punched
// one for PunchedIdleTimeout, with a keepalive every KeepaliveInterval
// until then, so that the NATs keep their mappings).
func (n *Node) idleFired(pc *peerConn) {
	select {
	case pc.token <- struct{}{}:
	default:
		return // in use; the user re-arms it
	}
	defer func() { <-pc.token }()
	if pc.conn == nil {
		return
	}
	switch idle := time.Since(pc.lastUsed); {
	case pc.punched && idle < PunchedIdleTimeout:
		line, _ := protocol.EncodePunch(&protocol.Punch{Punch: protocol.PunchKeepalive})
		if err := n.write(n.ctx, pc.conn, line); err == nil {
			pc.idle.Reset(KeepaliveInterval)
			return
		}
	case !pc.punched && idle < n.cfg.IdleTimeout:
		return
	}
	n.untrackConn(pc.raw)
	pc.conn, pc.raw, pc.lr, pc.punched = nil, nil, nil, false
}

func (n *Node) stopIdleTimers() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, pc := range n.pool {
		select {
		case pc.token <- struct{}{}:
			if pc.idle != nil {
				pc.idle.Stop()
			}
			<-pc.token
		default:
		}
	}
}

// sendError classifies err for the user and wraps it with the peer.
func sendError(peer registry.Peer, op string, err error) error {
	var kind error
	var ne net.Error
	switch {
	case errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = ErrRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		kind = ErrTimeout
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s %s: %w", op, registry.Selector(peer), err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, protocol.ErrTooLarge):
		kind = ErrBroken
	default:
		if op == "connect" {
			kind = ErrRefused
		} else {
			kind = ErrBroken
		}
	}
	return fmt.Errorf("%s %s: %w: %w", op, registry.Selector(peer), kind, err)
}

// nextMessageID returns a message id: 16 hex digits of the time in
// milliseconds (shifted left 20 bits) plus a counter, increasing within a
// run. Ids that grow with time keep the receivers' index of ids (their
// duplicate check) appending at its end, which doubles the rate a store
// takes messages at, against random ids. A run starts its counter at a
// random point within the first millisecond, so that two runs of one
// identity do not reuse ids unless the clock went back.
func (n *Node) nextMessageID(now time.Time) string {
	next := uint64(now.UnixMilli()) << 20
	n.idMu.Lock()
	if n.lastID == 0 {
		next |= n.idStart
	}
	n.lastID = max(n.lastID+1, next)
	id := n.lastID
	n.idMu.Unlock()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	return hex.EncodeToString(b[:])
}

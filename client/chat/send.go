package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

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
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Sent:
		return "sent"
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
}

// Send sends text to the peer a user means by name: a nickname, or
// nickname@ip:port, nickname@ip or nickname#<instance prefix> to pick one
// of several peers with that nickname (see registry.Resolve).
//
// Errors: registry.ErrUnknownPeer (wrapped), *registry.AmbiguousError
// (errors.As), and, wrapped with the peer and the operation, ErrRefused,
// ErrTimeout, ErrBroken (the connection failed before the peer
// acknowledged), ErrTooLong and ErrClosed.
func (n *Node) Send(ctx context.Context, name, text string) (SendResult, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return SendResult{}, ErrClosed
	}
	n.sends.Add(1)
	n.mu.Unlock()
	defer n.sends.Done()

	var (
		peer    registry.Peer
		state   trust.State
		id      string
		sentAt  time.Time
		resolve error
	)
	err := n.call(ctx, func(ls *loopState) {
		peer, state, resolve = ls.resolveTrusted(name)
		if resolve == nil && protocol.HasCap(peer.Caps, protocol.CapAck) {
			id = fmt.Sprintf("%016x", ls.rnd.Uint64())
		}
		sentAt = time.Now()
	})
	if err != nil {
		return SendResult{}, err
	}
	if resolve != nil {
		return SendResult{Peer: peer, Trust: state}, resolve
	}
	line, err := protocol.EncodeChatLine(&protocol.ChatMessage{From: n.cfg.Nickname, Content: text, Timestamp: sentAt.Unix(), ID: id, Instance: n.instance})
	if err != nil {
		return SendResult{Peer: peer}, fmt.Errorf("%w: %d bytes of text, the limit is about %d", ErrTooLong, len(text), protocol.MaxLineSize-100)
	}
	// Stop waiting when the node closes.
	callerCtx := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()

	res := SendResult{Peer: peer, ID: id, Encrypted: encrypts(peer), Trust: state}
	if id == "" {
		res.Status = Sent
		err = n.sendOnce(ctx, peer, line)
	} else {
		res.Status = Delivered
		err = n.sendAcked(ctx, peer, line, id)
	}
	if err != nil && n.ctx.Err() != nil && callerCtx.Err() == nil && !errors.Is(err, ErrClosed) {
		// Cut short by Close, not by the caller: say so.
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return res, err
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

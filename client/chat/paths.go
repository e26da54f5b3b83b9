package chat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// connect dials peer and, when the peer has a key, runs the session
// handshake, which must prove that key. It returns the conn to use and the
// raw conn the node tracks (the same for a peer without a key); closing
// the raw one ends both.
//
// A peer found through the bootstrap server that accepts relayed streams
// is tried on two paths, happy-eyeballs style: directly, and through the
// server's relay from RelayDelay on (at once if the direct dial fails
// first). The first path whose handshake proves the peer's key carries
// the messages; the other is closed.
func (n *Node) connect(ctx context.Context, peer registry.Peer) (c, raw net.Conn, err error) {
	n.mu.Lock()
	token := n.relayToken
	n.mu.Unlock()
	if peer.Source != registry.SourceBootstrap || token == "" || peer.ID == "" ||
		!protocol.HasCap(peer.Caps, protocol.CapRelay) || !encrypts(peer) {
		return n.connectVia(ctx, peer, PathDirect, n.dial)
	}
	relay := func(ctx context.Context, peer registry.Peer) (net.Conn, error) {
		c, err := rendezvous.DialRelay(ctx, n.rv, token, peer.ID)
		if err != nil {
			return nil, sendError(peer, "connect through the relay", err)
		}
		if !n.trackConn(c) {
			return nil, ErrClosed
		}
		return c, nil
	}
	type attempt struct {
		c, raw net.Conn
		err    error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	direct, relayed := make(chan attempt, 1), make(chan attempt, 1)
	start := func(ch chan attempt, path string, dial func(context.Context, registry.Peer) (net.Conn, error)) {
		go func() {
			c, raw, err := n.connectVia(actx, peer, path, dial)
			ch <- attempt{c, raw, err}
		}()
	}
	start(direct, PathDirect, n.dial)
	delay := time.NewTimer(RelayDelay)
	defer delay.Stop()
	var first *attempt
	pending := 1
	relayStarted := false
	startRelay := func() {
		if !relayStarted {
			relayStarted = true
			pending++
			start(relayed, PathRelayed, relay)
		}
	}
	var errs []error
	for pending > 0 && first == nil {
		select {
		case <-delay.C:
			startRelay()
		case a := <-direct:
			pending--
			if a.err == nil {
				first = &a
			} else {
				errs = append(errs, a.err)
				startRelay()
			}
		case a := <-relayed:
			pending--
			if a.err == nil {
				first = &a
			} else {
				errs = append(errs, a.err)
			}
		}
	}
	// The loser is cancelled; wait for it so that no goroutine outlives
	// the call, and close what it may have opened anyway.
	cancel()
	for ; pending > 0; pending-- {
		var a attempt
		select {
		case a = <-direct:
		case a = <-relayed:
		}
		if a.err == nil {
			n.untrackConn(a.raw)
		}
	}
	if first == nil {
		return nil, nil, errors.Join(errs...)
	}
	return first.c, first.raw, nil
}

// Paths a session to a peer can take (PeerStatus.Path).
const (
	PathDirect  = "direct"
	PathRelayed = "relayed"
)

// RelayDelay is how long a direct connection to a peer found through the
// bootstrap server has before the relay is tried too: RFC 8305's
// connection attempt delay.
const RelayDelay = 250 * time.Millisecond

// connectVia opens one path to peer with dial and, for a peer with a key,
// runs the handshake on it.
func (n *Node) connectVia(ctx context.Context, peer registry.Peer, path string, dial func(context.Context, registry.Peer) (net.Conn, error)) (c, raw net.Conn, err error) {
	raw, err = dial(ctx, peer)
	if err != nil || !encrypts(peer) {
		if err == nil {
			n.setPath(peer, path)
		}
		return raw, raw, err
	}
	expect, err := protocol.ParsePublicKey(peer.PubKey)
	if err != nil { // the decoder checked it
		n.untrackConn(raw)
		return nil, nil, sendError(peer, "handshake", err)
	}
	hctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	sc, err := session.Client(hctx, raw, n.local, expect)
	if err != nil {
		n.untrackConn(raw)
		if errors.Is(err, session.ErrKeyMismatch) {
			n.emit(Event{Kind: EventSecurity, Time: time.Now(), Peer: peer,
				Text: fmt.Sprintf("refused %s (%s): it announced key %s but proved another (%v)", registry.Selector(peer), path, protocol.ShortFingerprint(expect), err)})
			return nil, nil, fmt.Errorf("%s: %w: %w", registry.Selector(peer), ErrKeyMismatch, err)
		}
		return nil, nil, sendError(peer, "handshake", err)
	}
	if got := sc.Remote().Nickname; got != peer.Nickname {
		n.untrackConn(raw)
		return nil, nil, fmt.Errorf("%s: %w: it announced nickname %q but its session says %q", registry.Selector(peer), ErrKeyMismatch, peer.Nickname, got)
	}
	n.pinFirst(peer.Nickname, peer.PubKey)
	n.setPath(peer, path)
	return sc, raw, nil
}

func (n *Node) setPath(peer registry.Peer, path string) {
	n.mu.Lock()
	n.paths[peer.Key] = path
	n.mu.Unlock()
}

// relayIncoming accepts a stream another peer opened to us through the
// relay and serves it like an accepted TCP connection. Called from the
// bootstrap client's goroutine: it must not block.
func (n *Node) relayIncoming(stream, from string) {
	n.mu.Lock()
	token, closed := n.relayToken, n.closed
	if !closed {
		n.wg.Add(1) // the rendezvous goroutine is counted: Wait has not returned
	}
	n.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer n.wg.Done()
		c, err := rendezvous.AcceptRelay(n.ctx, n.rv, token, stream)
		if err != nil {
			n.log.Info("relayed stream not accepted", "stream", stream, "from", from, "err", err)
			return
		}
		if !n.trackConn(c) {
			return
		}
		n.serve(c)
	}()
}

package chat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
// A peer found through the bootstrap server is tried on every path at
// once, happy-eyeballs style: its public address, the addresses it
// registered as its own (reachable when both are behind the same NAT),
// and, if it accepts relayed streams, the server's relay from RelayDelay
// on (at once if every direct dial has failed). The first path whose
// handshake proves the peer's key carries the messages; the others are
// closed.
func (n *Node) connect(ctx context.Context, peer registry.Peer) (c, raw net.Conn, err error) {
	if peer.Source != registry.SourceBootstrap || !encrypts(peer) {
		return n.connectVia(ctx, peer, PathDirect, n.dial, false)
	}
	n.mu.Lock()
	server, token := n.relayServer, n.relayToken
	n.mu.Unlock()

	type attempt struct {
		c, raw net.Conn
		err    error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan attempt)
	pending, directLeft := 0, 0
	start := func(path string, dial func(context.Context, registry.Peer) (net.Conn, error), quiet bool) {
		pending++
		go func() {
			c, raw, err := n.connectVia(actx, peer, path, dial, quiet)
			results <- attempt{c, raw, err}
		}()
	}
	start(PathDirect, n.dial, false)
	for _, a := range peer.Addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap == peer.Addr {
			continue
		}
		// Another network's host may hold that private address: a key
		// mismatch there is no attack, just not the peer.
		start(PathDirect, func(ctx context.Context, p registry.Peer) (net.Conn, error) {
			p.Addr = ap
			return n.dial(ctx, p)
		}, true)
	}
	directLeft = pending
	relayed := token != "" && peer.ID != "" && protocol.HasCap(peer.Caps, protocol.CapRelay)
	startRelay := func() {
		if !relayed {
			return
		}
		relayed = false
		start(PathRelayed, func(ctx context.Context, peer registry.Peer) (net.Conn, error) {
			c, err := rendezvous.DialRelay(ctx, n.rv, server, token, peer.ID)
			if err != nil {
				return nil, sendError(peer, "connect through the relay", err)
			}
			if !n.trackConn(c) {
				return nil, ErrClosed
			}
			return c, nil
		}, false)
	}
	delay := time.NewTimer(RelayDelay)
	defer delay.Stop()
	var first *attempt
	var errs []error
	for pending > 0 && first == nil {
		select {
		case <-delay.C:
			startRelay()
		case a := <-results:
			pending--
			if a.err == nil {
				first = &a
				break
			}
			errs = append(errs, a.err)
			if directLeft--; directLeft == 0 {
				startRelay()
			}
		}
	}
	// The losers are cancelled; wait for them so that no goroutine
	// outlives the call, and close what they may have opened anyway.
	cancel()
	for ; pending > 0; pending-- {
		if a := <-results; a.err == nil {
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
//
// quiet marks a speculative path (a private address that may belong to
// another network's host): a key mismatch there fails the path without
// telling the user of an attack.
func (n *Node) connectVia(ctx context.Context, peer registry.Peer, path string, dial func(context.Context, registry.Peer) (net.Conn, error), quiet bool) (c, raw net.Conn, err error) {
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
		if errors.Is(err, session.ErrKeyMismatch) && !quiet {
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

func (n *Node) pathTo(peer registry.Peer) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paths[peer.Key]
}

func (n *Node) setPath(peer registry.Peer, path string) {
	n.mu.Lock()
	n.paths[peer.Key] = path
	n.mu.Unlock()
}

// relayIncoming accepts a stream another peer opened to us through the
// relay and serves it like an accepted TCP connection. Called from the
// bootstrap client's goroutine: it must not block.
func (n *Node) relayIncoming(in rendezvous.Incoming) {
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.wg.Add(1) // the rendezvous goroutine is counted: Wait has not returned
	}
	n.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer n.wg.Done()
		c, err := rendezvous.AcceptRelay(n.ctx, n.rv, in)
		if err != nil {
			n.log.Info("relayed stream not accepted", "stream", in.Stream, "from", in.From, "server", in.Server, "err", err)
			return
		}
		if !n.trackConn(c) {
			return
		}
		n.serve(c)
	}()
}

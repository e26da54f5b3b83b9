package chat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

func (n *Node) acceptLoop() {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("accept failed", "err", err)
			// Out of file descriptors and the like: do not spin.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-n.ctx.Done():
				return
			}
			continue
		}
		if !n.trackConn(c) {
			return
		}
		n.spawn(func() { n.serve(c) })
	}
}

// serve reads message lines from one connection until EOF, as the
// original does, answers each line that carries an id with an ack, and
// refuses an over-long line by closing the connection. A connection that
// opens with the session preamble runs the handshake first and carries
// its lines inside the session; any other is an original peer's plaintext.
func (n *Node) serve(c net.Conn) {
	defer n.untrackConn(c)
	remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if err := c.SetReadDeadline(time.Now().Add(n.cfg.ReceiveIdleTimeout)); err != nil {
		return
	}
	encrypted, conn, err := session.Sniff(c)
	if err != nil {
		return
	}
	var from session.Peer
	var key string
	if encrypted {
		hctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
		sc, err := session.Server(hctx, conn, n.local)
		cancel()
		if err != nil {
			n.log.Warn("session handshake failed", "from", remote, "err", err)
			return
		}
		from, key = sc.Remote(), protocol.EncodePublicKey(sc.Remote().Key)
		if err := n.acceptSession(remote, from, key); err != nil {
			n.log.Warn("session refused", "from", remote, "err", err)
			return
		}
		conn = sc
	} else if n.cfg.RequireEncryption {
		n.log.Info("unencrypted connection refused", "from", remote)
		n.emit(Event{Kind: EventSecurity, Time: time.Now(),
			Text: fmt.Sprintf("refused an unencrypted message from %s: encryption is required", remote)})
		return
	}
	lr := protocol.NewLineReader(conn)
	var punch punchAnswer
	for {
		if err := c.SetReadDeadline(time.Now().Add(n.cfg.ReceiveIdleTimeout)); err != nil {
			return
		}
		line, err := lr.ReadLine()
		if err != nil {
			switch {
			case errors.Is(err, protocol.ErrTooLarge):
				n.log.Warn("message line too long; connection closed", "from", remote, "limit", protocol.MaxLineSize)
			case errors.Is(err, os.ErrDeadlineExceeded):
				n.log.Debug("idle connection closed", "from", remote)
			case errors.Is(err, session.ErrTampered):
				n.log.Warn("session data altered in transit; connection closed", "from", remote, "err", err)
				n.emit(Event{Kind: EventSecurity, Time: time.Now(),
					Text: fmt.Sprintf("a message from %s (%s) was altered in transit and dropped; the connection was closed", from.Nickname, remote)})
			}
			return
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue
		}
		msg, err := protocol.DecodeChatLine(line)
		if err != nil {
			if p, perr := protocol.DecodePunch(line); perr == nil && encrypted {
				if err := n.answerPunch(conn, p, from, &punch); err != nil {
					n.log.Debug("punch answer not sent", "to", remote, "err", err)
					return
				}
				continue
			}
			n.log.Warn("invalid message line skipped", "from", remote, "err", err)
			continue
		}
		now := time.Now()
		m := Message{
			From: msg.From, Text: msg.Content, Sent: time.Unix(msg.Timestamp, 0),
			Received: now, Remote: remote, ID: msg.ID, Instance: msg.Instance,
			Encrypted: encrypted,
		}
		sender := msg.From
		if encrypted {
			// The session proved who wrote: its nickname and instance
			// stand, whatever the line claims.
			if msg.From != from.Nickname {
				n.log.Warn("message from field differs from the session's nickname", "from", remote, "claimed", msg.From, "session", from.Nickname)
			}
			m.From, m.Instance, m.Key = from.Nickname, from.Instance, key
			sender = key
		}
		m.InvalidFrom = protocol.ValidateNickname(m.From) != nil
		m.Trust = n.trustState(m.From, m.Key)
		if n.seen.add(sender, msg.ID) {
			n.emit(Event{Kind: EventMessage, Time: now, Message: m})
		} else {
			n.log.Debug("duplicate message dropped", "from", msg.From, "id", msg.ID)
		}
		if msg.ID != "" {
			ack, err := protocol.EncodeAck(&protocol.Ack{ID: msg.ID})
			if err != nil {
				continue
			}
			if err := c.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout)); err != nil {
				return
			}
			if _, err := conn.Write(ack); err != nil {
				n.log.Debug("ack not sent", "to", remote, "err", err)
				return
			}
		}
	}
}

// acceptSession checks an incoming session against what the peer
// announced: a known instance must prove the key it announced. It pins the
// nickname on first use.
func (n *Node) acceptSession(remote netip.AddrPort, from session.Peer, key string) error {
	var err error
	if cerr := n.call(n.ctx, func(ls *loopState) {
		for _, p := range ls.reg.List() {
			if p.Instance == from.Instance && p.PubKey != "" && p.PubKey != key {
				err = fmt.Errorf("%w: %s announced key %s, its session proved %s", ErrKeyMismatch, registry.Selector(p), shortFP(p.PubKey), shortFP(key))
				n.emit(Event{Kind: EventSecurity, Time: time.Now(), Peer: p,
					Text: fmt.Sprintf("refused a connection from %s: %s announced key %s but the connection proved key %s", remote, p.Nickname, shortFP(p.PubKey), shortFP(key))})
				return
			}
		}
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	n.pinFirst(from.Nickname, key)
	return nil
}

// recentIDs remembers the last few message ids per sender (its key inside
// a session, its nickname in plaintext), so a message resent after a lost
// ack is shown once.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(size int) *recentIDs {
	return &recentIDs{set: make(map[string]struct{}, size), ring: make([]string, size)}
}

// add reports whether (from, id) is new, and records it. Messages without
// id (original senders) are always new.
func (r *recentIDs) add(from, id string) bool {
	if id == "" {
		return true
	}
	k := from + "\x00" + id
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[k]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = k
	r.next = (r.next + 1) % len(r.ring)
	r.set[k] = struct{}{}
	return true
}

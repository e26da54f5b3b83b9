package chat

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/protocol"
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
// refuses an over-long line by closing the connection.
func (n *Node) serve(c net.Conn) {
	defer n.untrackConn(c)
	remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	lr := protocol.NewLineReader(c)
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
			}
			return
		}
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			continue
		}
		msg, err := protocol.DecodeChatLine(line)
		if err != nil {
			n.log.Warn("invalid message line skipped", "from", remote, "err", err)
			continue
		}
		now := time.Now()
		if n.seen.add(msg.From, msg.ID) {
			n.emit(Event{Kind: EventMessage, Time: now, Message: Message{
				From: msg.From, Text: msg.Content, Sent: time.Unix(msg.Timestamp, 0),
				Received: now, Remote: remote, ID: msg.ID, Instance: msg.Instance,
			}})
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
			if _, err := c.Write(ack); err != nil {
				n.log.Debug("ack not sent", "to", remote, "err", err)
				return
			}
		}
	}
}

// recentIDs remembers the last few message ids per sender nickname, so a
// message resent after a lost ack is shown once.
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

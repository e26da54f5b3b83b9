package chat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/client/store"
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
	in := inbound{n: n, c: c, conn: conn, remote: remote, key: key, nick: from.Nickname}
	idle := n.cfg.ReceiveIdleTimeout
	for {
		if in.roomLines {
			idle = max(idle, roomReceiveIdle) // a member's room link
		}
		if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return
		}
		line, err := lr.ReadLine()
		if err != nil {
			// What was read before the error is stored and acknowledged.
			in.flush()
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
		if encrypted && bytes.HasPrefix(line, roomLinePrefix) {
			// Our room lines, as we write them: parsed once, not
			// tried as a chat line and a punch first.
			if rl, err := decodeRoomLine(line); err == nil {
				in.rooms = append(in.rooms, rl)
				if lr.Buffered() == 0 || len(in.rooms) >= maxReceiveBatch {
					in.flushRooms()
				}
				continue
			}
		}
		msg, err := protocol.DecodeChatLine(line)
		if err != nil {
			if p, perr := protocol.DecodePunch(line); perr == nil && encrypted {
				if !in.flush() {
					return
				}
				if err := n.answerPunch(conn, p, from, &punch); err != nil {
					n.log.Debug("punch answer not sent", "to", remote, "err", err)
					return
				}
				continue
			}
			if encrypted {
				if rl, rerr := decodeRoomLine(line); rerr == nil {
					in.rooms = append(in.rooms, rl)
					if lr.Buffered() == 0 || len(in.rooms) >= maxReceiveBatch {
						in.flushRooms()
					}
					continue
				}
			}
			n.log.Warn("invalid message line skipped", "from", remote, "err", err)
			continue
		}
		now := time.Now()
		if msg.Expires != 0 && now.Unix() >= msg.Expires {
			// The sender has told its user that this one expired.
			n.log.Info("expired message dropped", "from", remote, "id", msg.ID)
			continue
		}
		m := Message{
			From: msg.From, Text: msg.Content, Sent: time.Unix(msg.Timestamp, 0),
			Received: now, Remote: remote, ID: msg.ID, Instance: msg.Instance,
			Encrypted: encrypted,
		}
		if encrypted {
			// The session proved who wrote: its nickname and instance
			// stand, whatever the line claims.
			if msg.From != from.Nickname {
				n.log.Warn("message from field differs from the session's nickname", "from", remote, "claimed", msg.From, "session", from.Nickname)
			}
			m.From, m.Instance, m.Key = from.Nickname, from.Instance, key
		}
		m.InvalidFrom = protocol.ValidateNickname(m.From) != nil
		in.batch = append(in.batch, m)
		// Pipelined lines already read are stored and acknowledged
		// together: one commit and one write for the batch.
		if lr.Buffered() == 0 || len(in.batch) >= maxReceiveBatch {
			if !in.flush() {
				return
			}
		}
	}
}

// maxReceiveBatch bounds the messages stored and acknowledged together.
const maxReceiveBatch = 512

// inbound is the receiving side of one connection: messages read and not
// yet stored.
type inbound struct {
	n      *Node
	c      net.Conn // the raw conn, for deadlines
	conn   net.Conn // what acks are written to
	remote netip.AddrPort
	batch  []Message
	acks   []byte
	// Room lines (sessions only), from the member key proved, whose
	// session nickname is nick.
	rooms     []roomLine
	key, nick string
	roomLines bool // the session carried room lines: a member's link
}

// flushRooms hands the room lines read to the rooms.
func (in *inbound) flushRooms() {
	if len(in.rooms) == 0 {
		return
	}
	in.n.receiveRoom(in.key, in.nick, in.rooms)
	in.roomLines = true
	clear(in.rooms)
	in.rooms = in.rooms[:0]
}

// flush stores the batch (new messages only: the store knows every id
// stored before, in any run), shows the new ones, in order, and then
// acknowledges all of them, so that an ack always means "on the
// receiver's disk". It reports whether the connection can go on.
func (in *inbound) flush() bool {
	n := in.n
	in.flushRooms()
	if len(in.batch) == 0 {
		return true
	}
	defer func() {
		clear(in.batch)
		in.batch = in.batch[:0]
	}()
	rows := make([]*store.Message, len(in.batch))
	for i, m := range in.batch {
		rows[i] = &store.Message{
			ID: m.ID, PeerKey: m.Key, PeerNick: m.From, Dir: store.In, Text: m.Text,
			Sent: m.Sent, Received: m.Received, Status: store.Received, Encrypted: m.Encrypted,
		}
	}
	isNew, err := n.store.AddIncomingSync(n.ctx, rows)
	n.lastStored.Store(time.Now().UnixNano())
	if err != nil {
		// Not stored, so not acknowledged: the sender tries again.
		if n.ctx.Err() == nil {
			n.log.Error("received messages not stored; not acknowledged", "from", in.remote, "err", err)
			n.emit(Event{Kind: EventStatus, Time: time.Now(), Err: err,
				Text: fmt.Sprintf("could not store %d message(s) from %s, so they were not acknowledged (the sender will try again): %v", len(rows), in.batch[0].From, err)})
		}
		return false
	}
	// One trip to the event loop for the batch's trust states (one
	// sender, as a rule).
	_ = n.read(n.ctx, func(ls *loopState) {
		for i := range in.batch {
			m := &in.batch[i]
			if i > 0 && m.From == in.batch[i-1].From && m.Key == in.batch[i-1].Key {
				m.Trust = in.batch[i-1].Trust
				continue
			}
			m.Trust = ls.trust.State(m.From, m.Key)
		}
	})
	for i, m := range in.batch {
		if !isNew[i] {
			n.log.Debug("duplicate message dropped", "from", m.From, "id", m.ID)
			continue
		}
		if err := n.events.emitWait(n.ctx, Event{Kind: EventMessage, Time: m.Received, Message: m}); err != nil {
			return false
		}
	}
	in.acks = in.acks[:0]
	for _, m := range in.batch {
		if m.ID == "" {
			continue
		}
		if acks, err := protocol.AppendAck(in.acks, &protocol.Ack{ID: m.ID}); err == nil {
			in.acks = acks
		}
	}
	if len(in.acks) == 0 {
		return true
	}
	if err := in.c.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout)); err != nil {
		return false
	}
	if _, err := in.conn.Write(in.acks); err != nil {
		n.log.Debug("acks not sent", "to", in.remote, "err", err)
		return false
	}
	return true
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

package chat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// Delivery to peers with a key goes through one outbox per identity key.
// Post submits the message to the store (Pending) and hands it, in order,
// to the key's outbox, whose runner writes up to Window messages on one
// connection before the first ack comes back and marks them Delivered
// (group-committed) as the acks arrive. Writing does not wait for the
// row's commit, so that a busy sender's store usually gets the ack in the
// same transaction as the row and writes it once, Delivered (see
// store.MarkDelivered); what is said about a message still waits for its
// row: Delivered follows the commit of the delivery, which follows the
// row's, and Queued waits for the row (Outgoing.queued). A peer that is offline or unreachable keeps its messages in
// the store: Post's caller hears Queued, and the runner delivers them, in
// order, as soon as that key is seen again (a registry change wakes it; a
// peer that is listed but does not answer is retried with backoff).
// Messages queued in an earlier run are picked up at Start.
const (
	// Window is how many messages may wait for their acks on one
	// connection.
	Window = 1024
	// MaxOutstanding bounds the Posts whose outcome is not known yet;
	// Post waits beyond it (backpressure for a script that pipes in
	// messages faster than the peer takes them). Twice Window keeps a
	// window's worth ready to write while the other is acknowledged, and
	// a message's ack coming back well within store.DefaultFoldWait of
	// its Post, so that its row is written once (at 8192, a message
	// waited about 150 ms in memory at full rate, and most rows were
	// written twice).
	MaxOutstanding = 2 * Window
	// maxBacklog bounds the messages an outbox holds in memory; the rest
	// stay in the store and are read back when the backlog runs dry.
	maxBacklog = 2 * MaxOutstanding
	// DefaultMessageTTL is how long a message waits in the offline queue.
	DefaultMessageTTL = 7 * 24 * time.Hour
	// maxWriteBatch is how many bytes of lines go in one write.
	maxWriteBatch = 60 << 10
	// retryMin and retryMax bound the wait before trying again a peer
	// that is listed but cannot be reached.
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// ErrExpired: the message waited in the queue for its whole TTL.
var ErrExpired = errors.New("chat: message expired in the queue")

// Outgoing is a message handed to Post. Wait tells what became of it.
type Outgoing struct {
	done    chan struct{}
	once    sync.Once
	res     SendResult
	err     error
	release func()

	mu     sync.Mutex
	stored bool // its row committed
	queue  bool // Queued was decided before the row committed
}

func newOutgoing(res SendResult, release func()) *Outgoing {
	return &Outgoing{done: make(chan struct{}), res: res, release: release}
}

// resolve settles the outcome once.
func (o *Outgoing) resolve(st Status, err error) {
	o.once.Do(func() {
		o.res.Status, o.err = st, err
		close(o.done)
		if o.release != nil {
			o.release()
		}
	})
}

// queued settles the outcome as Queued once the message's row is
// committed: a message is never reported before it is on disk. It reports
// whether the row is still to come.
func (o *Outgoing) queued() (waiting bool) {
	o.mu.Lock()
	stored := o.stored
	o.queue = !stored
	o.mu.Unlock()
	if stored {
		o.resolve(Queued, nil)
	}
	return !stored
}

// rowStored records that the message's row committed, and settles a
// Queued decided before.
func (o *Outgoing) rowStored() {
	o.mu.Lock()
	o.stored = true
	q := o.queue
	o.mu.Unlock()
	if q {
		o.resolve(Queued, nil)
	}
}

// Done is closed when the outcome is known.
func (o *Outgoing) Done() <-chan struct{} { return o.done }

// Wait waits for the outcome: Delivered (acknowledged), Sent (written to
// an original peer), Queued (the peer is offline or unreachable; the
// message waits in the store, and an EventDelivered or EventExpired tells
// its end), or an error. A canceled ctx stops the waiting, not the message.
func (o *Outgoing) Wait(ctx context.Context) (SendResult, error) {
	select {
	case <-o.done:
		return o.res, o.err
	case <-ctx.Done():
		return o.res, ctx.Err()
	}
}

type outEntry struct {
	seq     int64
	id      string
	text    string
	sent    time.Time
	expires time.Time
	written time.Time
	// failed: its row could not be stored; it is not written (again).
	failed atomic.Bool
}

// outbox holds what waits for one identity key.
type outbox struct {
	n   *Node
	key string

	// postMu keeps Posts to the key in seq order: held from the store's
	// AddOutgoing to push. Never taken by the store's callbacks.
	postMu sync.Mutex

	mu         sync.Mutex
	backlog    []*outEntry         // posted, not yet written, ascending seq
	spill      bool                // the store holds pending messages not in backlog
	maxSpilled int64               // the highest seq left in the store only
	lastSeq    int64               // the highest seq taken into memory
	handles    map[int64]*Outgoing // Posts still waiting, by seq
	running    bool
	wake       chan struct{} // 1-buffered
}

func (n *Node) outboxFor(key string) *outbox {
	n.mu.Lock()
	defer n.mu.Unlock()
	ob, ok := n.outboxes[key]
	if !ok {
		ob = &outbox{n: n, key: key, handles: make(map[int64]*Outgoing), wake: make(chan struct{}, 1)}
		n.outboxes[key] = ob
	}
	return ob
}

// kickKey wakes the outbox of key, if it has one: the peer was seen.
func (n *Node) kickKey(key string) {
	if key == "" {
		return
	}
	n.mu.Lock()
	ob := n.outboxes[key]
	n.mu.Unlock()
	if ob != nil {
		ob.kick()
	}
}

// kick starts the runner, or wakes it.
func (ob *outbox) kick() {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.running {
		select {
		case ob.wake <- struct{}{}:
		default:
		}
		return
	}
	if !ob.hasWorkLocked() {
		return
	}
	ob.running = ob.n.goIfOpen(ob.run)
}

func (ob *outbox) hasWorkLocked() bool { return len(ob.backlog) > 0 || ob.spill }

// push takes a message submitted to the store, in seq order (Post holds
// postMu).
func (ob *outbox) push(e *outEntry, h *Outgoing) {
	ob.mu.Lock()
	if h != nil {
		ob.handles[e.seq] = h
	}
	if ob.spill || len(ob.backlog) >= maxBacklog {
		ob.spill = true
		ob.maxSpilled = max(ob.maxSpilled, e.seq)
	} else {
		ob.backlog = append(ob.backlog, e)
		ob.lastSeq = e.seq
	}
	ob.mu.Unlock()
	ob.kick()
	if !ob.isRunning() && h != nil {
		// The node is closing: the message stays queued in the store.
		ob.settleQueued()
	}
}

func (ob *outbox) isRunning() bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.running
}

// next takes the next message to write: from the backlog, reading the
// store when the backlog ran dry while it holds more. A message too close
// to its expiry to be acknowledged before it is left alone: the expiry
// check reports it.
func (ob *outbox) next(ctx context.Context, now time.Time, ackTimeout time.Duration) (*outEntry, error) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	settled := false
	for {
		if len(ob.backlog) == 0 && ob.spill {
			if err := ob.loadLocked(ctx, settled); err != nil {
				return nil, err
			}
			if len(ob.backlog) == 0 && ob.spill {
				// Spilled rows not committed yet: wait for them, without
				// the lock, which the store's callbacks take.
				ob.mu.Unlock()
				err := ob.n.store.Settle(ctx)
				ob.mu.Lock()
				if err != nil {
					return nil, err
				}
				settled = true
				continue
			}
		}
		if len(ob.backlog) == 0 {
			return nil, nil
		}
		e := ob.backlog[0]
		ob.backlog[0] = nil
		ob.backlog = ob.backlog[1:]
		if e.failed.Load() || !e.expires.IsZero() && e.expires.Sub(now) < ackTimeout {
			continue
		}
		return e, nil
	}
}

// loadLocked reads the next pending messages from the store. A message
// posted while the read ran is not lost: push recorded its seq in
// maxSpilled, and the spill ends only once lastSeq has passed it, or,
// after everything posted had settled (settled), once the store has no
// more: a row that failed to be stored never comes.
func (ob *outbox) loadLocked(ctx context.Context, settled bool) error {
	const page = 4096
	// Reading with the lock held keeps Post waiting for the length of one
	// indexed read; the simplicity is worth it here.
	rows, err := ob.n.store.Pending(ctx, ob.key, ob.lastSeq, page)
	if err != nil {
		return err
	}
	for _, m := range rows {
		ob.backlog = append(ob.backlog, &outEntry{seq: m.Seq, id: m.ID, text: m.Text, sent: m.Sent, expires: m.Expires})
		ob.lastSeq = m.Seq
	}
	if len(rows) < page && (settled || ob.lastSeq >= ob.maxSpilled) {
		ob.spill = false
	}
	return nil
}

// failed forgets a message whose row could not be stored.
func (ob *outbox) failed(e *outEntry, seq int64) {
	e.failed.Store(true)
	ob.mu.Lock()
	delete(ob.handles, seq)
	ob.mu.Unlock()
}

// requeue puts messages written on a connection that failed back at the
// front of the backlog, in order.
func (ob *outbox) requeue(es []*outEntry) {
	ob.mu.Lock()
	ob.backlog = append(slices.Clone(es), ob.backlog...)
	ob.mu.Unlock()
}

// settleQueued tells every waiting Post that its message is queued.
func (ob *outbox) settleQueued() {
	ob.mu.Lock()
	hs := ob.handles
	ob.handles = make(map[int64]*Outgoing)
	ob.mu.Unlock()
	waiting := false
	for _, h := range hs {
		waiting = h.queued() || waiting
	}
	if waiting {
		// Rows the store holds back for their acks, which will not come
		// now: the user hears Queued once they are written.
		ob.n.store.WriteHeld()
	}
}

// stopUnlessWoken ends the runner unless a kick came meanwhile.
func (ob *outbox) stopUnlessWoken() bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	select {
	case <-ob.wake:
		return false
	default:
	}
	ob.running = false
	return true
}

// stop ends the runner for good (the node is closing): whatever waits is
// told queued, also a Post whose commit lands after this (push sees the
// runner stopped and cannot start another).
func (ob *outbox) stop() {
	ob.mu.Lock()
	ob.running = false
	ob.mu.Unlock()
	ob.settleQueued()
}

// run delivers the outbox's messages while there are any and the peer is
// reachable.
func (ob *outbox) run() {
	n := ob.n
	wait := time.Duration(0)
	retried := false
	for {
		ob.mu.Lock()
		work := ob.hasWorkLocked()
		ob.mu.Unlock()
		if !work && ob.stopUnlessWoken() {
			return
		}
		peer, ok := n.livePeerWithKey(ob.key)
		if !ok {
			ob.settleQueued()
			if ob.stopUnlessWoken() {
				return
			}
			continue
		}
		pc, err := n.peerConn(peer)
		if err != nil {
			ob.stop()
			return
		}
		reused, err := ob.deliver(peer, pc)
		if err == nil {
			wait, retried = 0, false
			continue
		}
		if n.ctx.Err() != nil {
			ob.stop()
			return
		}
		if reused && !retried && errors.Is(err, ErrBroken) {
			// A kept-open connection the peer had closed: redial once
			// at once.
			retried = true
			continue
		}
		retried = false
		n.log.Info("peer unreachable; messages stay queued", "peer", peer.Nickname, "err", err)
		ob.settleQueued()
		wait = min(max(2*wait, retryMin), retryMax)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ob.wake:
			t.Stop()
		case <-n.ctx.Done():
			t.Stop()
			ob.stop()
			return
		}
	}
}

// livePeerWithKey finds a listed peer whose session would prove key.
func (n *Node) livePeerWithKey(key string) (registry.Peer, bool) {
	var peer registry.Peer
	found := false
	_ = n.read(n.ctx, func(ls *loopState) {
		for _, p := range ls.reg.List() {
			if sessionKey(p) == key && (!found || p.LastSeen.After(peer.LastSeen)) {
				peer, found = p, true
			}
		}
	})
	return peer, found
}

// deliver writes the backlog on pc's connection (dialling one if needed),
// pipelined, until every message written is acknowledged.
func (ob *outbox) deliver(peer registry.Peer, pc *peerConn) (reused bool, err error) {
	n := ob.n
	ctx := n.ctx
	select {
	case pc.token <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-pc.token }()
	if pc.idle != nil {
		pc.idle.Stop()
	}
	reused = pc.conn != nil
	if !reused {
		c, raw, err := n.connect(ctx, peer)
		if err != nil {
			return false, err
		}
		pc.conn, pc.raw, pc.lr, pc.path, pc.punched = c, raw, protocol.NewLineReader(c), n.pathTo(peer), false
	}
	if err := ob.stream(ctx, peer, pc); err != nil {
		n.untrackConn(pc.raw)
		pc.conn, pc.raw, pc.lr = nil, nil, nil
		return reused, sendError(peer, "send", err)
	}
	pc.lastUsed = time.Now()
	n.armIdle(pc)
	if !reused && pc.path == PathRelayed {
		n.maybePunch(peer, pc)
	}
	return reused, nil
}

// stream is the pipelined exchange: it keeps up to Window messages
// written and not acknowledged, and returns once none is left to write
// and all are acknowledged. On an error the unacknowledged ones go back
// to the backlog, to be written again (the receiver drops what it has).
func (ob *outbox) stream(ctx context.Context, peer registry.Peer, pc *peerConn) (err error) {
	n := ob.n
	conn := pc.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var inflight []*outEntry
	var recorded <-chan struct{} = closedChan
	defer func() {
		if len(inflight) > 0 {
			ob.requeue(inflight)
		}
		// The caller may tell the waiting Posts "queued" next: the
		// deliveries read so far must be settled first.
		<-recorded
	}()
	buf := make([]byte, 0, maxWriteBatch+protocol.MaxLineSize)
	write := func() error {
		if len(buf) == 0 {
			return nil
		}
		if err := conn.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout)); err != nil {
			return err
		}
		_, err := conn.Write(buf)
		buf = buf[:0]
		return err
	}
	for {
		now := time.Now()
		for len(inflight) < Window {
			e, err := ob.next(ctx, now, n.cfg.AckTimeout)
			if err != nil {
				return err
			}
			if e == nil {
				break
			}
			m := protocol.ChatMessage{From: n.cfg.Nickname, Content: e.text, Timestamp: e.sent.Unix(), ID: e.id, Instance: n.instance}
			if !e.expires.IsZero() {
				// Rounded down: the receiver drops it from that second
				// on, never after we report it expired.
				m.Expires = e.expires.Unix()
			}
			if buf, err = protocol.AppendChatLine(buf, &m); err != nil { // Post checked the length
				n.log.Error("queued message not encodable; left in the queue", "seq", e.seq, "err", err)
				continue
			}
			e.written = now
			inflight = append(inflight, e)
			if len(buf) >= maxWriteBatch {
				if err := write(); err != nil {
					return err
				}
			}
		}
		if err := write(); err != nil {
			return err
		}
		if len(inflight) == 0 {
			return nil
		}
		if err := conn.SetReadDeadline(inflight[0].written.Add(n.cfg.AckTimeout)); err != nil {
			return err
		}
		var acked []*outEntry
		for {
			b, err := pc.lr.ReadLine()
			if err != nil {
				recorded = ob.delivered(peer, acked)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return fmt.Errorf("no ack within %v: %w", n.cfg.AckTimeout, err)
				}
				return err
			}
			ack, err := protocol.DecodeAck(b)
			if err != nil {
				n.log.Debug("unexpected line while waiting for acks", "err", err)
			} else if len(inflight) > 0 && inflight[0].id == ack.ID {
				// The usual case: acks come in the order written.
				// Reslicing, unlike slices.Delete, moves nothing: a
				// window of pointers moved per ack was a tenth of the
				// sender's CPU.
				acked = append(acked, inflight[0])
				inflight[0] = nil
				inflight = inflight[1:]
			} else if i := slices.IndexFunc(inflight, func(e *outEntry) bool { return e.id == ack.ID }); i >= 0 {
				acked = append(acked, inflight[i])
				inflight = slices.Delete(inflight, i, i+1)
			}
			if pc.lr.Buffered() == 0 || len(inflight) == 0 {
				break
			}
		}
		recorded = ob.delivered(peer, acked)
	}
}

// closedChan is a channel that is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// delivered records acknowledged messages; once that is committed, their
// Posts hear Delivered, and messages nobody waits for any more (queued
// earlier, or in an earlier run) are reported with EventDelivered. The
// channel is closed when that is done. Commits complete in order, so
// waiting for the last one waits for all before it.
func (ob *outbox) delivered(peer registry.Peer, es []*outEntry) <-chan struct{} {
	if len(es) == 0 {
		return closedChan
	}
	settled := make(chan struct{})
	n := ob.n
	seqs := make([]int64, len(es))
	for i, e := range es {
		seqs[i] = e.seq
	}
	at := time.Now()
	n.store.MarkDelivered(seqs, at, func(err error) {
		defer close(settled)
		if err != nil {
			// The peer has them; only our record is behind. The rows stay
			// Pending and are sent again later, and the peer drops them
			// as duplicates.
			n.log.Error("delivery not recorded", "peer", peer.Nickname, "err", err)
			n.emit(Event{Kind: EventStatus, Time: at, Err: err, Text: "could not record deliveries: " + err.Error()})
			return
		}
		ob.mu.Lock()
		hs := make([]*Outgoing, len(es))
		for i, e := range es {
			hs[i] = ob.handles[e.seq]
			delete(ob.handles, e.seq)
		}
		ob.mu.Unlock()
		for i, e := range es {
			if hs[i] != nil {
				hs[i].resolve(Delivered, nil)
				continue
			}
			if e.failed.Load() {
				continue // not stored: its Post was told
			}
			n.emit(Event{Kind: EventDelivered, Time: at, Peer: peer, Stored: store.Message{
				Seq: e.seq, ID: e.id, PeerKey: ob.key, PeerNick: peer.Nickname, Dir: store.Out,
				Text: e.text, Sent: e.sent, Delivered: at, Status: store.Delivered, Encrypted: true,
			}})
		}
	})
	return settled
}

// searchIndexIdle is how long the node must have stored no message before
// it brings the search index up to date in the background (a /search
// does it first in any case).
const searchIndexIdle = 10 * time.Second

// expireLoop ends queued messages whose TTL ran out, and tells the user;
// when the node is idle, it also updates the search index.
func (n *Node) expireLoop() {
	period := min(time.Minute, max(n.cfg.MessageTTL/20, 10*time.Millisecond))
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if last := n.lastStored.Load(); last != 0 && time.Since(time.Unix(0, last)) >= searchIndexIdle {
			n.lastStored.Store(0)
			if err := n.store.IndexSearch(n.ctx); err != nil && n.ctx.Err() == nil {
				n.log.Warn("search index not updated", "err", err)
			}
		}
		rows, err := n.store.ExpireDue(n.ctx, time.Now())
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Error("queue expiry failed", "err", err)
			}
			continue
		}
		for _, m := range rows {
			n.mu.Lock()
			ob := n.outboxes[m.PeerKey]
			n.mu.Unlock()
			if ob != nil {
				ob.dropExpired(m.Seq)
			}
			n.log.Info("queued message expired", "peer", m.PeerNick, "seq", m.Seq)
			n.emit(Event{Kind: EventExpired, Time: time.Now(), Stored: m})
		}
	}
}

// dropExpired forgets an expired message: it is no longer sent, and a
// Post still waiting for it hears ErrExpired.
func (ob *outbox) dropExpired(seq int64) {
	ob.mu.Lock()
	ob.backlog = slices.DeleteFunc(ob.backlog, func(e *outEntry) bool { return e.seq == seq })
	h := ob.handles[seq]
	delete(ob.handles, seq)
	ob.mu.Unlock()
	if h != nil {
		h.resolve(Queued, ErrExpired)
	}
}

// restoreQueue makes an outbox for every key with messages queued in an
// earlier run; each is delivered when its peer shows up.
func (n *Node) restoreQueue(ctx context.Context) error {
	sum, err := n.store.QueueSummary(ctx)
	if err != nil {
		return err
	}
	for _, q := range sum {
		if q.PeerKey == "" {
			continue
		}
		ob := n.outboxFor(q.PeerKey)
		ob.mu.Lock()
		ob.spill = true
		ob.mu.Unlock()
	}
	return nil
}

// settleAll tells every Post still waiting that its message is queued:
// the node is closing.
func (n *Node) settleAll() {
	n.mu.Lock()
	obs := make([]*outbox, 0, len(n.outboxes))
	for _, ob := range n.outboxes {
		obs = append(obs, ob)
	}
	n.mu.Unlock()
	for _, ob := range obs {
		ob.settleQueued()
	}
}

// Store returns the node's message store.
func (n *Node) Store() *store.Store { return n.store }

// History returns the last limit messages exchanged with the peer that
// name means: by its identity key when it has (or, for a nickname not
// seen now, had) one, else by nickname (an original client).
func (n *Node) History(ctx context.Context, name string, limit int) ([]store.Message, error) {
	var key, nick string
	if err := n.read(ctx, func(ls *loopState) {
		nick = name
		if p, err := ls.reg.Resolve(name); err == nil {
			key, nick = sessionKey(p), p.Nickname
			return
		}
		if pin, ok := ls.trust.Lookup(name); ok {
			key = pin.Key
		}
	}); err != nil {
		return nil, err
	}
	return n.store.History(ctx, key, nick, limit)
}

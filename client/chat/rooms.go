package chat

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/parlance-chat/parlance/client/room"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// Rooms: group chat without a server. client/room holds the pure part
// (names, keys, membership tags, signatures, the causal log); this file
// wires it to the node.
//
// Membership comes from discovery: our announces and registrations carry
// a tag per joined room (setRoomTags), and a peer is a member of a room
// when the tags it announced, signed with its key, hold its tag for that
// room (room.IsMember) and it has the rooms and noise capabilities.
// Membership is re-evaluated on every registry change, off the event
// loop (observeRoomPeer only queues the change).
//
// Traffic: room_msg and room_sum lines travel over the pairwise sessions,
// one way on each connection: each member keeps a link per other member
// (roomLink), a kept-open session it writes room lines on, and reads room
// lines on the connections others open to it (serve). Nothing is
// acknowledged: a line lost with a broken connection comes back through
// anti-entropy, which is pulled: a summary says what its sender holds,
// and only a summary that asks for some authors is answered with
// messages. A member that learns another holds more asks it (one member
// per author, until that ask is answered or times out), so a member back
// from a restart gets each message it missed once, not once from every
// member (answerSummaryLocked). A link that (re)connects first sends our
// summary of every room the two share; a summary showing that its sender
// lacks something we hold is answered with ours (at most once a second
// per member and room), so that it can ask. Every member sends its
// summary to a member as soon as it appears, and every RoomSyncInterval
// to a few members in turn, when it changed (syncRoundLocked).
//
// Display and storage: a message is stored and marked shown (one commit
// for a batch) before its event is emitted, in the log's causal order;
// our own message is stored before it leaves, so a restart never reuses
// its seq with other text. A restarted node restores each room's log from
// the store (room.Log.Restore).
//
// Bounds: the log's (members, pending, history); per-author rates for
// what an author sends us itself (allowLocked): its live messages (written
// in the last minute) at RoomRate a second in bursts of RoomBurst, and
// all of them at RoomRate in bursts of a history's worth, so that a
// member back from a partition sends what it wrote meanwhile, and one
// that backdates its messages still cannot flood. Past them messages are
// dropped, the user is told once per RoomSyncInterval, and anti-entropy
// brings them later at the pace of its exchanges. Our own posts past the
// live rate are refused (ErrRoomRate), so that others do not throttle
// us. At most protocol.MaxRoomTags rooms joined.

// Room timings and bounds.
const (
	// RoomSyncInterval is how often members exchange summaries.
	RoomSyncInterval = 30 * time.Second
	// DefaultRoomRate and DefaultRoomBurst bound each author's live
	// messages per room: a sustained rate per second and a burst.
	DefaultRoomRate  = 10
	DefaultRoomBurst = 30
	// roomTick is how often a room with messages waiting is asked for
	// what the causal wait released.
	roomTick = 250 * time.Millisecond
	// roomLinkQueue bounds the lines waiting on one link; past it the
	// oldest go (anti-entropy brings them).
	roomLinkQueue = 4096
	// roomLinkIdle closes a link's session after this long unused. A
	// member of a big room writes on most of its links only when it
	// posts (summary rounds reach a few members at a time), and
	// reconnecting costs a Noise handshake per member on the post that
	// finds the links closed: roombench at 100 members, posting in turn
	// (each member every 100 s), saw 6,290 reconnections and p50 129 ms
	// to reach all with links closing after 90 s, 0 and 61 ms with links
	// kept open. An idle session costs a socket at each end and no
	// traffic. The receiving side keeps a session that carried room
	// lines open longer still (roomReceiveIdle), so the writer closes
	// first and knows it.
	roomLinkIdle = 10 * time.Minute
	// roomReceiveIdle replaces ReceiveIdleTimeout, if shorter, on a
	// session once it carried a room line.
	roomReceiveIdle = roomLinkIdle + time.Minute
	// liveWindow: a message written this recently and sent by its author
	// is live, and counts toward the author's rate.
	liveWindow = time.Minute
)

// Errors of the room methods.
var (
	ErrNotInRoom    = errors.New("chat: not in that room")
	ErrNoRoom       = errors.New("chat: no current room")
	ErrTooManyRooms = fmt.Errorf("chat: at most %d rooms can be joined", protocol.MaxRoomTags)
	ErrRoomRate     = errors.New("chat: sending too fast in this room")
)

// RoomInfo describes a joined room.
type RoomInfo struct {
	Name    string // with its '#'
	ID      string
	Private bool
	Current bool
	Joined  time.Time
	// Members are the other members seen now, sorted by nickname.
	Members []RoomMember
}

// RoomMember is a peer in a room.
type RoomMember struct {
	Nickname string
	Key      string // identity key, wire form
}

// RoomMessage is a room message shown to the user. Its fields are
// network input: sanitise them before showing them on a terminal.
type RoomMessage struct {
	Room   string // the room's name, with its '#'
	RoomID string
	Author string // the author's identity key (wire form); the signature proved it
	Nick   string // the nickname the author wrote in the message
	Seq    uint64
	// Sent is the author's clock when it wrote the message; Received
	// when it reached us.
	Sent, Received time.Time
	Text           string
	// Own: the message is ours (shown when posted, or, after a restart
	// without our history, when anti-entropy brought it back).
	Own bool
	// Forced: it waited for what its author had seen and was shown
	// without Unmet of them; Late: later messages of its author were
	// shown before it.
	Forced bool
	Late   bool
	Unmet  int
	// Trust is Nick's state with Author in the known-peers store;
	// InvalidNick says Nick is not a valid nickname.
	Trust       trust.State
	InvalidNick bool
}

// RoomPost is what PostRoom did.
type RoomPost struct {
	Message RoomMessage
	// Members is how many members it was sent to now; the others get it
	// through anti-entropy.
	Members int
}

// rooms is the node's joined rooms. mu guards everything but the links'
// own state; it is never held across I/O or a call into the event loop.
type rooms struct {
	n *Node

	mu      sync.Mutex
	byID    map[string]*joinedRoom
	current string // room ID; "" for none

	linksMu sync.Mutex // guards links; taken with or without mu
	links   map[string]*roomLink

	obsMu   sync.Mutex
	changes []roomPeerChange // queued by the event loop
	wake    chan struct{}    // 1-buffered: changes queued or a room joined
}

// joinedRoom is one room's state, guarded by rooms.mu.
type joinedRoom struct {
	name    room.Name
	r       *room.Room
	log     *room.Log
	private bool
	joined  time.Time
	members map[string]string        // key → nickname
	limits  map[string]*rate.Limiter // live messages, by author
	totals  map[string]*rate.Limiter // all an author sends us, by author
	noticed map[string]time.Time     // rate notices, by author
	replied map[string]time.Time     // summary answers, by member
	sent    map[string]*sentTo       // what answers sent each member lately
	asked   map[string]askedOf       // our latest ask, by author
	summed  map[string]summed        // latest periodic summary, by member
	round   int                      // where the next summary round starts, in the sorted members
	// roundSends counts the summaries sent by rounds (tests).
	roundSends int
	// order keeps deliveries shown in the order the log gave them:
	// taken while mu is held, released after the emit.
	order sync.Mutex
}

// roomPeerChange is a registry change, as the rooms need it.
type roomPeerChange struct {
	peer registry.Peer
	// tell: the peer changed its rooms (an update of a peer known
	// before), so a membership change is told to the user; a peer that
	// appears or goes is told as a peer already.
	tell bool
	// gone: no entry with the peer's key is left.
	gone bool
	// restarted: the peer is a new instance of a key known before: our
	// links to it hold sessions to the old one.
	restarted bool
	// done, when set, is closed once the changes queued before it are
	// applied (JoinRoom waits for it); peer is then unset.
	done chan struct{}
}

func newRooms(n *Node) *rooms {
	return &rooms{n: n, byID: make(map[string]*joinedRoom), links: make(map[string]*roomLink), wake: make(chan struct{}, 1)}
}

// load restores the rooms joined in earlier runs. Called by Start before
// the first announce.
func (rs *rooms) load(ctx context.Context) error {
	rows, err := rs.n.store.Rooms(ctx)
	if err != nil {
		return err
	}
	for _, row := range rows {
		name, err := room.ParseName(row.Name)
		if err != nil {
			return fmt.Errorf("stored room %q: %w", row.Name, err)
		}
		r := room.FromKey(name, row.Key, row.Private)
		j, err := rs.open(ctx, name, r, row.Private, row.Joined, row.NextSeq)
		if err != nil {
			return err
		}
		rs.byID[r.ID] = j
		if row.Current {
			rs.current = r.ID
		}
	}
	rs.n.setRoomTags(rs.tagsLocked())
	return nil
}

// open builds a room's log from what the store holds of it.
func (rs *rooms) open(ctx context.Context, name room.Name, r *room.Room, private bool, joined time.Time, nextSeq uint64) (*joinedRoom, error) {
	n := rs.n
	log, err := room.NewLog(room.LogConfig{
		Room: r.ID, Key: n.cfg.Identity, Joined: joined,
		HistoryMessages: n.cfg.RoomHistoryMessages, HistoryAge: n.cfg.RoomHistoryAge,
	})
	if err != nil {
		return nil, err
	}
	authors, err := n.store.RoomAuthors(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	restored := make([]room.Restored, 0, len(authors)+1)
	self := false
	for _, a := range authors {
		x := room.Restored{Author: a.Author, Shown: a.Shown, Highest: a.Highest}
		if a.Author == n.pubKey {
			x.Highest, self = max(x.Highest, nextSeq-1), true
		}
		restored = append(restored, x)
	}
	if !self && nextSeq > 1 {
		restored = append(restored, room.Restored{Author: n.pubKey, Highest: nextSeq - 1})
	}
	shown, err := n.store.RoomHistory(ctx, r.ID, n.cfg.RoomHistoryMessages)
	if err != nil {
		return nil, err
	}
	hist := make([]*protocol.RoomMessage, len(shown))
	for i := range shown {
		hist[i] = &shown[i].RoomMessage
	}
	if err := log.Restore(restored, hist); err != nil {
		return nil, fmt.Errorf("restore %s: %w", name, err)
	}
	// Stored and never shown (a crash between the two): they wait
	// again, and are shown when the log lets them through.
	all, err := n.store.RoomMessages(ctx, r.ID, n.cfg.RoomHistoryMessages)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for i := range all {
		if all[i].Shown == 0 {
			if _, err := log.Add(&all[i].RoomMessage, now); err != nil {
				n.log.Warn("stored room message not restored", "room", name.String(), "err", err)
			}
		}
	}
	return &joinedRoom{
		name: name, r: r, log: log, private: private, joined: joined,
		members: make(map[string]string), limits: make(map[string]*rate.Limiter), totals: make(map[string]*rate.Limiter),
		noticed: make(map[string]time.Time), replied: make(map[string]time.Time), sent: make(map[string]*sentTo), asked: make(map[string]askedOf), summed: make(map[string]summed),
	}, nil
}

// tagsLocked returns our membership tags, sorted.
func (rs *rooms) tagsLocked() []string {
	pub := rs.n.cfg.Identity.Public().(ed25519.PublicKey)
	tags := make([]string, 0, len(rs.byID))
	for _, j := range rs.byID {
		tags = append(tags, j.r.Tag(pub))
	}
	slices.Sort(tags)
	return tags
}

// find returns the room named name ("" for the current one).
func (rs *rooms) findLocked(name string) (*joinedRoom, error) {
	if name == "" {
		if j := rs.byID[rs.current]; j != nil {
			return j, nil
		}
		return nil, ErrNoRoom
	}
	nm, err := room.ParseName(name)
	if err != nil {
		return nil, err
	}
	for _, j := range rs.byID {
		if j.name == nm {
			return j, nil
		}
	}
	return nil, fmt.Errorf("%w %s (/join %s first)", ErrNotInRoom, nm, nm)
}

// sortedRooms returns the joined rooms by name, so that every walk over
// them is in one order (a simulation replays by seed).
func (rs *rooms) sortedLocked() []*joinedRoom {
	js := slices.Collect(maps.Values(rs.byID))
	slices.SortFunc(js, func(a, b *joinedRoom) int { return cmp.Compare(a.name.String(), b.name.String()) })
	return js
}

// JoinRoom joins the room name (creating it, in effect, if nobody has it),
// with secret for a private room ("" for a public one), and makes it the
// current room. Joining a room already joined makes it current. Joined
// rooms are kept in the store across restarts; the secret is not, only
// the key derived from it. A private room's key takes about 50 ms to
// derive (Argon2id; see client/room).
func (n *Node) JoinRoom(ctx context.Context, name, secret string) (RoomInfo, error) {
	nm, err := room.ParseName(name)
	if err != nil {
		return RoomInfo{}, err
	}
	r, err := room.New(nm, secret)
	if err != nil {
		return RoomInfo{}, err
	}
	rs := n.rooms
	rs.mu.Lock()
	_, have := rs.byID[r.ID]
	count := len(rs.byID)
	rs.mu.Unlock()
	if !have && count >= protocol.MaxRoomTags {
		return RoomInfo{}, ErrTooManyRooms
	}
	var j *joinedRoom
	if !have {
		now := time.Now()
		if err := n.store.JoinRoom(ctx, store.RoomRow{ID: r.ID, Name: nm.String(), Key: r.Key(), Private: secret != "", Joined: now, Current: true}); err != nil {
			return RoomInfo{}, err
		}
		rows, err := n.store.Rooms(ctx)
		if err != nil {
			return RoomInfo{}, err
		}
		row := store.RoomRow{Joined: now, NextSeq: 1}
		for _, x := range rows {
			if x.ID == r.ID {
				row = x
			}
		}
		if j, err = rs.open(ctx, nm, r, secret != "", row.Joined, row.NextSeq); err != nil {
			return RoomInfo{}, err
		}
	} else if err := n.store.SetCurrentRoom(ctx, r.ID); err != nil {
		return RoomInfo{}, err
	}
	rs.mu.Lock()
	if j != nil {
		if _, raced := rs.byID[r.ID]; !raced {
			rs.byID[r.ID] = j
		}
	}
	rs.current = r.ID
	tags := rs.tagsLocked()
	rs.mu.Unlock()
	// The room is in byID: from now on every registry change reaches it.
	// The peers listed now are queued behind the changes already queued,
	// from the event loop, so that none is applied out of order; the
	// join's answer lists them, so they are not told one by one.
	done := make(chan struct{})
	if err := n.read(ctx, func(ls *loopState) {
		chs := make([]roomPeerChange, 0, ls.reg.Len()+1)
		for _, p := range ls.reg.List() {
			chs = append(chs, roomPeerChange{peer: p})
		}
		rs.queue(append(chs, roomPeerChange{done: done}))
	}); err != nil {
		return RoomInfo{}, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return RoomInfo{}, ctx.Err()
	case <-n.ctx.Done():
		return RoomInfo{}, ErrClosed
	}
	rs.mu.Lock()
	j = rs.byID[r.ID]
	if j == nil { // left meanwhile
		rs.mu.Unlock()
		return RoomInfo{}, fmt.Errorf("%w %s: left while joining", ErrNotInRoom, nm)
	}
	info := rs.infoLocked(j)
	rs.mu.Unlock()
	n.setRoomTags(tags)
	n.log.Info("room joined", "room", nm.String(), "private", secret != "", "members", len(info.Members))
	return info, nil
}

// LeaveRoom leaves the room: it is no longer announced, nothing more of it
// is received or shown, and it is forgotten across restarts. Its messages
// stay in the history.
func (n *Node) LeaveRoom(ctx context.Context, name string) error {
	rs := n.rooms
	rs.mu.Lock()
	j, err := rs.findLocked(name)
	rs.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.store.LeaveRoom(ctx, j.r.ID); err != nil {
		return err
	}
	rs.mu.Lock()
	delete(rs.byID, j.r.ID)
	if rs.current == j.r.ID {
		rs.current = ""
	}
	tags := rs.tagsLocked()
	rs.mu.Unlock()
	n.setRoomTags(tags)
	n.log.Info("room left", "room", j.name.String())
	return nil
}

// SetCurrentRoom makes a joined room the current one: where PostRoom
// with no name, and the program's plain lines, go.
func (n *Node) SetCurrentRoom(ctx context.Context, name string) error {
	rs := n.rooms
	rs.mu.Lock()
	j, err := rs.findLocked(name)
	rs.mu.Unlock()
	if err != nil {
		return err
	}
	if err := n.store.SetCurrentRoom(ctx, j.r.ID); err != nil {
		return err
	}
	rs.mu.Lock()
	if rs.byID[j.r.ID] == j {
		rs.current = j.r.ID
	}
	rs.mu.Unlock()
	return nil
}

// CurrentRoom returns the current room's name, "" for none.
func (n *Node) CurrentRoom() string {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if j := rs.byID[rs.current]; j != nil {
		return j.name.String()
	}
	return ""
}

// Rooms returns the joined rooms, sorted by name.
func (n *Node) Rooms() []RoomInfo {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []RoomInfo
	for _, j := range rs.sortedLocked() {
		out = append(out, rs.infoLocked(j))
	}
	return out
}

// Room returns one joined room ("" for the current one).
func (n *Node) Room(name string) (RoomInfo, error) {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	j, err := rs.findLocked(name)
	if err != nil {
		return RoomInfo{}, err
	}
	return rs.infoLocked(j), nil
}

func (rs *rooms) infoLocked(j *joinedRoom) RoomInfo {
	info := RoomInfo{Name: j.name.String(), ID: j.r.ID, Private: j.private, Current: rs.current == j.r.ID, Joined: j.joined}
	for k, nick := range j.members {
		info.Members = append(info.Members, RoomMember{Nickname: nick, Key: k})
	}
	slices.SortFunc(info.Members, func(a, b RoomMember) int {
		return cmp.Or(cmp.Compare(a.Nickname, b.Nickname), cmp.Compare(a.Key, b.Key))
	})
	return info
}

// RoomHistory returns the last limit messages shown in the room, oldest
// first. The room must be joined (its name alone does not give its ID
// for a private room).
func (n *Node) RoomHistory(ctx context.Context, name string, limit int) ([]RoomMessage, error) {
	rs := n.rooms
	rs.mu.Lock()
	j, err := rs.findLocked(name)
	rs.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rows, err := n.store.RoomHistory(ctx, j.r.ID, limit)
	if err != nil {
		return nil, err
	}
	out := make([]RoomMessage, len(rows))
	for i := range rows {
		out[i] = n.roomMessage(j, &rows[i].RoomMessage, rows[i].Received)
	}
	n.roomTrust(ctx, out)
	return out, nil
}

func (n *Node) roomMessage(j *joinedRoom, m *protocol.RoomMessage, received time.Time) RoomMessage {
	return RoomMessage{
		Room: j.name.String(), RoomID: j.r.ID, Author: m.Author, Nick: m.Nick, Seq: m.Seq,
		Sent: time.UnixMilli(m.Time), Received: received, Text: m.Text, Own: m.Author == n.pubKey,
		InvalidNick: protocol.ValidateNickname(m.Nick) != nil,
	}
}

// roomTrust fills in the trust states, in one trip to the event loop.
func (n *Node) roomTrust(ctx context.Context, ms []RoomMessage) {
	if len(ms) == 0 {
		return
	}
	_ = n.read(ctx, func(ls *loopState) {
		for i := range ms {
			if ms[i].Own {
				ms[i].Trust = trust.StateVerified
				continue
			}
			ms[i].Trust = ls.trust.State(ms[i].Nick, ms[i].Author)
		}
	})
}

// PostRoom posts text to the room name ("" for the current room): it is
// signed, stored, and sent to every member seen now; members away get it
// when anti-entropy next runs between them and any member that has it.
func (n *Node) PostRoom(ctx context.Context, name, text string) (RoomPost, error) {
	rs := n.rooms
	now := time.Now()
	rs.mu.Lock()
	j, err := rs.findLocked(name)
	if err != nil {
		rs.mu.Unlock()
		return RoomPost{}, err
	}
	if !rs.limiterLocked(j, n.pubKey).AllowN(now, 1) {
		rs.mu.Unlock()
		return RoomPost{}, fmt.Errorf("%w: at most %d messages a second (bursts of %d); wait a moment", ErrRoomRate, n.cfg.RoomRate, n.cfg.RoomBurst)
	}
	m, err := j.log.Next(now, text, n.cfg.Nickname)
	if err != nil {
		rs.mu.Unlock()
		if errors.Is(err, protocol.ErrTooLarge) {
			err = fmt.Errorf("%w: %v", ErrTooLong, err)
		}
		return RoomPost{}, err
	}
	line, err := protocol.EncodeRoomMessage(m)
	if err != nil { // Next checked that it encodes
		rs.mu.Unlock()
		return RoomPost{}, err
	}
	members := slices.Sorted(maps.Keys(j.members))
	j.order.Lock()
	rs.mu.Unlock()
	err = n.storeShown(ctx, j, []*protocol.RoomMessage{m}, now)
	j.order.Unlock()
	if err != nil {
		return RoomPost{}, fmt.Errorf("chat: store the room message (not sent): %w", err)
	}
	for _, k := range members {
		rs.send(k, line)
	}
	out := RoomPost{Message: n.roomMessage(j, m, now), Members: len(members)}
	out.Message.Trust = trust.StateVerified
	return out, nil
}

// storeShown stores messages and marks them shown, in order, in one wait.
func (n *Node) storeShown(ctx context.Context, j *joinedRoom, ms []*protocol.RoomMessage, now time.Time) error {
	rows := make([]*store.RoomMessageRow, len(ms))
	keys := make([]store.RoomMsgKey, len(ms))
	for i, m := range ms {
		rows[i] = &store.RoomMessageRow{RoomMessage: *m, Received: now}
		keys[i] = store.RoomMsgKey{Author: m.Author, Seq: m.Seq}
	}
	var insertErr error
	n.store.AddRoomMessages(rows, func(_ []bool, err error) { insertErr = err })
	// The writer runs ops in order: once the mark is committed, the
	// insert before it is done too.
	if err := n.store.MarkRoomShownSync(ctx, j.r.ID, keys); err != nil {
		return err
	}
	return insertErr
}

// allowLocked applies the rate limits to a message its author sent us
// itself. A live one (written in the last liveWindow) takes a token of the
// author's live bucket (RoomRate a second, RoomBurst at once); any takes
// one of its total bucket (RoomRate a second, a history's worth at once),
// so that a member cannot flood by backdating its messages, while one
// back from a partition can still send what it wrote meanwhile.
func (rs *rooms) allowLocked(j *joinedRoom, m *protocol.RoomMessage, now time.Time) bool {
	total := j.totals[m.Author]
	if total == nil {
		total = rate.NewLimiter(rate.Limit(rs.n.cfg.RoomRate), max(rs.n.cfg.RoomBurst, rs.n.cfg.RoomHistoryMessages))
		j.totals[m.Author] = total
	}
	if now.Sub(time.UnixMilli(m.Time)) < liveWindow && !rs.limiterLocked(j, m.Author).AllowN(now, 1) {
		return false
	}
	return total.AllowN(now, 1)
}

func (rs *rooms) limiterLocked(j *joinedRoom, author string) *rate.Limiter {
	l := j.limits[author]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(rs.n.cfg.RoomRate), rs.n.cfg.RoomBurst)
		j.limits[author] = l
	}
	return l
}

// observeRoomPeer queues a registry change for the rooms. Called by the
// event loop for every change; it never blocks.
func (ls *loopState) observeRoomPeer(c registry.Change) {
	rs := ls.n.rooms
	if rs == nil || c.Kind == registry.Refreshed {
		return
	}
	var chs []roomPeerChange
	gone := func(p registry.Peer) roomPeerChange {
		k := sessionKey(p)
		still := false
		for _, q := range ls.reg.List() {
			if k != "" && sessionKey(q) == k {
				still = true
				break
			}
		}
		return roomPeerChange{peer: p, gone: !still}
	}
	switch c.Kind {
	case registry.Joined:
		chs = append(chs, roomPeerChange{peer: c.Peer})
	case registry.Updated:
		chs = append(chs, roomPeerChange{peer: c.Peer, tell: true})
	case registry.Restarted:
		if sessionKey(c.Old) != sessionKey(c.Peer) {
			chs = append(chs, gone(c.Old))
		}
		chs = append(chs, roomPeerChange{peer: c.Peer, restarted: true})
	case registry.Left, registry.Expired:
		chs = append(chs, gone(c.Peer))
	}
	rs.queue(chs)
}

// queue queues changes for the rooms goroutine and wakes it.
func (rs *rooms) queue(chs []roomPeerChange) {
	if len(chs) == 0 {
		return
	}
	rs.obsMu.Lock()
	rs.changes = append(rs.changes, chs...)
	rs.obsMu.Unlock()
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

// memberLocked re-evaluates p's membership of j from what it announced;
// tell says to tell the user of a change.
func (rs *rooms) memberLocked(j *joinedRoom, p registry.Peer, tell bool, now time.Time) {
	key := sessionKey(p)
	if key == "" || key == rs.n.pubKey {
		return
	}
	is := false
	if pub, err := protocol.ParsePublicKey(key); err == nil && protocol.HasCap(p.Caps, protocol.CapRooms) {
		is = j.r.IsMember(pub, p.Rooms)
	}
	rs.setMemberLocked(j, key, p.Nickname, is, tell, now)
}

func (rs *rooms) setMemberLocked(j *joinedRoom, key, nick string, is, tell bool, now time.Time) {
	n := rs.n
	old, was := j.members[key]
	switch {
	case is && !was:
		j.members[key] = nick
		if tell {
			n.emit(Event{Kind: EventRoomMember, Time: now, Text: fmt.Sprintf("%s joined %s", nick, j.name), Room: RoomMessage{Room: j.name.String(), RoomID: j.r.ID, Author: key, Nick: nick}})
		}
		// Catch up both ways: it answers with what we lack, and
		// answers our summary's gaps with its own.
		rs.sendSummaryLocked(j, key)
	case is && old != nick:
		j.members[key] = nick
	case !is && was:
		delete(j.members, key)
		// What we sent it: kept for members only, so that churn over a
		// long run does not keep old summaries alive.
		delete(j.summed, key)
		delete(j.sent, key)
		delete(j.replied, key)
		if tell {
			n.emit(Event{Kind: EventRoomMember, Time: now, Text: fmt.Sprintf("%s left %s", old, j.name), Room: RoomMessage{Room: j.name.String(), RoomID: j.r.ID, Author: key, Nick: old}})
		}
	}
}

func (rs *rooms) sendSummaryLocked(j *joinedRoom, key string) {
	s := j.log.Summary()
	rs.sendLocked(j, key, &s)
}

// sendLocked sends summary s of j to the member with key.
func (rs *rooms) sendLocked(j *joinedRoom, key string, s *protocol.RoomSummary) {
	line, err := protocol.EncodeRoomSummary(s)
	if err != nil {
		rs.n.log.Error("room summary not encoded", "room", j.name.String(), "err", err)
		return
	}
	rs.send(key, line)
}

// syncRoundLocked sends our summary of j to up to roundFanout members
// (to all in a room that small), taken in turn from the sorted members so
// that each gets one every ceil(members/roundFanout) rounds, and skips a
// member that was sent the same summary less than summaryRefresh ago.
//
// A round is a net for what live sending lost; it need not reach every
// member every time. Whoever we send ours to answers with its own if we
// lack something, and others send theirs to us: at 100 members a member
// lacking a message hears of it within a round from one of the about
// 2×roundFanout members exchanging with it, unless it is very unlucky,
// and within 13 rounds at worst. A summary to every member each round
// cost, at 100 members, 99 summaries of 6 KB per member every 30 s:
// most of the bytes of an active room. An unchanged summary tells its
// receiver nothing new: what it may lack reached us after that one, and
// so changed ours; a member that lacks what we held before shows it in
// its own summary, which we answer. So an idle room costs no summaries.
func (rs *rooms) syncRoundLocked(j *joinedRoom, now time.Time) {
	s := j.log.Summary()
	line, err := protocol.EncodeRoomSummary(&s)
	if err != nil {
		rs.n.log.Error("room summary not encoded", "room", j.name.String(), "err", err)
		return
	}
	keys := slices.Sorted(maps.Keys(j.members))
	if len(keys) > roundFanout {
		from := j.round % len(keys)
		j.round += roundFanout
		turn := make([]string, roundFanout)
		for i := range turn {
			turn[i] = keys[(from+i)%len(keys)]
		}
		keys = turn
	}
	for _, k := range keys {
		if last, ok := j.summed[k]; ok && bytes.Equal(last.line, line) && now.Sub(last.at) < summaryRefresh {
			continue
		}
		j.summed[k] = summed{line: line, at: now}
		j.roundSends++
		rs.send(k, line)
	}
}

// roundFanout bounds the members a summary round sends to.
const roundFanout = 8

// summed is the latest periodic summary sent to a member.
type summed struct {
	line []byte
	at   time.Time
}

// summaryRefresh is how long a member is not sent the same summary
// again: ten rounds, a safety net for a summary whose loss went unseen.
const summaryRefresh = 10 * RoomSyncInterval

// run is the rooms' goroutine: it applies registry changes, shows what
// the causal wait released, and sends summaries every RoomSyncInterval.
// Its timers are armed only while rooms are joined.
func (rs *rooms) run() {
	n := rs.n
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	nextSync := time.Now().Add(RoomSyncInterval)
	for {
		rs.applyChanges()
		now := time.Now()
		rs.mu.Lock()
		joined := len(rs.byID) > 0
		waiting := false
		var show []roomShow
		for _, j := range rs.sortedLocked() {
			if j.log.Pending() > 0 {
				if ds := j.log.Ready(now); len(ds) > 0 {
					show = append(show, rs.takeLocked(j, ds))
				}
				waiting = waiting || j.log.Pending() > 0
			}
		}
		if joined && !now.Before(nextSync) {
			for _, j := range rs.sortedLocked() {
				rs.syncRoundLocked(j, now)
			}
			nextSync = now.Add(RoomSyncInterval)
		}
		rs.mu.Unlock()
		for _, s := range show {
			n.showRoom(s)
		}
		switch {
		case waiting:
			timer.Reset(roomTick)
		case joined:
			timer.Reset(nextSync.Sub(now))
		default:
			timer.Stop()
			nextSync = time.Now().Add(RoomSyncInterval)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-rs.wake:
		case <-timer.C:
		}
	}
}

func (rs *rooms) applyChanges() {
	rs.obsMu.Lock()
	chs := rs.changes
	rs.changes = nil
	rs.obsMu.Unlock()
	if len(chs) == 0 {
		return
	}
	now := time.Now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, c := range chs {
		if c.done != nil {
			close(c.done)
			continue
		}
		if k := sessionKey(c.peer); c.restarted && k != "" {
			rs.resetLink(k)
			for _, j := range rs.byID {
				delete(j.summed, k) // the new instance has seen none
			}
		}
		for _, j := range rs.sortedLocked() {
			if c.gone {
				if k := sessionKey(c.peer); k != "" {
					rs.setMemberLocked(j, k, c.peer.Nickname, false, false, now)
				}
				continue
			}
			rs.memberLocked(j, c.peer, c.tell, now)
		}
	}
}

// roomShow is a batch of deliveries of one room, taken from its log with
// j.order held: showRoom stores, emits and releases it.
type roomShow struct {
	j   *joinedRoom
	ds  []room.Delivery
	now time.Time
	// names are the members' announced nicknames, by key, when the
	// batch was taken (see fixNick).
	names map[string]string
}

// takeLocked locks j.order for ds, so that batches are shown in the order
// the log gave them, without holding rs.mu while they are.
func (rs *rooms) takeLocked(j *joinedRoom, ds []room.Delivery) roomShow {
	j.order.Lock()
	return roomShow{j: j, ds: ds, now: time.Now(), names: maps.Clone(j.members)}
}

// fixNick puts the nickname a member announces (signed with its key) in
// place of the one its message claims, and marks a message whose claimed
// nickname another member announces: the nick field is the author's to
// write, so it must not pass for someone else's.
// It runs twice: before the trust states are read (nickname), and after
// (mark).
func fixNick(m *RoomMessage, names map[string]string, mark bool) {
	if m.Own {
		return
	}
	if nick, ok := names[m.Author]; ok {
		if !mark {
			m.Nick = nick
			m.InvalidNick = protocol.ValidateNickname(nick) != nil
		}
		return
	}
	if !mark {
		return
	}
	for k, nick := range names {
		if nick == m.Nick && k != m.Author {
			m.Trust = trust.StateChanged
			return
		}
	}
}

// showRoom stores a batch and emits it, then releases j.order.
func (n *Node) showRoom(s roomShow) {
	defer s.j.order.Unlock()
	ms := make([]*protocol.RoomMessage, len(s.ds))
	for i, d := range s.ds {
		ms[i] = d.Msg
	}
	if err := n.storeShown(n.ctx, s.j, ms, s.now); err != nil {
		if n.ctx.Err() == nil {
			n.log.Error("room messages not stored", "room", s.j.name.String(), "err", err)
			n.emit(Event{Kind: EventStatus, Time: time.Now(), Err: err,
				Text: fmt.Sprintf("could not store %d message(s) of %s: %v; they are shown, and may be shown again after a restart", len(ms), s.j.name, err)})
		}
	}
	out := make([]RoomMessage, len(s.ds))
	for i, d := range s.ds {
		out[i] = n.roomMessage(s.j, d.Msg, s.now)
		out[i].Forced, out[i].Late, out[i].Unmet = d.Forced, d.Late, len(d.Unmet)
	}
	for i := range out {
		fixNick(&out[i], s.names, false)
	}
	n.roomTrust(n.ctx, out)
	for i := range out {
		fixNick(&out[i], s.names, true)
	}
	for _, m := range out {
		if err := n.events.emitWait(n.ctx, Event{Kind: EventRoomMessage, Time: m.Received, Room: m}); err != nil {
			return
		}
	}
}

// roomLine is a decoded room line read from a member's connection.
type roomLine struct {
	msg *protocol.RoomMessage
	sum *protocol.RoomSummary
}

// roomLinePrefix starts every room line as protocol encodes it (the type
// first); roomSumPrefix a room_sum line.
var (
	roomLinePrefix = []byte(`{"type":"room_`)
	roomSumPrefix  = []byte(`{"type":"` + protocol.RoomSummaryType + `"`)
)

// decodeRoomLine parses a room_msg or room_sum line.
func decodeRoomLine(line []byte) (roomLine, error) {
	if bytes.HasPrefix(line, roomSumPrefix) {
		if s, err := protocol.DecodeRoomSummary(line); err == nil {
			return roomLine{sum: s}, nil
		}
	}
	m, err := protocol.DecodeRoomMessage(line)
	if err == nil {
		return roomLine{msg: m}, nil
	}
	if s, serr := protocol.DecodeRoomSummary(line); serr == nil {
		return roomLine{sum: s}, nil
	}
	return roomLine{}, err
}

// receiveRoom handles room lines that arrived, in order, on a session that
// proved from.
func (n *Node) receiveRoom(from, nick string, lines []roomLine) {
	rs := n.rooms
	now := time.Now()
	rs.mu.Lock()
	touched := map[*joinedRoom]bool{}
	for _, l := range lines {
		var id string
		if l.msg != nil {
			id = l.msg.Room
		} else {
			id = l.sum.Room
		}
		j := rs.byID[id]
		if j == nil {
			n.log.Debug("room line for a room we are not in dropped", "from", nick)
			continue
		}
		if _, ok := j.members[from]; !ok {
			// Not (yet) seen announcing the room: its announce will
			// bring a summary exchange.
			n.log.Debug("room line from a peer not seen as a member dropped", "from", nick, "room", j.name.String())
			continue
		}
		if l.sum != nil {
			rs.answerSummaryLocked(j, from, l.sum, now)
			continue
		}
		m := l.msg
		if m.Author == from && !rs.allowLocked(j, m, now) {
			if t, ok := j.noticed[from]; !ok || now.Sub(t) >= RoomSyncInterval {
				j.noticed[from] = now
				n.emit(Event{Kind: EventStatus, Time: now,
					Text: fmt.Sprintf("%s is sending too fast in %s: some of their messages are held back and come later", nick, j.name)})
			}
			continue
		}
		if _, err := j.log.Add(m, now); err != nil {
			n.log.Warn("room message refused", "from", nick, "room", j.name.String(), "err", err)
			continue
		}
		touched[j] = true
	}
	var show []roomShow
	for _, j := range rs.sortedLocked() {
		if touched[j] {
			if ds := j.log.Ready(now); len(ds) > 0 {
				show = append(show, rs.takeLocked(j, ds))
			}
		}
	}
	rs.mu.Unlock()
	for _, s := range show {
		n.showRoom(s)
	}
	select { // messages may wait: the rooms goroutine arms its tick
	case rs.wake <- struct{}{}:
	default:
	}
}

// answerSummaryLocked handles a member's summary. Fetching is pulled, so
// that a member who missed something gets each message once, not once
// from every member that holds it:
//
//   - a summary that asks is answered with what from lacks of the authors
//     it asks for;
//   - where from holds more than we do, we ask it for those authors (see
//     wantLocked), in a summary of ours;
//   - else, where a summary that does not ask shows from lacks something
//     we hold, we send ours (at most once a second per member and room),
//     so that it can ask us.
//
// A summary cannot say "I hold these past a gap" (see client/room), so a
// member with a gap no one can fill (it missed more than the history
// bound) would be sent the same messages on every exchange. Messages sent
// to a member in answer within answerRepeat are not sent again; after
// that, all it asks for is sent once more.
func (rs *rooms) answerSummaryLocked(j *joinedRoom, from string, theirs *protocol.RoomSummary, now time.Time) {
	if len(theirs.Ask) > 0 {
		sent := j.sent[from]
		if sent == nil || now.Sub(sent.at) >= answerRepeat {
			sent = &sentTo{at: now, upTo: make(map[string]uint64)}
			j.sent[from] = sent
		}
		for _, m := range j.log.Missing(*theirs, now) {
			if m.Seq <= sent.upTo[m.Author] {
				continue
			}
			line, err := protocol.EncodeRoomMessage(m)
			if err != nil {
				continue
			}
			rs.send(from, line)
			sent.upTo[m.Author] = max(sent.upTo[m.Author], m.Seq)
		}
	}
	ours := j.log.Summary()
	if ask := rs.wantLocked(j, from, ours, theirs, now); len(ask) > 0 {
		ours.Ask = ask
		rs.sendLocked(j, from, &ours)
		return
	}
	if len(theirs.Ask) > 0 {
		return
	}
	have := make(map[string]uint64, len(theirs.Have))
	for _, h := range theirs.Have {
		have[h.Author] = h.Seq
	}
	for _, h := range ours.Have {
		if h.Seq > have[h.Author] {
			if t, ok := j.replied[from]; !ok || now.Sub(t) >= time.Second {
				j.replied[from] = now
				rs.sendLocked(j, from, &ours)
			}
			return
		}
	}
}

// wantLocked returns the authors to ask from for, given our summary and
// theirs, and records the asks. For each author of whom from holds more
// than we hold contiguously:
//
//   - if it holds a seq past the highest we hold at all, we ask, unless
//     an ask to a member still in the room covers that seq and is younger
//     than askTimeout (an answer on its way);
//   - if it only fills a gap (we hold later seqs), we ask at most once in
//     answerRepeat, whoever holds it: the gap may be one nobody can fill.
func (rs *rooms) wantLocked(j *joinedRoom, from string, ours protocol.RoomSummary, theirs *protocol.RoomSummary, now time.Time) []string {
	have := make(map[string]uint64, len(ours.Have))
	for _, h := range ours.Have {
		have[h.Author] = h.Seq
	}
	var held map[string]uint64
	var ask []string
	for _, h := range theirs.Have {
		if h.Seq <= have[h.Author] {
			continue
		}
		if held == nil {
			held = j.log.Highest()
		}
		a := j.asked[h.Author]
		if h.Seq > held[h.Author] {
			if _, member := j.members[a.from]; a.upTo >= h.Seq && member && now.Sub(a.at) < askTimeout {
				continue
			}
		} else if !a.at.IsZero() && now.Sub(a.at) < answerRepeat {
			continue
		}
		j.asked[h.Author] = askedOf{from: from, upTo: h.Seq, at: now}
		ask = append(ask, h.Author)
	}
	return ask
}

// askedOf is our latest ask for one author's messages.
type askedOf struct {
	from string // the member asked
	upTo uint64 // the seq it held, which we asked up to
	at   time.Time
}

// askTimeout is how long an ask is taken to be answered on its way: past
// it, a member that shows it holds what we asked for is asked again. An
// answer of a history's worth arrives well within it.
const askTimeout = 10 * time.Second

// sentTo is what answers sent one member since at: per author, the
// highest seq.
type sentTo struct {
	at   time.Time
	upTo map[string]uint64
}

// answerRepeat is how long messages sent to a member in answer to its
// summary are not sent again, and how long a gap is not asked for again:
// six summary rounds.
const answerRepeat = 6 * RoomSyncInterval

// roomLink carries our room lines to one member over a kept-open session.
type roomLink struct {
	key     string
	mu      sync.Mutex
	queue   [][]byte
	reset   bool // the member restarted: drop the session, if any
	running bool
	signal  chan struct{}
	dropped int // lines dropped from a full queue, over the link's life
}

// send queues line for the member with key, starting its link if needed.
// It never blocks.
func (rs *rooms) send(key string, line []byte) {
	n := rs.n
	l := rs.linkFor(key)
	l.mu.Lock()
	overflow := len(l.queue) >= roomLinkQueue
	if overflow {
		l.queue = l.queue[1:]
		l.dropped++
	}
	dropped := l.dropped
	l.queue = append(l.queue, line)
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if overflow && dropped&(dropped-1) == 0 { // 1, 2, 4, ...: not a line each
		n.log.Warn("room link queue full; oldest lines dropped (anti-entropy brings them)", "to", shortFP(key), "dropped", dropped)
	}
	if start {
		n.spawn(func() { rs.runLink(l) })
	}
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// forgetSent forgets what answers and periodic summaries were sent the
// member with key: some may have been lost with a link's lines.
func (rs *rooms) forgetSent(key string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, j := range rs.byID {
		delete(j.sent, key)
		delete(j.summed, key) // our summary may have been lost too
	}
}

// resetLink makes the link to key, if it runs, drop its session: the
// member restarted, and a session to its old instance would swallow
// what is written next.
func (rs *rooms) resetLink(key string) {
	rs.linksMu.Lock()
	l := rs.links[key]
	rs.linksMu.Unlock()
	if l == nil {
		return
	}
	l.mu.Lock()
	l.reset = l.running
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

func (rs *rooms) linkFor(key string) *roomLink {
	rs.linksMu.Lock()
	defer rs.linksMu.Unlock()
	l := rs.links[key]
	if l == nil {
		l = &roomLink{key: key, signal: make(chan struct{}, 1)}
		rs.links[key] = l
	}
	return l
}

// runLink writes l's queue on a session to the member, connecting when
// there is something to write; it closes the session after roomLinkIdle
// unused and returns when it has neither a session nor lines. Lines that
// cannot be written (the member is gone or unreachable, the connection
// broke) are dropped: anti-entropy brings their messages later.
func (rs *rooms) runLink(l *roomLink) {
	n := rs.n
	var conn, raw net.Conn
	defer func() {
		if raw != nil {
			n.untrackConn(raw)
		}
	}()
	idle := time.NewTimer(roomLinkIdle)
	defer idle.Stop()
	var buf []byte
	drop := func(lines [][]byte, why string, err error) {
		n.log.Debug("room lines dropped", "to", shortFP(l.key), "lines", len(lines), "why", why, "err", err)
		rs.forgetSent(l.key) // answers may have been among them
	}
	for {
		l.mu.Lock()
		lines := l.queue
		l.queue = nil
		if l.reset && conn != nil {
			n.untrackConn(raw)
			conn, raw = nil, nil
		}
		l.reset = false
		if len(lines) == 0 && conn == nil {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if len(lines) == 0 {
			idle.Reset(roomLinkIdle)
			select {
			case <-l.signal:
			case <-idle.C:
				n.untrackConn(raw)
				conn, raw = nil, nil
			case <-n.ctx.Done():
				l.mu.Lock()
				l.running = false
				l.mu.Unlock()
				return
			}
			continue
		}
		fresh := conn == nil
		if fresh {
			peer, ok := n.livePeerWithKey(l.key)
			if !ok {
				drop(lines, "member not listed", nil)
				continue
			}
			c, r, err := n.connect(n.ctx, peer)
			if err != nil {
				drop(lines, "connect", err)
				continue
			}
			conn, raw = c, r
			// A new session: first ask for what we miss.
			lines = append(rs.summariesFor(l.key), lines...)
		}
		buf = buf[:0]
		for _, line := range lines {
			buf = append(buf, line...)
		}
		err := raw.SetWriteDeadline(time.Now().Add(n.cfg.WriteTimeout))
		if err == nil {
			if _, err = conn.Write(buf); err == nil {
				continue
			}
		}
		n.untrackConn(raw)
		conn, raw = nil, nil
		if !fresh {
			// A kept-open session may have died unseen (the member
			// restarted, or its host crashed): the lines go once more
			// on a new one, ahead of any queued since. One that got
			// through before the failure comes twice; the log drops
			// the copy.
			l.mu.Lock()
			l.queue = append(lines, l.queue...)
			l.mu.Unlock()
			continue
		}
		drop(lines, "write", err)
	}
}

// summariesFor returns our summary line of every room key is a member
// of.
func (rs *rooms) summariesFor(key string) [][]byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out [][]byte
	for _, j := range rs.sortedLocked() {
		if _, ok := j.members[key]; !ok {
			continue
		}
		s := j.log.Summary()
		if line, err := protocol.EncodeRoomSummary(&s); err == nil {
			out = append(out, line)
		}
	}
	return out
}

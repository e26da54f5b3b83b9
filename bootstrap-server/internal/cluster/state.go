package cluster

import (
	"slices"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// State is what one server knows of the others: for each, the generation
// and sequence number it has applied up to, when it last heard from it,
// and the snapshot it is waiting for. It holds no peers (the host does)
// and does no I/O: messages, ticks and connection changes go in with the
// time, and what the host must do comes out as Actions, in order.
// It is used from one goroutine.
type State struct {
	self    string
	t       Timing
	remotes map[string]*remote
	nextReq uint64
	down    bool      // not connected to NATS
	downAt  time.Time // since when
	held    bool      // the remote peers were dropped after Hold
}

// Timing bounds the liveness protocol.
type Timing struct {
	// DeadAfter: a server not heard from for this long is taken for dead
	// and its peers dropped (3 beats).
	DeadAfter time.Duration
	// SnapshotTimeout: a snapshot not complete this long after it was
	// asked for is asked for again.
	SnapshotTimeout time.Duration
	// Hold: while this server is cut off from NATS it keeps the other
	// servers' peers this long, then drops them.
	Hold time.Duration
	// RejoinGrace: once this server is back on NATS, the others get
	// DeadAfter plus this long to be heard, since when NATS itself was
	// down they reconnect on their own schedules.
	RejoinGrace time.Duration
	// MaxBuffered bounds the events of one server kept while its snapshot
	// is awaited; beyond it they are discarded and the snapshot asked for
	// again once this one is applied.
	MaxBuffered int
}

type remote struct {
	gen   uint64
	seq   uint64    // last applied
	heard time.Time // last message from it (any kind)
	// synced: a snapshot of gen has been applied, so seq is meaningful
	// and events apply in order.
	synced bool
	req    uint64 // snapshot asked for, 0: none
	reqAt  time.Time
	again  bool   // ask again once req is applied (the buffer overflowed)
	buf    []*Msg // events that arrived while req was awaited
	parts  [][]Entry
	got    int
}

// ActionKind says what an Action asks of the host.
type ActionKind uint8

const (
	// Join: list Info in NS as Server's peer, or update it in place.
	Join ActionKind = iota
	// Leave: remove Server's peer ID.
	Leave
	// Replace: Server's peers are now exactly Peers; push only the
	// difference.
	Replace
	// Drop: remove every peer of Server (Reason says why) and forget it.
	Drop
	// Request: ask Server for a snapshot, as request Req.
	Request
)

// Reasons for Drop.
const (
	ReasonSilent = "silent"    // DeadAfter without a message
	ReasonCutOff = "nats_down" // this server was cut off from NATS for Hold
)

// Action is one thing for the host to do.
type Action struct {
	Kind   ActionKind
	Server string
	NS     string
	Info   protocol.PeerInfo
	ID     string
	Peers  []Entry
	Req    uint64
	Reason string
}

// NewState returns the state of server self.
func NewState(self string, t Timing) *State {
	return &State{self: self, t: t, remotes: map[string]*remote{}, down: true}
}

// Servers returns the ids of the servers known, sorted.
func (st *State) Servers() []string {
	ids := make([]string, 0, len(st.remotes))
	for id := range st.remotes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Message handles a join, leave, beat or hello from the bus.
func (st *State) Message(now time.Time, m *Msg) []Action {
	if m.Server == st.self {
		return nil
	}
	var acts []Action
	r := st.remotes[m.Server]
	switch {
	case r == nil:
		r = &remote{gen: m.Gen}
		st.remotes[m.Server] = r
	case m.Gen < r.gen:
		return nil // an older connection's message, overtaken
	case m.Gen > r.gen:
		// A new connection: what it did while away is unknown.
		r.gen, r.synced, r.buf, r.again = m.Gen, false, nil, false
		r.req = 0
	}
	r.heard = now
	switch m.Type {
	case TypeHello:
		// It may have missed anything: it asks us, we ask it.
		if r.synced {
			r.synced, r.buf = false, nil
			r.req = 0
		}
		acts = st.request(now, m.Server, r, acts)
	case TypeBeat:
		if !r.synced || (r.req == 0 && m.Seq > r.seq) {
			acts = st.request(now, m.Server, r, acts)
		}
	case TypeJoin, TypeLeave:
		switch {
		case r.synced && r.req == 0 && m.Seq == r.seq+1:
			r.seq = m.Seq
			acts = append(acts, event(m))
		case r.synced && r.req == 0 && m.Seq <= r.seq:
			// Already in the snapshot applied.
		default:
			acts = st.buffer(now, m.Server, r, m, acts)
		}
	}
	return acts
}

// buffer keeps m until the snapshot it waits for, asking for one.
func (st *State) buffer(now time.Time, id string, r *remote, m *Msg, acts []Action) []Action {
	if len(r.buf) >= st.t.MaxBuffered {
		r.buf, r.again = nil, true
	} else {
		r.buf = append(r.buf, m)
	}
	return st.request(now, id, r, acts)
}

func (st *State) request(now time.Time, id string, r *remote, acts []Action) []Action {
	if r.req != 0 || st.down {
		return acts
	}
	st.nextReq++
	r.req, r.reqAt, r.parts, r.got = st.nextReq, now, nil, 0
	return append(acts, Action{Kind: Request, Server: id, Req: r.req})
}

func event(m *Msg) Action {
	if m.Type == TypeJoin {
		return Action{Kind: Join, Server: m.Server, NS: m.NS, Info: m.info}
	}
	return Action{Kind: Leave, Server: m.Server, NS: m.NS, ID: m.ID}
}

// Snapshot handles one part of a snapshot. Once every part of the one
// awaited is in, the host replaces the server's peers with it and the
// events buffered since apply on top, in order.
func (st *State) Snapshot(now time.Time, m *Msg) []Action {
	r := st.remotes[m.Server]
	if r == nil || m.Req != r.req || r.req == 0 || m.Gen < r.gen {
		return nil // not awaited (any more)
	}
	r.heard = now
	if m.Gen > r.gen {
		// It reconnected since: this snapshot is newer than what was
		// buffered.
		r.gen, r.buf = m.Gen, nil
	}
	if r.parts == nil || len(r.parts) != m.Parts {
		r.parts, r.got = make([][]Entry, m.Parts), 0
	}
	if r.parts[m.Part] == nil {
		r.got++
		r.parts[m.Part] = m.snap
		if r.parts[m.Part] == nil {
			r.parts[m.Part] = []Entry{}
		}
	}
	if r.got < len(r.parts) {
		return nil
	}
	var peers []Entry
	for _, p := range r.parts {
		peers = append(peers, p...)
	}
	acts := []Action{{Kind: Replace, Server: m.Server, Peers: peers}}
	r.seq, r.synced, r.req, r.parts, r.got = m.Seq, true, 0, nil, 0
	buf := r.buf
	r.buf = nil
	for i, e := range buf {
		if e.Gen != r.gen || e.Seq <= r.seq {
			continue
		}
		if e.Seq != r.seq+1 {
			r.buf = append(r.buf, buf[i:]...)
			return st.request(now, m.Server, r, acts)
		}
		r.seq = e.Seq
		acts = append(acts, event(e))
	}
	if r.again {
		r.again, r.synced = false, false
		acts = st.request(now, m.Server, r, acts)
	}
	return acts
}

// Tick drops the servers not heard from for DeadAfter, asks again for
// snapshots overdue, and drops every remote peer once this server has
// been cut off for Hold. Call it a few times per beat.
func (st *State) Tick(now time.Time) []Action {
	var acts []Action
	if st.down {
		if !st.held && now.Sub(st.downAt) >= st.t.Hold {
			st.held = true
			for _, id := range st.Servers() {
				acts = append(acts, Action{Kind: Drop, Server: id, Reason: ReasonCutOff})
				delete(st.remotes, id)
			}
		}
		return acts
	}
	for _, id := range st.Servers() {
		r := st.remotes[id]
		switch {
		case now.Sub(r.heard) >= st.t.DeadAfter:
			acts = append(acts, Action{Kind: Drop, Server: id, Reason: ReasonSilent})
			delete(st.remotes, id)
		case r.req != 0 && now.Sub(r.reqAt) >= st.t.SnapshotTimeout:
			r.req = 0
			acts = st.request(now, id, r, acts)
		}
	}
	return acts
}

// Disconnected records that the connection to NATS is lost: nothing is
// taken for dead while nothing can be heard; after Hold every remote peer
// is dropped (Tick).
func (st *State) Disconnected(now time.Time) {
	if !st.down {
		st.down, st.downAt = true, now
	}
}

// Connected records that the connection to NATS is (back) up. Every
// server known gets DeadAfter plus RejoinGrace from now to be heard
// again, and snapshots that were awaited are asked for again.
func (st *State) Connected(now time.Time) []Action {
	st.down, st.held = false, false
	var acts []Action
	for _, id := range st.Servers() {
		r := st.remotes[id]
		r.heard = now.Add(st.t.RejoinGrace)
		if r.req != 0 {
			r.req = 0
			acts = st.request(now, id, r, acts)
		}
	}
	return acts
}

package chat

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// EventKind says what happened.
type EventKind uint8

const (
	// EventMessage: a direct message arrived (Event.Message).
	EventMessage EventKind = iota + 1
	// EventPeerJoined: a new peer (Event.Peer).
	EventPeerJoined
	// EventPeerLeft: a peer said goodbye or the bootstrap server dropped it.
	EventPeerLeft
	// EventPeerExpired: a LAN peer fell silent for Timeout.
	EventPeerExpired
	// EventPeerRestarted: the peer at a known address is a new instance
	// (Event.Peer; Event.Old is the one it replaced).
	EventPeerRestarted
	// EventPeerUpdated: a known peer changed nickname, capabilities,
	// address or, after a bootstrap server restart, peer_id.
	EventPeerUpdated
	// EventStatus: a note about the node itself (Event.Text), for example
	// the bootstrap connection in internet mode; Err is set on trouble.
	EventStatus
	// EventSecurity: something the user must know about keys and
	// encryption (Event.Text): a handshake that proved another key than
	// announced, a refused unencrypted connection, a forged message.
	EventSecurity
	// EventDelivered: a message nobody waited for any more (reported
	// Queued, or queued in an earlier run) was delivered (Event.Stored).
	EventDelivered
	// EventExpired: a queued message reached its TTL undelivered
	// (Event.Stored); it will not be sent.
	EventExpired
	// EventRoomMessage: a room message to show (Event.Room), in causal
	// order, each once.
	EventRoomMessage
	// EventRoomMember: a peer known before joined or left a room we
	// are in (Event.Text; Event.Room names the room, the member's key
	// and nickname). A peer that appears already in a room, or goes
	// away, is told by the peer events alone.
	EventRoomMember
)

func (k EventKind) String() string {
	switch k {
	case EventMessage:
		return "message"
	case EventPeerJoined:
		return "peer-joined"
	case EventPeerLeft:
		return "peer-left"
	case EventPeerExpired:
		return "peer-expired"
	case EventPeerRestarted:
		return "peer-restarted"
	case EventPeerUpdated:
		return "peer-updated"
	case EventStatus:
		return "status"
	case EventSecurity:
		return "security"
	case EventDelivered:
		return "delivered"
	case EventExpired:
		return "expired"
	case EventRoomMessage:
		return "room-message"
	case EventRoomMember:
		return "room-member"
	}
	return "event(?)"
}

// Event is something the UI or a test may want to know.
type Event struct {
	Kind EventKind
	// Time is when the node noticed it (the node's clock).
	Time    time.Time
	Peer    registry.Peer
	Old     registry.Peer
	Message Message
	Text    string
	Err     error
	// Stored is the outgoing message of EventDelivered and EventExpired,
	// as the store holds it.
	Stored store.Message
	// Room is the message of EventRoomMessage; for EventRoomMember its
	// Room, Author (the member's key) and Nick.
	Room RoomMessage
}

// Message is a received direct message. Its fields are raw network input:
// sanitise them before showing them on a terminal.
type Message struct {
	From string
	Text string
	// Sent is the sender's timestamp (its clock, second resolution).
	Sent time.Time
	// Received is when this node read it.
	Received time.Time
	// Remote is the address the connection came from.
	Remote netip.AddrPort
	// ID is the sender's message id; empty from original peers.
	ID string
	// Instance is the sender's instance id; empty from original peers.
	Instance string
	// Encrypted says the message came inside a session; From is then the
	// nickname the sender's key proved, Key that key (wire form).
	Encrypted bool
	Key       string
	// Trust is the state of From with Key when the message arrived:
	// trust.StateUnencrypted for plaintext, trust.StateChanged when From
	// is pinned to another key (or, plaintext, to any key).
	Trust trust.State
	// InvalidFrom says From is not a valid nickname (control characters,
	// too long): show it escaped and marked.
	InvalidFrom bool
}

// maxQueuedEvents bounds the events waiting for a slow reader. Past it a
// received message waits (its ack too), and other events are dropped,
// oldest first, and the drop is logged.
const maxQueuedEvents = 8192

// eventQueue decouples the node from its reader: emit never blocks, a
// dispatcher goroutine feeds the channel.
type eventQueue struct {
	mu      sync.Mutex
	q       []Event
	sending atomic.Int64 // taken by run, not yet handed to the reader: they count toward the bound
	dropped int
	signal  chan struct{} // 1-buffered: "the queue is not empty"
	room    chan struct{} // 1-buffered: "an event was taken"
	out     chan Event
}

func newEventQueue() *eventQueue {
	return &eventQueue{signal: make(chan struct{}, 1), room: make(chan struct{}, 1), out: make(chan Event)}
}

// emitWait queues ev, waiting while the queue is full rather than
// dropping: a received message waits for the reader (and so does its ack,
// which holds the sender back) instead of being lost to the display.
func (e *eventQueue) emitWait(ctx context.Context, ev Event) error {
	for {
		e.mu.Lock()
		if len(e.q)+int(e.sending.Load()) < maxQueuedEvents {
			e.q = append(e.q, ev)
			e.mu.Unlock()
			select {
			case e.signal <- struct{}{}:
			default:
			}
			return nil
		}
		e.mu.Unlock()
		select {
		case <-e.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// emit queues ev; it reports how many events were dropped so far when the
// queue overflowed.
func (e *eventQueue) emit(ev Event) (dropped int) {
	e.mu.Lock()
	if len(e.q)+int(e.sending.Load()) >= maxQueuedEvents {
		// The oldest queued event that is not a received message goes
		// (messages are queued by emitWait and never dropped); if all
		// are, ev does.
		e.dropped++
		dropped = e.dropped
		i := slices.IndexFunc(e.q, func(q Event) bool { return q.Kind != EventMessage && q.Kind != EventRoomMessage })
		if i < 0 {
			e.mu.Unlock()
			return dropped
		}
		e.q = slices.Delete(e.q, i, i+1)
	}
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.signal <- struct{}{}:
	default:
	}
	return dropped
}

// run delivers events in order until ctx is done, then closes out. It
// takes the whole queue at once, so that a burst of received messages
// costs one lock, not one each.
func (e *eventQueue) run(ctx context.Context) {
	defer close(e.out)
	var batch []Event
	for {
		e.mu.Lock()
		batch, e.q = e.q, batch[:0]
		e.sending.Store(int64(len(batch)))
		e.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-e.signal:
				continue
			case <-ctx.Done():
				return
			}
		}
		for i := range batch {
			select {
			case e.out <- batch[i]:
			case <-ctx.Done():
				return
			}
			batch[i] = Event{}
			e.sending.Add(-1)
			select {
			case e.room <- struct{}{}:
			default:
			}
		}
	}
}

package rendezvous_test

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/protocol"
)

// Room tags for the tests.
const (
	tagA = "0f1e2d3c4b5a69788796a5b4"
	tagB = "c3d2e1f00112233445566778"
)

// roomTags is what a chat node hands rendezvous: tags it changes from
// its own goroutine, and a channel to ask for a fresh register.
type roomTags struct {
	mu   sync.Mutex
	tags []string
	re   chan struct{}
}

func newRoomTags(tags ...string) *roomTags { return &roomTags{tags: tags, re: make(chan struct{}, 1)} }

func (r *roomTags) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tags
}

func (r *roomTags) set(tags ...string) {
	r.mu.Lock()
	r.tags = tags
	r.mu.Unlock()
	select {
	case r.re <- struct{}{}:
	default:
	}
}

func (r *roomTags) config(c *rendezvous.Config) { c.Rooms, c.Reregister = r.get, r.re }

// count returns how many updates of kind n has had, and about peer id
// for Left.
func (n *node) count(kind rendezvous.UpdateKind, id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, u := range n.updates {
		if u.Kind == kind && (id == "" || u.PeerID == id) {
			k++
		}
	}
	return k
}

func (n *node) peer(nick string) (protocol.PeerInfo, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var found protocol.PeerInfo
	k := 0
	for _, p := range n.peers {
		if p.Nickname == nick {
			found, k = p, k+1
		}
	}
	return found, k
}

// A signed client registers with its rooms; a change of them, signalled
// on Reregister, reaches the others at once (no heartbeat or reconnect
// waited for) as an update in place: the same peer_id, no second
// Registered, nothing left.
func TestReregisterUpdatesRoomsInPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		rooms := newRoomTags(tagA)
		alice := w.run("alice", "192.0.2.1", 4001, 1, withIdentity(identity(1)), rooms.config)
		bob := w.run("bob", "192.0.2.2", 4002, 2)
		time.Sleep(time.Second)
		p, _ := bob.peer("alice")
		if !slices.Equal(p.Rooms, []string{tagA}) {
			t.Fatalf("bob sees alice with rooms %q, want %q", p.Rooms, []string{tagA})
		}
		id := alice.selfID()

		rooms.set(tagA, tagB)
		time.Sleep(100 * time.Millisecond)
		p, n := bob.peer("alice")
		if n != 1 || p.PeerID != id || !slices.Equal(p.Rooms, []string{tagA, tagB}) {
			t.Fatalf("bob sees alice %d times as %+v, want once as %s with rooms %q", n, p, id, []string{tagA, tagB})
		}
		rooms.set()
		time.Sleep(100 * time.Millisecond)
		if p, _ := bob.peer("alice"); p.PeerID != id || p.Rooms != nil {
			t.Fatalf("bob sees alice as %+v, want %s without rooms", p, id)
		}
		if alice.selfID() != id || alice.count(rendezvous.Registered, "") != 1 || alice.count(rendezvous.Disconnected, "") != 0 {
			t.Fatalf("alice: peer_id %s (was %s), %d Registered and %d Disconnected updates; want the one registration",
				alice.selfID(), id, alice.count(rendezvous.Registered, ""), alice.count(rendezvous.Disconnected, ""))
		}
		if got := bob.count(rendezvous.Left, id); got != 0 {
			t.Errorf("bob was told %d times that alice left", got)
		}
		if got := alice.nicks(); got != "[bob@192.0.2.2:4002]" {
			t.Errorf("alice sees %s, want bob still", got)
		}
	})
}

// A server that replaces the registration instead (ours does for an
// unsigned register) hands out a new peer_id: that is reported as a new
// registration, and the client's own entry never shows up as a peer.
func TestReregisterReplacedIsANewRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		rooms := newRoomTags(tagA)
		alice := w.run("alice", "192.0.2.1", 4001, 1, rooms.config)
		bob := w.run("bob", "192.0.2.2", 4002, 2)
		time.Sleep(time.Second)
		first := alice.selfID()
		if p, _ := bob.peer("alice"); p.Rooms != nil {
			t.Fatalf("bob sees rooms %q of an unsigned alice", p.Rooms)
		}
		rooms.set(tagB)
		time.Sleep(100 * time.Millisecond)
		if alice.selfID() == first || alice.count(rendezvous.Registered, "") != 2 {
			t.Fatalf("alice: peer_id %s (was %s), %d Registered updates; want a new registration reported", alice.selfID(), first, alice.count(rendezvous.Registered, ""))
		}
		if got := alice.nicks(); got != "[bob@192.0.2.2:4002]" {
			t.Errorf("alice sees %s, want only bob", got)
		}
		if p, n := bob.peer("alice"); n != 1 || p.PeerID != alice.selfID() {
			t.Errorf("bob sees alice %d times as %+v, want once under %s", n, p, alice.selfID())
		}
	})
}

// Every register carries the rooms of its moment, signed: the first, and
// the one after a reconnect, which needs no signal.
func TestRegisterCarriesCurrentRooms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		orig := &originalServer{hangUp: true}
		w.startHandler(orig)
		rooms := newRoomTags(tagA)
		alice := w.run("alice", "192.0.2.1", 4001, 1, withIdentity(identity(1)), rooms.config)
		time.Sleep(100 * time.Millisecond)
		rooms.set(tagA, tagB) // nobody registered to act on it: the next connection carries them
		time.Sleep(3 * time.Second)
		alice.stop()
		regs := orig.received()
		if len(regs) < 2 {
			t.Fatalf("%d registers, want at least 2", len(regs))
		}
		if !slices.Equal(regs[0].msg.Rooms, []string{tagA}) || !slices.Equal(regs[len(regs)-1].msg.Rooms, []string{tagA, tagB}) {
			t.Fatalf("registers carried rooms %q first and %q last", regs[0].msg.Rooms, regs[len(regs)-1].msg.Rooms)
		}
		for i, r := range regs {
			if err := r.msg.Verify(); err != nil {
				t.Fatalf("register %d: %v", i, err)
			}
		}
	})
}

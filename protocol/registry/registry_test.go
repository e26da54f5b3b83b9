package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func lan(ip string, port uint16, nick, instance string) Observation {
	return Observation{Source: SourceLAN, Addr: netip.AddrPortFrom(netip.MustParseAddr(ip), port), Nickname: nick, Instance: instance}
}

func TestDuplicateNicknamesAreSeparatePeers(t *testing.T) {
	r := New(Config{Self: "me"})
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "bob", "b1"), Joined)
	mustObserve(t, r, t0, lan("10.0.0.3", 4000, "bob", "b2"), Joined)
	if r.Len() != 2 {
		t.Fatalf("got %d peers, want 2", r.Len())
	}
	_, err := r.Resolve("bob")
	var amb *AmbiguousError
	if !errors.As(err, &amb) {
		t.Fatalf("Resolve(bob) = %v, want *AmbiguousError", err)
	}
	if got, want := err.Error(), "2 peers are called bob: bob@10.0.0.2:4000 bob@10.0.0.3:4000"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	for _, sel := range []string{"bob@10.0.0.3:4000", "bob@10.0.0.3", "bob#b2"} {
		p, err := r.Resolve(sel)
		if err != nil || p.Instance != "b2" {
			t.Errorf("Resolve(%q) = %v, %v; want instance b2", sel, p.Instance, err)
		}
	}
	if _, err := r.Resolve("carol"); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("Resolve(carol) = %v, want ErrUnknownPeer", err)
	}
}

func TestOwnAnnounceRecognisedByInstance(t *testing.T) {
	r := New(Config{Self: "me"})
	if _, err := r.Observe(t0, lan("10.0.0.1", 4000, "bob", "me")); !errors.Is(err, ErrSelf) {
		t.Fatalf("own announce: got %v, want ErrSelf", err)
	}
	// Another bob is a peer like any other.
	mustObserve(t, r, t0, lan("10.0.0.1", 4001, "bob", "other"), Joined)
}

func TestRestartAtSameAddressReplacesEntry(t *testing.T) {
	r := New(Config{})
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "bob", "old"), Joined)
	c := mustObserve(t, r, t0.Add(time.Second), lan("10.0.0.2", 4000, "bob", "new"), Restarted)
	if c.Old.Instance != "old" || c.Peer.Instance != "new" || r.Len() != 1 {
		t.Fatalf("restart: got %+v, %d peers", c, r.Len())
	}
}

func TestExpiryAtTimeoutNotBefore(t *testing.T) {
	r := New(Config{Timeout: 15 * time.Second})
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "bob", ""), Joined)
	if gone := r.Expire(t0.Add(15*time.Second - time.Nanosecond)); len(gone) != 0 {
		t.Fatalf("expired before the timeout: %v", gone)
	}
	if next, ok := r.NextExpiry(); !ok || !next.Equal(t0.Add(15*time.Second)) {
		t.Fatalf("NextExpiry = %v, %v", next, ok)
	}
	if gone := r.Expire(t0.Add(15 * time.Second)); len(gone) != 1 || gone[0].Kind != Expired {
		t.Fatalf("at the timeout: got %v", gone)
	}
}

func TestGoodbye(t *testing.T) {
	r := New(Config{})
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "bob", "b1"), Joined)
	mustObserve(t, r, t0, lan("10.0.0.2", 4001, "bob", "b2"), Joined)
	mustObserve(t, r, t0, lan("10.0.0.2", 4002, "old", ""), Joined)
	if gone := r.Goodbye(netip.MustParseAddr("10.0.0.9"), "bob", "b1"); len(gone) != 0 {
		t.Fatalf("goodbye from another IP removed %v", gone)
	}
	if gone := r.Goodbye(netip.MustParseAddr("10.0.0.2"), "bob", "b1"); len(gone) != 1 || gone[0].Peer.Instance != "b1" {
		t.Fatalf("goodbye b1 removed %v", gone)
	}
	if gone := r.Goodbye(netip.MustParseAddr("10.0.0.2"), "old", ""); len(gone) != 1 || gone[0].Peer.Nickname != "old" {
		t.Fatalf("original goodbye removed %v", gone)
	}
	if r.Len() != 1 {
		t.Fatalf("left %d peers, want 1", r.Len())
	}
}

func TestBoundRefusesNewPeersKeepsKnownOnes(t *testing.T) {
	r := New(Config{MaxPeers: 2})
	mustObserve(t, r, t0, lan("10.0.0.2", 1, "a", ""), Joined)
	mustObserve(t, r, t0, lan("10.0.0.3", 1, "b", ""), Joined)
	if _, err := r.Observe(t0, lan("10.0.0.4", 1, "c", "")); !errors.Is(err, ErrFull) {
		t.Fatalf("third peer: got %v, want ErrFull", err)
	}
	mustObserve(t, r, t0.Add(time.Second), lan("10.0.0.2", 1, "a", ""), Refreshed)
}

func TestSyncMirrorsBootstrapList(t *testing.T) {
	r := New(Config{})
	boot := func(id, nick string) Observation {
		return Observation{Source: SourceBootstrap, ID: id, Nickname: nick, Addr: netip.MustParseAddrPort("192.0.2.1:4000")}
	}
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "lanpeer", ""), Joined)
	changes := r.Sync(t0, []Observation{boot("p1", "alice"), boot("p2", "bob")})
	if len(changes) != 2 || r.Len() != 3 {
		t.Fatalf("first sync: %v, %d peers", changes, r.Len())
	}
	changes = r.Sync(t0.Add(5*time.Second), []Observation{boot("p2", "bob")})
	if len(changes) != 1 || changes[0].Kind != Left || changes[0].Peer.ID != "p1" {
		t.Fatalf("second sync: %v", changes)
	}
	// Bootstrap peers never time out locally; LAN peers do.
	gone := r.Expire(t0.Add(time.Hour))
	if len(gone) != 1 || gone[0].Peer.Source != SourceLAN {
		t.Fatalf("expire: %v", gone)
	}
}

func boot(id, instance, nick, addr string) Observation {
	return Observation{Source: SourceBootstrap, ID: id, Instance: instance, Nickname: nick, Addr: netip.MustParseAddrPort(addr)}
}

// A bootstrap peer is keyed by its instance when it has one, so the new
// peer_id a restarted server hands it updates the entry in place; an
// original client (no instance) is keyed by peer_id.
func TestBootstrapPeerKeyedByInstance(t *testing.T) {
	r := New(Config{Self: "me"})
	c := mustObserve(t, r, t0, boot("p1", "b1", "bob", "192.0.2.2:4000"), Joined)
	if c.Peer.Key != "inst:b1" {
		t.Errorf("key = %q, want inst:b1", c.Peer.Key)
	}
	if c := mustObserve(t, r, t0, boot("p2", "", "old", "192.0.2.3:4000"), Joined); c.Peer.Key != "id:p2" {
		t.Errorf("original client's key = %q, want id:p2", c.Peer.Key)
	}
	mustObserve(t, r, t0.Add(time.Second), boot("p1", "b1", "bob", "192.0.2.2:4000"), Refreshed)
	c = mustObserve(t, r, t0.Add(2*time.Second), boot("q1", "b1", "bob", "192.0.2.2:4000"), Updated)
	if c.Peer.ID != "q1" || c.Peer.Key != "inst:b1" || !c.Peer.FirstSeen.Equal(t0) {
		t.Errorf("after a new peer_id: %+v", c.Peer)
	}
	c = mustObserve(t, r, t0.Add(3*time.Second), boot("q1", "b1", "bob", "192.0.2.9:5000"), Updated)
	if c.Peer.Addr != netip.MustParseAddrPort("192.0.2.9:5000") || r.Len() != 2 {
		t.Errorf("after a new address: %+v, %d peers", c.Peer, r.Len())
	}
	if _, err := r.Observe(t0, boot("p9", "me", "me", "192.0.2.1:4000")); !errors.Is(err, ErrSelf) {
		t.Errorf("own registration: %v, want ErrSelf", err)
	}
}

// After a server restart every client has a new peer_id: Sync updates the
// peers that have an instance and replaces only the original clients.
func TestSyncAcrossServerRestart(t *testing.T) {
	r := New(Config{})
	r.Sync(t0, []Observation{
		boot("p1", "a1", "alice", "192.0.2.2:4000"),
		boot("p2", "b1", "bob", "192.0.2.3:4000"),
		boot("p3", "", "old", "192.0.2.4:4000"),
	})
	if r.Len() != 3 {
		t.Fatalf("first sync: %d peers", r.Len())
	}
	changes := r.Sync(t0.Add(time.Minute), []Observation{
		boot("q1", "a1", "alice", "192.0.2.2:4000"),
		boot("q2", "b1", "bob", "192.0.2.3:4000"),
		boot("q3", "", "old", "192.0.2.4:4000"),
	})
	var got []string
	for _, c := range changes {
		got = append(got, c.Kind.String()+" "+c.Peer.Nickname+" "+c.Peer.ID)
	}
	want := []string{"left old p3", "updated alice q1", "updated bob q2", "joined old q3"}
	if !slices.Equal(got, want) {
		t.Fatalf("second sync: %q, want %q", got, want)
	}
	changes = r.Sync(t0.Add(2*time.Minute), []Observation{boot("q2", "b1", "bob", "192.0.2.3:4000")})
	got = got[:0]
	for _, c := range changes {
		got = append(got, c.Kind.String()+" "+c.Peer.Nickname)
	}
	if want := []string{"left old", "left alice"}; !slices.Equal(got, want) {
		t.Fatalf("third sync: %q, want %q", got, want)
	}
	if r.Len() != 1 {
		t.Fatalf("after the third sync: %d peers, want 1", r.Len())
	}
}

// RemoveID removes the bootstrap peer a peer_left names, whatever its key.
func TestRemoveID(t *testing.T) {
	r := New(Config{})
	mustObserve(t, r, t0, boot("p1", "a1", "alice", "192.0.2.2:4000"), Joined)
	mustObserve(t, r, t0, boot("p2", "", "old", "192.0.2.3:4000"), Joined)
	mustObserve(t, r, t0, lan("10.0.0.2", 4000, "lanpeer", ""), Joined)
	if _, ok := r.RemoveID("nope"); ok {
		t.Fatal("RemoveID of an unknown peer_id removed something")
	}
	if _, ok := r.RemoveID(""); ok {
		t.Fatal("RemoveID of the empty peer_id removed something")
	}
	for _, id := range []string{"p1", "p2"} {
		c, ok := r.RemoveID(id)
		if !ok || c.Kind != Left || c.Peer.ID != id {
			t.Fatalf("RemoveID(%s) = %+v, %v", id, c, ok)
		}
	}
	if _, ok := r.RemoveID("p1"); ok || r.Len() != 1 {
		t.Fatalf("second RemoveID(p1) removed something; %d peers left", r.Len())
	}
	// A stale entry sharing a peer_id with a fresher one: the fresher goes.
	mustObserve(t, r, t0, boot("x", "s1", "stale", "192.0.2.5:4000"), Joined)
	mustObserve(t, r, t0.Add(time.Minute), boot("x", "f1", "fresh", "192.0.2.6:4000"), Joined)
	if c, ok := r.RemoveID("x"); !ok || c.Peer.Nickname != "fresh" {
		t.Fatalf("RemoveID(x) = %+v, %v; want fresh", c, ok)
	}
}

// A change of room tags is an update, like one of caps, for LAN and
// bootstrap peers alike; the same tags again are a refresh. The registry
// keeps its own copy of the tags, and hands out copies.
func TestRoomsChangeIsAnUpdate(t *testing.T) {
	const tagA, tagB = "0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"
	for _, o := range []Observation{lan("10.0.0.2", 4000, "bob", "b1"), boot("p1", "b1", "bob", "192.0.2.2:4000")} {
		t.Run(o.Source.String(), func(t *testing.T) {
			r := New(Config{})
			mustObserve(t, r, t0, o, Joined)
			rooms := []string{tagA}
			o.Rooms = rooms
			c := mustObserve(t, r, t0.Add(time.Second), o, Updated)
			if !slices.Equal(c.Peer.Rooms, []string{tagA}) || c.Old.Rooms != nil {
				t.Fatalf("update: peer rooms %q, old %q", c.Peer.Rooms, c.Old.Rooms)
			}
			mustObserve(t, r, t0.Add(2*time.Second), o, Refreshed)
			rooms[0] = tagB // the caller's slice is not the registry's
			o.Rooms = []string{tagA}
			mustObserve(t, r, t0.Add(3*time.Second), o, Refreshed)
			p, _ := r.Get(o.Key())
			p.Rooms[0] = tagB // nor is a returned peer's
			if p, _ := r.Get(o.Key()); !slices.Equal(p.Rooms, []string{tagA}) {
				t.Fatalf("rooms %q changed through a copy", p.Rooms)
			}
			o.Rooms = []string{tagA, tagB}
			c = mustObserve(t, r, t0.Add(4*time.Second), o, Updated)
			if !slices.Equal(c.Old.Rooms, []string{tagA}) || !slices.Equal(c.Peer.Rooms, []string{tagA, tagB}) {
				t.Fatalf("second update: old %q, new %q", c.Old.Rooms, c.Peer.Rooms)
			}
			o.Rooms = nil
			if c = mustObserve(t, r, t0.Add(5*time.Second), o, Updated); c.Peer.Rooms != nil {
				t.Fatalf("after leaving every room: %q", c.Peer.Rooms)
			}
			if l := r.List(); len(l) != 1 || l[0].Rooms != nil {
				t.Fatalf("list %+v", l)
			}
		})
	}
}

func mustObserve(t *testing.T, r *Registry, now time.Time, o Observation, want ChangeKind) Change {
	t.Helper()
	c, err := r.Observe(now, o)
	if err != nil {
		t.Fatalf("Observe(%+v): %v", o, err)
	}
	if c.Kind != want {
		t.Fatalf("Observe(%+v) = %v, want %v", o, c.Kind, want)
	}
	return c
}

// modelPeer is the trivially correct model's view of one peer.
type modelPeer struct {
	nick, instance string
	addr           netip.AddrPort
	lastSeen       time.Time
}

// registryMachine checks Registry against a map keyed by address, with
// every rule written out the slow, obvious way.
type registryMachine struct {
	r     *Registry
	model map[netip.AddrPort]modelPeer
	now   time.Time
	self  string
	max   int
}

const timeout = 15 * time.Second

var (
	machineIPs   = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	machinePorts = []uint16{4000, 4001}
	machineNicks = []string{"alice", "bob"}
	machineInst  = []string{"", "i1", "i2", "self"}
)

func (m *registryMachine) Observe(t *rapid.T) {
	ip := rapid.SampledFrom(machineIPs).Draw(t, "ip")
	port := rapid.SampledFrom(machinePorts).Draw(t, "port")
	nick := rapid.SampledFrom(machineNicks).Draw(t, "nick")
	inst := rapid.SampledFrom(machineInst).Draw(t, "instance")
	o := lan(ip, port, nick, inst)
	c, err := m.r.Observe(m.now, o)

	old, known := m.model[o.Addr]
	switch {
	case inst == m.self:
		if !errors.Is(err, ErrSelf) {
			t.Fatalf("own instance: got %v, %v", c, err)
		}
		return
	case !known && len(m.model) >= m.max:
		if !errors.Is(err, ErrFull) {
			t.Fatalf("at the bound: got %v, %v", c, err)
		}
		return
	case err != nil:
		t.Fatalf("unexpected error %v", err)
	}
	want := Refreshed
	switch {
	case !known:
		want = Joined
	case old.instance != inst:
		want = Restarted
	case old.nick != nick:
		want = Updated
	}
	if c.Kind != want {
		t.Fatalf("Observe: got %v, want %v", c.Kind, want)
	}
	m.model[o.Addr] = modelPeer{nick: nick, instance: inst, addr: o.Addr, lastSeen: m.now}
}

func (m *registryMachine) Goodbye(t *rapid.T) {
	ip := netip.MustParseAddr(rapid.SampledFrom(machineIPs).Draw(t, "ip"))
	nick := rapid.SampledFrom(machineNicks).Draw(t, "nick")
	inst := rapid.SampledFrom(machineInst).Draw(t, "instance")
	gone := m.r.Goodbye(ip, nick, inst)
	want := 0
	if inst != m.self {
		for a, p := range m.model {
			if a.Addr() == ip && p.instance == inst && (inst != "" || p.nick == nick) {
				delete(m.model, a)
				want++
			}
		}
	}
	if len(gone) != want {
		t.Fatalf("Goodbye removed %d, model removed %d", len(gone), want)
	}
}

func (m *registryMachine) Advance(t *rapid.T) {
	m.now = m.now.Add(time.Duration(rapid.IntRange(0, 20).Draw(t, "seconds")) * time.Second)
}

func (m *registryMachine) Expire(t *rapid.T) {
	gone := m.r.Expire(m.now)
	want := 0
	for a, p := range m.model {
		if m.now.Sub(p.lastSeen) >= timeout {
			delete(m.model, a)
			want++
		}
	}
	if len(gone) != want {
		t.Fatalf("Expire removed %d, model removed %d", len(gone), want)
	}
}

func (m *registryMachine) Resolve(t *rapid.T) {
	nick := rapid.SampledFrom(machineNicks).Draw(t, "nick")
	p, err := m.r.Resolve(nick)
	var matches []netip.AddrPort
	for a, mp := range m.model {
		if mp.nick == nick {
			matches = append(matches, a)
		}
	}
	var amb *AmbiguousError
	switch len(matches) {
	case 0:
		if !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("Resolve(%s) = %v, %v; want ErrUnknownPeer", nick, p, err)
		}
	case 1:
		if err != nil || p.Addr != matches[0] {
			t.Fatalf("Resolve(%s) = %v, %v; want %v", nick, p.Addr, err, matches[0])
		}
	default:
		if !errors.As(err, &amb) || len(amb.Candidates) != len(matches) {
			t.Fatalf("Resolve(%s) = %v; want ambiguity among %d", nick, err, len(matches))
		}
	}
}

// Check compares the registry's list with the model after every step.
func (m *registryMachine) Check(t *rapid.T) {
	list := m.r.List()
	if len(list) != len(m.model) {
		t.Fatalf("registry has %d peers, model %d", len(list), len(m.model))
	}
	if !slices.IsSortedFunc(list, comparePeers) {
		t.Fatalf("List is not in stable order")
	}
	for _, p := range list {
		mp, ok := m.model[p.Addr]
		if !ok || mp.nick != p.Nickname || mp.instance != p.Instance || !mp.lastSeen.Equal(p.LastSeen) {
			t.Fatalf("peer %+v differs from model %+v (known %v)", p, mp, ok)
		}
	}
	if len(list) > m.max {
		t.Fatalf("%d peers exceed the bound %d", len(list), m.max)
	}
}

func TestRegistryMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		max := rapid.IntRange(1, 6).Draw(t, "max")
		m := &registryMachine{
			r:     New(Config{Self: "self", Timeout: timeout, MaxPeers: max}),
			model: make(map[netip.AddrPort]modelPeer),
			now:   t0,
			self:  "self",
			max:   max,
		}
		t.Repeat(rapid.StateMachineActions(m))
	})
}

func ExampleRegistry_Resolve() {
	r := New(Config{Self: "mine"})
	r.Observe(t0, lan("10.0.0.2", 4000, "bob", "8c1d"))
	r.Observe(t0, lan("10.0.0.3", 4000, "bob", "77aa"))
	_, err := r.Resolve("bob")
	fmt.Println(err)
	p, _ := r.Resolve("bob#77")
	fmt.Println(p.Addr)
	// Output:
	// 2 peers are called bob: bob@10.0.0.2:4000 bob@10.0.0.3:4000
	// 10.0.0.3:4000
}

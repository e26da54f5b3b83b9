package rendezvous

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/protocol"
)

// deadBound is how long after a server stops the others have dropped
// its peers: three beats after its last one, found by a check every
// quarter beat, plus room for a loaded test machine.
const deadBound = 3*testBeat + testBeat/4 + 500*time.Millisecond

func threeServers(t *testing.T) (*natsProvider, []*clusterServer) {
	t.Helper()
	p := &natsProvider{}
	p.start(t)
	var ss []*clusterServer
	for i, name := range []string{"a", "b", "c"} {
		ss = append(ss, startClusterServer(t, name, uint64(i+1), nats.InProcessServer(p)))
	}
	waitMeshed(t, ss...)
	return p, ss
}

func TestClusterPeersOnDifferentServersSeeEachOther(t *testing.T) {
	_, ss := threeServers(t)
	a, b, c := ss[0], ss[1], ss[2]

	alice := a.dial(t, "192.0.2.1")
	ra, _ := alice.registerPush("alice", "inst-alice", protocol.CapRelay)
	waitListed(t, []string{"alice"}, ss...)

	bob := b.dial(t, "198.51.100.2")
	rb, first := bob.registerPush("bob", "inst-bob", protocol.CapRelay)
	if got := ids(first); len(got) != 2 || got[ra.PeerID] != "alice" {
		t.Fatalf("bob's first list %v, want alice (on a) and bob", got)
	}
	for _, p := range first {
		if p.PeerID == ra.PeerID && (p.PublicAddr != "192.0.2.1:4000" || p.Instance != "inst-alice" || !slices.Contains(p.Caps, protocol.CapRelay)) {
			t.Errorf("alice as listed by b: %+v", p)
		}
	}
	alice.recvUntil(5*time.Second, "joined bob "+rb.PeerID)
	waitListed(t, []string{"alice", "bob"}, ss...)

	// A plain list on the third server has both, with their addresses.
	carol := c.dial(t, "203.0.113.3")
	rc, _ := carol.registerPush("carol", "inst-carol")
	got := map[string]string{}
	for _, p := range carol.list() {
		got[p.Nickname] = p.PublicAddr
	}
	if want := map[string]string{"alice": "192.0.2.1:4000", "bob": "198.51.100.2:4000", "carol": "203.0.113.3:4000"}; !mapsEqual(got, want) {
		t.Fatalf("c lists %v, want %v", got, want)
	}
	alice.recvUntil(5*time.Second, "joined carol "+rc.PeerID)
	bob.recvUntil(5*time.Second, "joined carol "+rc.PeerID)

	// A relayed stream to a peer on another server opens (the rest is
	// in cluster_relay_test.go).
	rs := a.dial(t, "192.0.2.1")
	rs.send(&protocol.RelayConnect{Token: ra.RelayToken, PeerID: rb.PeerID})
	in := bob.recvUntil(5*time.Second, "*protocol.RelayIncoming")
	if len(in) != 1 {
		t.Fatalf("bob was sent %v before relay_incoming", in)
	}
	rs.ws.Close()

	// A leave on one server reaches the subscribers on the others, and
	// an unregister does too.
	bob.ws.Close()
	alice.recvUntil(5*time.Second, "left "+rb.PeerID)
	carol.recvUntil(5*time.Second, "left "+rb.PeerID)
	carol.send(&protocol.Unregister{})
	alice.recvUntil(5*time.Second, "left "+rc.PeerID)
	waitListed(t, []string{"alice"}, ss...)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A server that dies says nothing; the others drop its peers once its
// beats stop, within deadBound. Its client registers with another server
// under the same instance: a client on the third server sees that new
// entry first (its client updates the peer keyed by instance) and the
// old peer_id's peer_left after, which then matches nothing: no churn.
func TestClusterDeadServerPeersDroppedWithinBound(t *testing.T) {
	_, ss := threeServers(t)
	a, b, c := ss[0], ss[1], ss[2]
	alice := a.dial(t, "192.0.2.1")
	ra, _ := alice.registerPush("alice", "inst-alice")
	dave := a.dial(t, "192.0.2.4")
	rd, _ := dave.registerPush("dave", "") // an original-style client without instance
	carol := c.dial(t, "203.0.113.3")
	carol.registerPush("carol", "inst-carol")
	waitListed(t, []string{"alice", "carol", "dave"}, ss...)

	killed := time.Now()
	closed := make(chan struct{})
	go func() { // its NATS connection first, without a word; then its clients
		defer close(closed)
		a.Close()
	}()
	t.Cleanup(func() { <-closed })
	alice.recvClose() // as a client notices a dead server
	alice2 := b.dial(t, "192.0.2.1")
	ra2, _ := alice2.registerPush("alice", "inst-alice")

	got := carol.recvUntil(deadBound+time.Second, "left "+rd.PeerID)
	elapsed := time.Since(killed)
	if !slices.Contains(got, "left "+ra.PeerID) {
		got = append(got, carol.recvUntil(time.Second, "left "+ra.PeerID)...)
	}
	t.Logf("c dropped a's peers %v after a died; carol saw %v", elapsed, got)
	if elapsed > deadBound {
		t.Errorf("a's peers dropped %v after it died, want within %v", elapsed, deadBound)
	}
	if elapsed < 2*testBeat-50*time.Millisecond {
		t.Errorf("a's peers dropped %v after it died, before three beats could be missed", elapsed)
	}
	joined := slices.Index(got, "joined alice "+ra2.PeerID)
	left := slices.Index(got, "left "+ra.PeerID)
	if joined < 0 || left < 0 || joined > left {
		t.Errorf("carol saw %v: want alice's new entry (%s) before the old one's peer_left (%s)", got, ra2.PeerID, ra.PeerID)
	}
	waitListed(t, []string{"alice", "carol"}, b, c)
	waitFor(t, 5*time.Second, "a to be forgotten", func() bool { return len(c.remoteIDs()) == 1 && len(b.remoteIDs()) == 1 })
}

// NATS goes away entirely: every server keeps serving its own clients
// and keeps the others' peers (for up to Expiry), says degraded in
// /healthz and /metrics, and once NATS is back resynchronises through
// snapshots, pushing only what changed meanwhile: no peer_left or
// peer_joined for a peer that stayed.
func TestClusterNATSOutageDegradesAndResyncsWithoutChurn(t *testing.T) {
	p, ss := threeServers(t)
	a, b := ss[0], ss[1]
	alice := a.dial(t, "192.0.2.1")
	alice.registerPush("alice", "inst-alice")
	waitListed(t, []string{"alice"}, ss...)
	bob := b.dial(t, "198.51.100.2")
	bob.registerPush("bob", "inst-bob")
	eve := b.dial(t, "198.51.100.5")
	re, _ := eve.registerPush("eve", "inst-eve")
	waitListed(t, []string{"alice", "bob", "eve"}, ss...)
	alice.recvUntil(5*time.Second, "joined eve")
	bob.recvUntil(5*time.Second, "joined eve")

	p.stop()
	waitFor(t, 10*time.Second, "every server to notice NATS is gone", func() bool {
		for _, s := range ss {
			if s.connected() {
				return false
			}
		}
		return true
	})
	for _, s := range ss {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), "degraded: not connected to NATS") {
			t.Errorf("%s /healthz while NATS is down: %d %q", s.name, rec.Code, rec.Body)
		}
		if g := gauge(t, s.Server, "parlance_bootstrap_cluster_degraded"); g != 1 {
			t.Errorf("%s cluster_degraded %v while NATS is down, want 1", s.name, g)
		}
	}
	// Local service goes on: a new client on a is pushed to alice, and
	// eve leaving b reaches bob, not (yet) a.
	dave := a.dial(t, "192.0.2.4")
	rd, _ := dave.registerPush("dave", "inst-dave")
	alice.recvUntil(5*time.Second, "joined dave "+rd.PeerID)
	eve.ws.Close()
	bob.recvUntil(5*time.Second, "left "+re.PeerID)
	// Once the three beats that would mark a server dead have passed,
	// a still lists b's peers.
	a.mu.Lock()
	down := a.clusterDown
	a.mu.Unlock()
	waitFor(t, 5*time.Second, "four beats of silence", func() bool { return time.Since(down) > 4*testBeat })
	if got := a.listed(); !got["bob"] || !got["eve"] {
		t.Fatalf("a lists %v while cut off, want b's peers kept", got)
	}

	p.start(t)
	waitMeshed(t, ss...)
	waitListed(t, []string{"alice", "bob", "dave"}, ss...)
	for _, s := range ss {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code != 200 || rec.Body.String() != "ok\n" {
			t.Errorf("%s /healthz after NATS came back: %d %q", s.name, rec.Code, rec.Body)
		}
		if g := gauge(t, s.Server, "parlance_bootstrap_cluster_degraded"); g != 0 {
			t.Errorf("%s cluster_degraded %v with NATS back, want 0", s.name, g)
		}
	}
	// A marker registered last: everything pushed before it is what
	// the resync pushed.
	c := ss[2]
	mark := c.dial(t, "203.0.113.9")
	mark.registerPush("marker", "inst-marker")
	gotA := alice.recvUntil(5*time.Second, "joined marker")
	gotB := bob.recvUntil(5*time.Second, "joined marker")
	if want := []string{"left " + re.PeerID, "joined marker"}; len(gotA) != 2 || gotA[0] != want[0] || !strings.HasPrefix(gotA[1], want[1]) {
		t.Errorf("alice was pushed %v after the outage, want only eve's leave and the marker", gotA)
	}
	if len(gotB) != 2 || gotB[0] != "joined dave "+rd.PeerID {
		t.Errorf("bob was pushed %v after the outage, want only dave's join and the marker", gotB)
	}
}

func gauge(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

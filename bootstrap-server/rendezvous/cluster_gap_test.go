package rendezvous

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/bootstrap-server/internal/cluster"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// ghost is a cluster member played by the test on the wire: it beats,
// publishes what the test tells it, and answers snapshot requests with
// the peers the test sets.
type ghost struct {
	t      *testing.T
	nc     *nats.Conn
	id     string
	mu     sync.Mutex
	peers  []protocol.PeerInfo
	seq    uint64
	reqs   int
	parts  int
	cancel context.CancelFunc
	done   chan struct{}
}

func newGhost(t *testing.T, p *natsProvider, id string) *ghost {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(p), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	g := &ghost{t: t, nc: nc, id: id, parts: 1, done: make(chan struct{})}
	if _, err := nc.Subscribe(cluster.DefaultPrefix+".srv."+id, g.serve); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() {
		defer close(g.done)
		tk := time.NewTicker(testBeat)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				g.mu.Lock()
				seq := g.seq
				g.mu.Unlock()
				g.publish(cluster.DefaultPrefix+".bus", &cluster.Msg{Type: cluster.TypeBeat, Seq: seq})
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-g.done
		nc.Close()
	})
	return g
}

func (g *ghost) publish(subj string, m *cluster.Msg) {
	m.Server, m.Gen = g.id, 1
	b, err := cluster.Encode(m)
	if err != nil {
		g.t.Error(err)
		return
	}
	if err := g.nc.Publish(subj, b); err != nil {
		g.t.Error(err)
	}
}

// serve answers a snapshot request with the current peers, in g.parts
// parts.
func (g *ghost) serve(nm *nats.Msg) {
	req, err := cluster.Decode(nm.Data)
	if err != nil || req.Type != cluster.TypeSnapReq {
		g.t.Errorf("ghost got %s (%v)", nm.Data, err)
		return
	}
	g.mu.Lock()
	g.reqs++
	peers, seq, parts := slices.Clone(g.peers), g.seq, g.parts
	g.mu.Unlock()
	for i := range parts {
		var part []cluster.WireEntry
		for j, p := range peers {
			if j%parts == i {
				raw, _ := json.Marshal(p)
				part = append(part, cluster.WireEntry{NS: "", Peer: raw})
			}
		}
		g.publish(cluster.DefaultPrefix+".srv."+req.Server, &cluster.Msg{Type: cluster.TypeSnap, Seq: seq, Req: req.Req, Part: i, Parts: parts, Snap: part})
	}
}

func (g *ghost) requests() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reqs
}

func ghostPeer(nick string) protocol.PeerInfo {
	return protocol.PeerInfo{PeerID: "ghost-" + nick, Nickname: nick, PublicAddr: "192.0.2.77:4000", LocalAddr: "0.0.0.0:4000", LastSeen: 1, Instance: "inst-" + nick}
}

// join publishes a join with sequence number seq (not necessarily the
// next: the test makes gaps).
func (g *ghost) join(seq uint64, p protocol.PeerInfo) {
	raw, _ := json.Marshal(p)
	g.publish(cluster.DefaultPrefix+".bus", &cluster.Msg{Type: cluster.TypeJoin, Seq: seq, Peer: raw})
}

// A gap in a server's sequence numbers (a join or leave lost on the way)
// makes the receiver ask that server for a snapshot and replace its
// peers with it, pushing only the difference.
func TestClusterSequenceGapTriggersSnapshot(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	a := startClusterServer(t, "a", 1, nats.InProcessServer(p))
	alice := a.dial(t, "192.0.2.1")
	alice.registerPush("alice", "inst-alice")
	waitFor(t, 5*time.Second, "a to connect", a.connected)

	g := newGhost(t, p, "0000000000000042")
	one, two, three, four := ghostPeer("one"), ghostPeer("two"), ghostPeer("three"), ghostPeer("four")
	g.mu.Lock()
	g.peers, g.parts = []protocol.PeerInfo{one}, 2
	g.mu.Unlock()
	// The ghost's first beat makes a ask for a snapshot: one.
	alice.recvUntil(5*time.Second, "joined one")
	if n := g.requests(); n != 1 {
		t.Fatalf("%d snapshot requests for a new server, want 1", n)
	}
	g.mu.Lock()
	g.seq, g.peers = 1, []protocol.PeerInfo{one, two}
	g.mu.Unlock()
	g.join(1, two)
	alice.recvUntil(5*time.Second, "joined two")

	// seq 2 (two leaves) is lost; seq 3 (three joins) arrives.
	g.mu.Lock()
	g.seq, g.peers = 3, []protocol.PeerInfo{one, three, four}
	g.mu.Unlock()
	g.join(3, three)
	got := alice.recvUntil(5*time.Second, "left ghost-two")
	if n := g.requests(); n != 2 {
		t.Errorf("%d snapshot requests after the gap, want 2", n)
	}
	// From the snapshot: three and four join, two leaves; one, which
	// stayed, is not pushed again.
	want := []string{"joined four ghost-four", "joined three ghost-three", "left ghost-two"}
	if len(got) == 3 {
		slices.Sort(got[:2])
	}
	if !slices.Equal(got, want) {
		t.Errorf("alice was pushed %v after the gap, want %v", got, want)
	}
	if l := a.listed(); len(l) != 4 || !l["one"] || !l["three"] || !l["four"] || !l["alice"] {
		t.Errorf("a lists %v, want alice, one, three, four", l)
	}
	// Events go on from the snapshot's sequence number.
	g.join(4, ghostPeer("five"))
	alice.recvUntil(5*time.Second, "joined five")
	if n := g.requests(); n != 2 {
		t.Errorf("%d snapshot requests, want still 2", n)
	}
	// Remote peers are listed with their server's last beat as last_seen.
	for _, p := range alice.list() {
		if p.Nickname == "one" && time.Since(time.Unix(p.LastSeen, 0)) > 3*time.Second {
			t.Errorf("one listed with last_seen %d, want about now", p.LastSeen)
		}
	}
}

// Three NATS nodes in a cluster, each bootstrap server on its own node:
// when one node dies, its bootstrap server reconnects to another within
// a beat or so, and the service goes on without churn (the others do not
// take it for dead, since its beats resume in time).
func TestClusterSurvivesLossOfOneNATSNode(t *testing.T) {
	netns.Require(t) // real loopback sockets between the NATS nodes
	var nodes []*natsserver.Server
	var routes []string
	for i := range 3 {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			Cluster: natsserver.ClusterOpts{Name: "parlance", Host: "127.0.0.1", Port: -1},
		}
		if len(routes) > 0 {
			opts.Routes = natsserver.RoutesFromStr(routes[0])
		}
		srv, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS node not ready")
		}
		routes = append(routes, "nats://"+srv.ClusterAddr().String())
		nodes = append(nodes, srv)
	}
	waitFor(t, 10*time.Second, "the NATS nodes to route to each other", func() bool {
		for _, n := range nodes {
			if n.NumRoutes() < 2 {
				return false
			}
		}
		return true
	})
	var ss []*clusterServer
	for i, name := range []string{"a", "b", "c"} {
		// Each knows every node, its own first; nats.go keeps that order.
		urls := []string{nodes[i].ClientURL()}
		for j, n := range nodes {
			if j != i {
				urls = append(urls, n.ClientURL())
			}
		}
		s, err := NewServer(Config{
			MaxConnsPerIP: -1, MsgRatePerIP: -1, ShutdownGrace: 200 * time.Millisecond,
			Cluster: &ClusterConfig{NATS: urls, Name: name, Beat: testBeat, Options: []nats.Option{nats.DontRandomize()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		cs := &clusterServer{Server: s, ln: newMemListener(), name: name}
		go s.Serve(context.Background(), cs.ln)
		t.Cleanup(func() { s.Close() })
		ss = append(ss, cs)
	}
	waitMeshed(t, ss...)
	a, b, c := ss[0], ss[1], ss[2]
	// One at a time, each listed everywhere before the next: then each
	// has exactly the later ones pushed.
	alice := a.dial(t, "192.0.2.1")
	alice.registerPush("alice", "inst-alice")
	waitListed(t, []string{"alice"}, ss...)
	bob := b.dial(t, "198.51.100.2")
	bob.registerPush("bob", "inst-bob")
	waitListed(t, []string{"alice", "bob"}, ss...)
	carol := c.dial(t, "203.0.113.3")
	carol.registerPush("carol", "inst-carol")
	waitListed(t, []string{"alice", "bob", "carol"}, ss...)
	alice.recvUntil(5*time.Second, "joined carol")
	bob.recvUntil(5*time.Second, "joined carol")

	// Kill a's NATS node.
	nodes[0].Shutdown()
	nodes[0].WaitForShutdown()
	waitFor(t, 10*time.Second, "a to reconnect to another node", func() bool {
		return a.connected() && a.cluster != nil && a.cluster.ConnectedURL() != nodes[0].ClientURL()
	})
	// The service goes on: a newcomer on a reaches everyone, and
	// everything pushed before it is nothing.
	dave := a.dial(t, "192.0.2.4")
	dave.registerPush("dave", "inst-dave")
	for name, cl := range map[string]*client{"alice": alice, "bob": bob, "carol": carol} {
		if got := cl.recvUntil(5*time.Second, "joined dave"); len(got) != 1 {
			t.Errorf("%s was pushed %v, want only dave's join", name, got)
		}
	}
	// And the three beats have passed: nobody dropped a.
	deadline := time.Now().Add(4 * testBeat)
	waitFor(t, 5*time.Second, "four beats to pass", func() bool { return time.Now().After(deadline) })
	waitListed(t, []string{"alice", "bob", "carol", "dave"}, ss...)
}

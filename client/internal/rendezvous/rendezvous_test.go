package rendezvous_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	server "github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// world is a netsim network with bootstrap server addresses on port 8080
// of hosts in 10.0.0.0/24: 10.0.0.1 (serverIP, what run dials) and any
// other a test adds; the server behind each can be stopped and started
// again. Each address a client runs from is a host of its own.
type world struct {
	t       *testing.T
	n       *netsim.Network
	dc      *netsim.Segment
	servers map[string]*serverSlot // by IP
	lans    map[netip.Prefix]*netsim.Segment
}

// serverSlot is one server address and the server running behind it.
type serverSlot struct {
	host *netsim.Host
	srv  *server.Server
	done chan error
}

// serverIP is the address of the server a client uses by default.
const serverIP = "10.0.0.1"

// serverURL is the URL of the server at ip.
func serverURL(ip string) string { return "ws://" + ip + ":8080/" }

// newWorld builds the network inside the test's bubble; it closes after
// every later cleanup (clients, servers) has run.
func newWorld(t *testing.T) *world {
	n := netsim.New(netsim.SeedFromEnv(t), nil)
	t.Cleanup(n.Close)
	return &world{
		t:       t,
		n:       n,
		dc:      n.AddSegmentPrefix("dc", netip.MustParsePrefix("10.0.0.0/24")),
		servers: map[string]*serverSlot{},
		lans:    map[netip.Prefix]*netsim.Segment{},
	}
}

// slot returns the server address ip, adding its host on first use.
func (w *world) slot(ip string) *serverSlot {
	s := w.servers[ip]
	if s == nil {
		s = &serverSlot{host: w.n.AddHostAddr("server-"+ip, w.dc, netip.MustParseAddr(ip))}
		w.servers[ip] = s
	}
	return s
}

func (w *world) listen(ip string) net.Listener {
	w.t.Helper()
	h := w.slot(ip).host
	ln, err := h.Listen(h.Context(), "tcp", ":8080")
	if err != nil {
		w.t.Fatal(err)
	}
	return ln
}

// startServer starts our server (seeded) behind serverIP.
func (w *world) startServer(seed byte) { w.startServerAt(serverIP, seed) }

// startServerAt starts our server (seeded) behind ip.
func (w *world) startServerAt(ip string, seed byte) {
	w.t.Helper()
	srv, err := server.NewServer(server.Config{Rand: rand.NewChaCha8([32]byte{seed})})
	if err != nil {
		w.t.Fatal(err)
	}
	ln := w.listen(ip)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	s := w.slot(ip)
	s.srv, s.done = srv, done
}

// startHandler serves h (an original-like server) behind serverIP.
func (w *world) startHandler(h http.Handler) {
	ln := w.listen(serverIP)
	hs := &http.Server{Handler: h}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	w.t.Cleanup(func() { hs.Close(); <-done })
}

func (w *world) stopServer() { w.stopServerAt(serverIP) }

// stopServerAt stops the server behind ip; its clients' connections are
// closed at once.
func (w *world) stopServerAt(ip string) {
	s := w.slot(ip)
	s.srv.Close()
	<-s.done
	s.srv = nil
}

// host returns the host with address ip, adding it on first use.
func (w *world) host(ip string) *netsim.Host {
	if h := w.n.Host(ip); h != nil {
		return h
	}
	a := netip.MustParseAddr(ip)
	p := netip.PrefixFrom(a, 24).Masked()
	lan := w.lans[p]
	if lan == nil {
		lan = w.n.AddSegmentPrefix(p.String(), p)
		w.lans[p] = lan
	}
	return w.n.AddHostAddr(ip, lan, a)
}

// node is one rendezvous client and the peers it reports.
type node struct {
	mu      sync.Mutex
	self    string
	pushed  bool
	peers   map[string]protocol.PeerInfo
	updates []rendezvous.Update
	times   []time.Time // when each update came, on the bubble's clock
	cancel  context.CancelFunc
	done    chan error
}

// run starts a client; opts adjust its Config.
func (w *world) run(name, ip string, port uint16, seed uint64, opts ...func(*rendezvous.Config)) *node {
	n := &node{peers: map[string]protocol.PeerInfo{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	cfg := rendezvous.Config{
		URLs:     []string{serverURL(serverIP)},
		Nickname: name,
		TCPPort:  port,
		Dial:     w.host(ip).DialContext,
		Rand:     rand.New(rand.NewPCG(seed, 0)),
		OnUpdate: n.apply,
	}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { n.done <- rendezvous.Run(ctx, cfg) }()
	w.t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

// apply is what a chat node does with updates.
func (n *node) apply(u rendezvous.Update) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updates = append(n.updates, u)
	n.times = append(n.times, time.Now())
	switch u.Kind {
	case rendezvous.Registered:
		n.self, n.pushed = u.SelfID, u.Pushed
	case rendezvous.Snapshot:
		n.peers = map[string]protocol.PeerInfo{}
		for _, p := range u.Peers {
			n.peers[p.PeerID] = p
		}
	case rendezvous.Joined:
		n.peers[u.Peers[0].PeerID] = u.Peers[0]
	case rendezvous.Left:
		delete(n.peers, u.PeerID)
	}
}

func (n *node) nicks() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s []string
	for _, p := range n.peers {
		s = append(s, p.Nickname+"@"+p.PublicAddr)
	}
	return fmt.Sprint(s)
}

func (n *node) selfID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.self
}

func TestTwoClientsFindEachOtherThroughOurServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		defer w.stopServer()
		alice := w.run("alice", "192.0.2.1", 4001, 1)
		bob := w.run("bob", "192.0.2.2", 4002, 2)
		time.Sleep(time.Second)
		if got, want := alice.nicks(), "[bob@192.0.2.2:4002]"; got != want {
			t.Fatalf("alice sees %s, want %s", got, want)
		}
		if got, want := bob.nicks(), "[alice@192.0.2.1:4001]"; got != want {
			t.Fatalf("bob sees %s, want %s", got, want)
		}
		alice.mu.Lock()
		pushed := alice.pushed
		alice.mu.Unlock()
		if !pushed {
			t.Errorf("our server did not offer push")
		}
		// Heartbeats keep them registered well past the 30 s expiry.
		time.Sleep(2 * time.Minute)
		if got := alice.nicks(); got != "[bob@192.0.2.2:4002]" {
			t.Fatalf("after 2 minutes alice sees %s", got)
		}
		// Quitting unregisters: bob is gone from alice's list at once.
		bob.stop()
		time.Sleep(100 * time.Millisecond)
		if got := alice.nicks(); got != "[]" {
			t.Fatalf("after bob quit alice sees %s, want nobody", got)
		}
	})
}

func TestServerRestartIsSurvived(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		alice := w.run("alice", "192.0.2.1", 4001, 1)
		bob := w.run("bob", "192.0.2.2", 4002, 2)
		time.Sleep(time.Second)
		oldID := alice.selfID()

		w.stopServer()
		time.Sleep(5 * time.Second) // down for a while: several backoff rounds
		w.startServer(2)
		defer w.stopServer()
		// Backoff after 5 s of failures is at most 8 s (jittered 4-8 s).
		time.Sleep(8*time.Second + 100*time.Millisecond)
		if got := alice.nicks(); got != "[bob@192.0.2.2:4002]" {
			t.Fatalf("after the restart alice sees %s", got)
		}
		if alice.selfID() == oldID {
			t.Errorf("alice kept her old peer id; want a new registration")
		}
		_ = bob
		alice.mu.Lock()
		var sawDisconnect bool
		for _, u := range alice.updates {
			if u.Kind == rendezvous.Disconnected && u.RetryIn >= 500*time.Millisecond && u.RetryIn <= 30*time.Second {
				sawDisconnect = true
			}
		}
		alice.mu.Unlock()
		if !sawDisconnect {
			t.Errorf("no Disconnected update with a backoff in [0.5 s, 30 s]")
		}
	})
}

// originalServer behaves like the original: no caps, lists on request
// only, everyone in one list.
// With hangUp it closes each connection once it has answered a register.
type originalServer struct {
	mu        sync.Mutex
	peers     []protocol.PeerInfo
	lists     int
	hangUp    bool
	registers []received
}

func TestPollsAnOriginalServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		orig := &originalServer{}
		w.startHandler(orig)
		alice := w.run("alice", "192.0.2.1", 4001, 1)
		time.Sleep(time.Second)
		alice.mu.Lock()
		pushed := alice.pushed
		alice.mu.Unlock()
		if pushed {
			t.Fatal("an original server does not push")
		}
		orig.add(protocol.PeerInfo{PeerID: "p2", Nickname: "carol", PublicAddr: "192.0.2.3:5000", LocalAddr: "0.0.0.0:5000"})
		time.Sleep(5 * time.Second) // the next poll
		if got := alice.nicks(); got != "[carol@192.0.2.3:5000]" {
			t.Fatalf("alice sees %s, want carol after one poll", got)
		}
		orig.remove("p2") // expired on the server: gone at the next poll
		time.Sleep(5 * time.Second)
		if got := alice.nicks(); got != "[]" {
			t.Fatalf("alice sees %s after carol expired", got)
		}
		alice.stop()
		if n := orig.requests(); n < 3 {
			t.Fatalf("%d list_peers requests, want at least 3", n)
		}
	})
}

package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/protocol"
)

// The cluster tests run on real time: NATS's own goroutines and timers
// do not belong in a synctest bubble. Nothing binds a socket but the
// three-node NATS test (loopback, in a private namespace): the embedded
// NATS servers take in-process connections (DontListen), and the
// bootstrap servers serve over memListener.

// testBeat is the liveness beat in the cluster tests: a server is taken
// for dead after three of them.
const testBeat = 200 * time.Millisecond

// memListener is a net.Listener of in-memory conns (net.Pipe). Each
// dialed conn reports the remote address it was dialed with.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr("10.0.0.1:8080") }

// dialFrom returns a dial function whose conns come from ip.
func (l *memListener) dialFrom(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var port int
	var mu sync.Mutex
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		port++
		p := port
		mu.Unlock()
		a, b := net.Pipe()
		server := &addrConn{Conn: b, local: memAddr(addr), remote: memAddr(fmt.Sprintf("%s:%d", ip, 40000+p))}
		select {
		case l.conns <- server:
			return &addrConn{Conn: a, local: server.remote, remote: server.local}, nil
		case <-l.closed:
			return nil, errors.New("connection refused")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

type memAddr string

func (a memAddr) Network() string { return "tcp" }
func (a memAddr) String() string  { return string(a) }

type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// natsProvider hands nats.go in-process connections to whichever
// embedded NATS server is current, none while it is down.
type natsProvider struct {
	mu  sync.Mutex
	srv *natsserver.Server
}

func (p *natsProvider) InProcessConn() (net.Conn, error) {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	if srv == nil {
		return nil, errors.New("NATS is down")
	}
	return srv.InProcessConn()
}

func (p *natsProvider) ReadyForConnections(d time.Duration) bool { return true }

// start starts a new embedded NATS server that listens nowhere.
func (p *natsProvider) start(t *testing.T) {
	t.Helper()
	srv, err := natsserver.NewServer(&natsserver.Options{DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded NATS not ready")
	}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	t.Cleanup(srv.Shutdown)
}

// stop shuts the current NATS server down: every connection to it ends.
func (p *natsProvider) stop() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
}

// severable hands out a natsProvider's connections for one bootstrap
// server, and can sever them all at once and refuse new ones: to the
// other servers that server is then dead (it says nothing more), while
// it notices that it lost NATS.
type severable struct {
	p     *natsProvider
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (v *severable) InProcessConn() (net.Conn, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cut {
		return nil, errors.New("NATS is unreachable")
	}
	c, err := v.p.InProcessConn()
	if err == nil {
		v.conns = append(v.conns, c)
	}
	return c, err
}

func (v *severable) ReadyForConnections(time.Duration) bool { return true }

func (v *severable) sever() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cut = true
	for _, c := range v.conns {
		c.Close()
	}
}

// clusterServer is one bootstrap server of a test cluster.
type clusterServer struct {
	*Server
	ln   *memListener
	name string
}

// startClusterServer starts a bootstrap server in cluster mode with the
// NATS options given, on a memListener.
func startClusterServer(t *testing.T, name string, seed uint64, natsOpts ...nats.Option) *clusterServer {
	t.Helper()
	return startClusterServerWith(t, name, seed, Config{}, natsOpts...)
}

// startClusterServerWith is startClusterServer with cfg's settings
// (Rand, the per-address limits, ShutdownGrace and Cluster are the
// harness's).
func startClusterServerWith(t *testing.T, name string, seed uint64, cfg Config, natsOpts ...nats.Option) *clusterServer {
	t.Helper()
	cfg.Rand = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
	cfg.MaxConnsPerIP, cfg.MsgRatePerIP, cfg.ShutdownGrace = -1, -1, 200*time.Millisecond
	cfg.Cluster = &ClusterConfig{Name: name, Options: natsOpts, Beat: testBeat}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs := &clusterServer{Server: s, ln: newMemListener(), name: name}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), cs.ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("%s: Serve returned %v, want ErrServerClosed", name, err)
		}
	})
	t.Logf("%s is server %s", name, s.ClusterID())
	return cs
}

// dial connects a raw client to cs from ip.
func (cs *clusterServer) dial(t *testing.T, ip string) *client {
	t.Helper()
	d := websocket.Dialer{NetDialContext: cs.ln.dialFrom(ip)}
	ws, _, err := d.Dial("ws://10.0.0.1:8080/", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", cs.name, err)
	}
	ws.SetReadLimit(protocol.MaxServerFrameSize)
	t.Cleanup(func() { ws.Close() })
	return &client{t: t, ws: ws}
}

// remoteIDs returns the servers cs holds peers of (or an empty snapshot).
func (cs *clusterServer) remoteIDs() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var ids []string
	for id := range cs.remotes {
		ids = append(ids, id)
	}
	return ids
}

func (cs *clusterServer) connected() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.clusterUp
}

// listed returns the nicknames cs lists in the default namespace.
func (cs *clusterServer) listed() map[string]bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	m := map[string]bool{}
	if ns := cs.namespaces[""]; ns != nil {
		for _, p := range ns.peers {
			m[p.info.Nickname] = true
		}
	}
	return m
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMeshed waits until every server holds the state of every other.
func waitMeshed(t *testing.T, servers ...*clusterServer) {
	t.Helper()
	waitFor(t, 10*time.Second, "the servers to find each other", func() bool {
		for _, s := range servers {
			if !s.connected() || len(s.remoteIDs()) != len(servers)-1 {
				return false
			}
		}
		return true
	})
}

// waitListed waits until every server lists exactly nicks.
func waitListed(t *testing.T, nicks []string, servers ...*clusterServer) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("every server to list %v", nicks), func() bool {
		for _, s := range servers {
			got := s.listed()
			if len(got) != len(nicks) {
				return false
			}
			for _, n := range nicks {
				if !got[n] {
					return false
				}
			}
		}
		return true
	})
}

// pushed is what a push subscriber was sent, as short strings:
// "joined alice <peer_id>" or "left <peer_id>".
type pushed []string

// recvUntil reads pushed updates until one matching want (a prefix)
// arrives, and returns all read, that one included.
func (c *client) recvUntil(timeout time.Duration, want string) pushed {
	c.t.Helper()
	var got pushed
	deadline := time.Now().Add(timeout)
	for {
		c.ws.SetReadDeadline(deadline)
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("read waiting for %q (got %v): %v", want, got, err)
		}
		m, err := protocol.DecodeServerMessage(b)
		if err != nil {
			c.t.Fatalf("decode %s: %v", b, err)
		}
		var s string
		switch m := m.(type) {
		case *protocol.PeerJoined:
			s = "joined " + m.Peer.Nickname + " " + m.Peer.PeerID
		case *protocol.PeerLeft:
			s = "left " + m.PeerID
		default:
			s = fmt.Sprintf("%T", m)
		}
		got = append(got, s)
		if strings.HasPrefix(s, want) {
			return got
		}
	}
}

// registerPush registers nick with push (and instance inst) and returns
// the answer and the first list.
func (c *client) registerPush(nick, inst string, caps ...string) (*protocol.Registered, []protocol.PeerInfo) {
	c.t.Helper()
	c.send(&protocol.Register{Nickname: nick, LocalAddr: "0.0.0.0:4000", Instance: inst, Caps: append([]string{protocol.CapPush}, caps...)})
	r, ok := c.recv().(*protocol.Registered)
	if !ok {
		c.t.Fatalf("%s: no registered", nick)
	}
	l, ok := c.recv().(*protocol.PeerList)
	if !ok {
		c.t.Fatalf("%s: no peer_list after registered", nick)
	}
	return r, l.Peers
}

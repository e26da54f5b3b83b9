package rendezvous

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// sim is the network the tests run on (netsim, inside the test's
// synctest bubble): the server listens on 10.0.0.1:8080, and each address
// a client dials from is a host of its own. Real streams, so a close
// lingers as over TCP. Call Settle, not synctest.Wait: the network's
// scheduler already calls that.
type sim struct {
	*netsim.Network
	server *netsim.Host
	lans   map[netip.Prefix]*netsim.Segment
}

// dialFrom returns a dial function whose connections come from ip.
func (n *sim) dialFrom(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if h := n.Host(ip); h != nil {
		return h.DialContext
	}
	a := netip.MustParseAddr(ip)
	p := netip.PrefixFrom(a, 24).Masked()
	lan := n.lans[p]
	if lan == nil {
		lan = n.AddSegmentPrefix(p.String(), p)
		n.lans[p] = lan
	}
	return n.AddHostAddr(ip, lan, a).DialContext
}

// testServer runs a Server on a new sim. Call it inside a bubble.
func testServer(t *testing.T, cfg Config) (*Server, *sim) {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = rand.NewChaCha8([32]byte{1})
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &sim{Network: netsim.New(netsim.SeedFromEnv(t), nil), lans: map[netip.Prefix]*netsim.Segment{}}
	t.Cleanup(n.Close) // first registered, so it runs after the server stopped
	dc := netip.MustParsePrefix("10.0.0.0/24")
	n.server = n.AddHostAddr("server", n.AddSegmentPrefix("dc", dc), netip.MustParseAddr("10.0.0.1"))
	ln, err := n.server.Listen(n.server.Context(), "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, n
}

// client is a raw WebSocket client speaking the wire protocol.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, n *sim, ip string) *client {
	t.Helper()
	d := websocket.Dialer{NetDialContext: n.dialFrom(ip)}
	ws, _, err := d.Dial("ws://10.0.0.1:8080/", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(protocol.MaxServerFrameSize)
	t.Cleanup(func() { ws.Close() })
	return &client{t: t, ws: ws}
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) send(m protocol.ClientMessage) {
	c.t.Helper()
	b, err := protocol.EncodeClientMessage(m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(string(b))
}

// recv reads one message, failing the test after 5 s of (fake) time.
func (c *client) recv() protocol.ServerMessage {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	m, err := protocol.DecodeServerMessage(b)
	if err != nil {
		c.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// recvClose reads until the connection fails, closes it as a client
// does (the server lingers until then) and returns the error.
func (c *client) recvClose() error {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			c.ws.Close()
			return err
		}
	}
}

// expectNothing checks that nothing arrives within d.
func (c *client) expectNothing(d time.Duration) {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.ws.ReadMessage()
	if err == nil {
		c.t.Fatalf("unexpected message %s", b)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("read: %v, want a timeout", err)
	}
	// gorilla read errors are sticky: callers must not read again.
}

func (c *client) register(nick string, port int, caps ...string) *protocol.Registered {
	c.t.Helper()
	c.send(&protocol.Register{Nickname: nick, LocalAddr: "0.0.0.0:" + strconv.Itoa(port), Caps: caps})
	m := c.recv()
	r, ok := m.(*protocol.Registered)
	if !ok {
		c.t.Fatalf("got %#v, want registered", m)
	}
	return r
}

func (c *client) list() []protocol.PeerInfo {
	c.t.Helper()
	c.send(&protocol.ListPeers{})
	m := c.recv()
	l, ok := m.(*protocol.PeerList)
	if !ok {
		c.t.Fatalf("got %#v, want peer_list", m)
	}
	return l.Peers
}

func (c *client) wantError(want string) {
	c.t.Helper()
	m := c.recv()
	e, ok := m.(*protocol.Error)
	if !ok {
		c.t.Fatalf("got %#v, want error %q", m, want)
	}
	if e.Message != want {
		c.t.Fatalf("error %q, want %q", e.Message, want)
	}
}

func ids(peers []protocol.PeerInfo) map[string]string {
	m := map[string]string{}
	for _, p := range peers {
		m[p.PeerID] = p.Nickname
	}
	return m
}

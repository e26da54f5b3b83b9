package rendezvous

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

// memListener is a tiny in-memory network for tests inside a synctest
// bubble: Dial makes a net.Pipe whose ends carry TCP-like addresses.
type memListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	nextPt int
}

func newMemListener() *memListener {
	return &memListener{
		addr:   &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 8080},
		conns:  make(chan net.Conn),
		done:   make(chan struct{}),
		nextPt: 40000,
	}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.local }
func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// dialFrom returns a dial function whose connections come from ip.
func (l *memListener) dialFrom(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		l.mu.Lock()
		l.nextPt++
		port := l.nextPt
		l.mu.Unlock()
		client := &net.TCPAddr{IP: net.ParseIP(ip), Port: port}
		a, b := bufPipe()
		srv := &addrConn{Conn: a, local: l.addr, remote: client}
		cli := &addrConn{Conn: b, local: client, remote: l.addr}
		select {
		case l.conns <- srv:
			return cli, nil
		case <-l.done:
			return nil, errors.New("connection refused")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// testServer runs a Server on a memListener. Call it inside a bubble.
func testServer(t *testing.T, cfg Config) (*Server, *memListener) {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = rand.NewChaCha8([32]byte{1})
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := newMemListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln
}

// client is a raw WebSocket client speaking the wire protocol.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, ln *memListener, ip string) *client {
	t.Helper()
	d := websocket.Dialer{NetDialContext: ln.dialFrom(ip)}
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

// recvErr reads until the connection fails and returns the error.
func (c *client) recvClose() error {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
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

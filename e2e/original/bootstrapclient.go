package original

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parlance-chat/parlance/protocol"
)

// Timing of the original internet-mode client.
const (
	ListInterval      = 5 * time.Second
	HeartbeatInterval = 10 * time.Second
	MaxBackoff        = 30 * time.Second
)

// BootstrapClient is an original internet-mode client.
type BootstrapClient struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	selfID   string
	peers    map[string]protocol.PeerInfo // by peer_id; never expired, as the original
	errors   []string
	attempts int
}

// StartBootstrapClient connects an original client called nick, whose TCP
// listener is on port, to the server at url (ws://host:port/).
func StartBootstrapClient(ctx context.Context, nw Network, url, nick string, port uint16) *BootstrapClient {
	ctx, cancel := context.WithCancel(ctx)
	c := &BootstrapClient{cancel: cancel, done: make(chan struct{}), peers: make(map[string]protocol.PeerInfo)}
	go func() {
		defer close(c.done)
		backoff := time.Second
		for ctx.Err() == nil {
			c.mu.Lock()
			c.attempts++
			c.mu.Unlock()
			err := c.session(ctx, nw, url, nick, port)
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.errors = append(c.errors, err.Error())
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, MaxBackoff)
		}
	}()
	return c
}

// Close disconnects the client.
func (c *BootstrapClient) Close() {
	c.cancel()
	<-c.done
}

// SelfID returns the peer_id of the current registration.
func (c *BootstrapClient) SelfID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.selfID
}

// Peers returns the nicknames of the peers the client knows, sorted.
func (c *BootstrapClient) Peers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for _, p := range c.peers {
		names = append(names, p.Nickname)
	}
	slices.Sort(names)
	return names
}

// Peer returns a known peer by nickname.
func (c *BootstrapClient) Peer(nick string) (protocol.PeerInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		if p.Nickname == nick {
			return p, true
		}
	}
	return protocol.PeerInfo{}, false
}

// Errors returns the errors that ended sessions so far.
func (c *BootstrapClient) Errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errors)
}

func (c *BootstrapClient) session(ctx context.Context, nw Network, url, nick string, port uint16) error {
	d := websocket.Dialer{NetDialContext: nw.DialContext, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { ws.NetConn().Close() })
	defer stop()
	defer ws.Close()

	var writeMu sync.Mutex
	send := func(m protocol.ClientMessage) error {
		b, err := protocol.EncodeClientMessage(m)
		if err != nil {
			return err
		}
		writeMu.Lock()
		defer writeMu.Unlock()
		return ws.WriteMessage(websocket.TextMessage, b)
	}
	if err := send(&protocol.Register{Nickname: nick, LocalAddr: fmt.Sprintf("0.0.0.0:%d", port)}); err != nil {
		return err
	}
	if err := send(&protocol.ListPeers{}); err != nil {
		return err
	}
	readErr := make(chan error, 1)
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			msg, err := protocol.DecodeServerMessage(data)
			if err != nil {
				continue
			}
			c.mu.Lock()
			switch m := msg.(type) {
			case *protocol.Registered:
				c.selfID = m.PeerID
			case *protocol.PeerList:
				for _, p := range m.Peers {
					if p.PeerID != c.selfID {
						c.peers[p.PeerID] = p
					}
				}
			case *protocol.Error:
				c.errors = append(c.errors, m.Message)
			}
			c.mu.Unlock()
		}
	}()
	list := time.NewTicker(ListInterval)
	defer list.Stop()
	hb := time.NewTicker(HeartbeatInterval)
	defer hb.Stop()
	for {
		var err error
		select {
		case err = <-readErr:
			return err
		case <-list.C:
			err = send(&protocol.ListPeers{})
		case <-hb.C:
			err = send(&protocol.Heartbeat{})
		}
		if err != nil {
			ws.NetConn().Close()
			<-readErr
			return err
		}
	}
}

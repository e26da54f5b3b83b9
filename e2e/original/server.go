package original

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parlance-chat/parlance/protocol"
)

// Timing of the original bootstrap server.
const (
	ServerExpiry = 30 * time.Second
	ServerSweep  = 10 * time.Second
)

// Server is an original bootstrap server. Serve it with http.Server; call
// Close to end its connections and sweeper.
type Server struct {
	upgrader websocket.Upgrader
	ids      io.Reader

	mu      sync.Mutex
	peers   map[string]*serverPeer // by peer_id
	conns   map[*websocket.Conn]bool
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
	started bool
}

type serverPeer struct {
	info protocol.PeerInfo
	conn *websocket.Conn
}

// NewServer returns an original server that draws peer ids from ids
// (crypto/rand when nil; pass a seeded source for replayable simulations).
func NewServer(ids io.Reader) *Server {
	if ids == nil {
		ids = rand.Reader
	}
	return &Server{
		ids:   ids,
		peers: make(map[string]*serverPeer),
		conns: make(map[*websocket.Conn]bool),
		done:  make(chan struct{}),
	}
}

// Close closes every connection and waits for the server's goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		for c := range s.conns {
			c.NetConn().Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// PeerIDs returns the registered peer ids, sorted.
func (s *Server) PeerIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ServeHTTP upgrades every request, on any path, as the original does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = true
	if !s.started {
		s.started = true
		s.wg.Add(1)
		go s.sweep()
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.serve(c, r.RemoteAddr)
}

func (s *Server) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(ServerSweep)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			cutoff := time.Now().Add(-ServerExpiry).Unix()
			s.mu.Lock()
			for id, p := range s.peers {
				if p.info.LastSeen < cutoff {
					delete(s.peers, id)
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *Server) serve(c *websocket.Conn, remote string) {
	var myID string
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if myID != "" {
			delete(s.peers, myID)
		}
		s.mu.Unlock()
		c.Close()
	}()
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		msg, err := protocol.DecodeClientMessage(data)
		if err != nil {
			s.reply(c, &protocol.Error{Message: protocol.ErrTextInvalidPrefix + err.Error()})
			continue
		}
		switch m := msg.(type) {
		case *protocol.Register:
			// The original leaves the previous registration as an orphan.
			myID = newUUID(s.ids)
			info := protocol.PeerInfo{PeerID: myID, Nickname: m.Nickname, PublicAddr: publicAddr(remote, m.LocalAddr), LocalAddr: m.LocalAddr, LastSeen: time.Now().Unix()}
			s.mu.Lock()
			s.peers[myID] = &serverPeer{info: info, conn: c}
			s.mu.Unlock()
			s.reply(c, &protocol.Registered{PeerID: myID, PublicAddr: info.PublicAddr})
		case *protocol.ListPeers:
			s.mu.Lock()
			list := &protocol.PeerList{Peers: []protocol.PeerInfo{}}
			for _, p := range s.peers {
				list.Peers = append(list.Peers, p.info)
			}
			s.mu.Unlock()
			slices.SortFunc(list.Peers, func(a, b protocol.PeerInfo) int { return int(a.LastSeen - b.LastSeen) })
			s.reply(c, list)
		case *protocol.Heartbeat:
			if myID == "" {
				s.reply(c, &protocol.Error{Message: protocol.ErrTextNotRegistered})
				continue
			}
			s.mu.Lock()
			p, ok := s.peers[myID]
			if ok {
				p.info.LastSeen = time.Now().Unix()
			}
			s.mu.Unlock()
			if !ok {
				s.reply(c, &protocol.Error{Message: protocol.ErrTextPeerNotRegistered})
			}
		case *protocol.Unregister:
			if myID == "" {
				s.reply(c, &protocol.Error{Message: protocol.ErrTextNotRegistered})
				continue
			}
			// The original deadlocks here: the connection is never served
			// again, and its registration stays until the socket closes.
			<-s.done
			return
		}
	}
}

func (s *Server) reply(c *websocket.Conn, m protocol.ServerMessage) {
	b, err := protocol.EncodeServerMessage(m)
	if err != nil {
		return
	}
	c.WriteMessage(websocket.TextMessage, b)
}

// publicAddr is the observed remote IP plus the port of local_addr, or the
// whole observed address when local_addr does not parse.
func publicAddr(remote, local string) string {
	ra, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote
	}
	_, portStr, err := net.SplitHostPort(local)
	if err != nil {
		return remote
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return remote
	}
	return netip.AddrPortFrom(ra.Addr(), uint16(port)).String()
}

func newUUID(r io.Reader) string {
	var b [16]byte
	io.ReadFull(r, b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

package rendezvous

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/parlance-chat/parlance/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// peer is one registration. Its fields are guarded by Server.mu.
type peer struct {
	info       protocol.PeerInfo
	entry      []byte    // info encoded as a peer_list entry; copied, never shared
	lastSeenAt int       // where entry's last_seen digits start (setLastSeen)
	lastSeen   time.Time // monotonic; drives expiry
	ns         *namespace
	index      int   // position in ns.peers
	conn       *conn // nil for a remote peer
	push       bool
	relay      *relayState // nil unless the peer listed protocol.CapRelay and the server relays
	// remote is the server of the cluster that holds this peer's
	// connection; nil for a peer registered here (cluster.go).
	remote *remoteServer
}

// namespace is the set of peers that see each other. Original clients
// all share the default namespace "". Guarded by Server.mu.
type namespace struct {
	name    string
	peers   []*peer          // registration order, with swap-delete: deterministic
	gauge   prometheus.Gauge // registered_peers{namespace=name}
	subs    map[*conn]struct{}
	remotes int // how many of peers are remote (cluster.go)

	// The encoded peer_list, shared by every requester and every pushed
	// snapshot until it goes stale.
	cache      []byte
	cacheValid bool      // false after a membership change
	cacheStale bool      // a last_seen changed since cacheAt
	cacheAt    time.Time // when cache was built
}

func (ns *namespace) add(p *peer) {
	p.ns = ns
	p.index = len(ns.peers)
	ns.peers = append(ns.peers, p)
	ns.cacheValid = false
}

func (ns *namespace) remove(p *peer) {
	last := len(ns.peers) - 1
	moved := ns.peers[last]
	ns.peers[p.index] = moved
	moved.index = p.index
	ns.peers[last] = nil
	ns.peers = ns.peers[:last]
	if len(ns.peers) == 0 {
		ns.peers = nil
	}
	ns.cacheValid = false
}

// list returns the namespace's peer_list frame, rebuilding it when the
// membership changed, or when a last_seen changed and the cache is older
// than maxAge. The result is shared: callers must not modify it.
func (ns *namespace) list(now time.Time, maxAge time.Duration) []byte {
	// A remote peer's last_seen follows its server's beats, which do
	// not mark the cache stale: a namespace with remote peers always
	// counts as stale.
	stale := ns.cacheStale || ns.remotes > 0
	if ns.cacheValid && (!stale || now.Sub(ns.cacheAt) < maxAge) {
		return ns.cache
	}
	const head, tail = `{"type":"peer_list","peers":[`, `]}`
	n := len(head) + len(tail)
	for _, p := range ns.peers {
		n += len(p.entry) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, head...)
	for i, p := range ns.peers {
		// A frame must stay within what clients accept. Entries are
		// bounded (nickname, caps and instance are), so this only
		// triggers with tens of thousands of peers in one namespace.
		if len(b)+len(p.entry)+1+len(tail) > protocol.MaxServerFrameSize {
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		if r := p.remote; r != nil && p.info.LastSeen != r.seen {
			p.setLastSeen(r.seen)
		}
		b = append(b, p.entry...)
	}
	b = append(b, tail...)
	ns.cache, ns.cacheValid, ns.cacheStale, ns.cacheAt = b, true, false, now
	return b
}

// encodeEntry encodes a PeerInfo exactly as it appears inside a peer_list
// (the same bytes protocol.EncodeServerMessage produces).
func encodeEntry(info *protocol.PeerInfo) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(info); err != nil {
		// PeerInfo holds only strings, string slices and an int64.
		panic(fmt.Sprintf("rendezvous: encode peer entry: %v", err))
	}
	b := buf.Bytes()
	return b[:len(b)-1]
}

// encodeServer encodes a message the server builds itself; every such
// message is well within the frame bound.
func encodeServer(m protocol.ServerMessage) []byte {
	b, err := protocol.EncodeServerMessage(m)
	if err != nil {
		panic(fmt.Sprintf("rendezvous: encode %T: %v", m, err))
	}
	return b
}

// newPeerID returns a random UUIDv4 read from r.
func newPeerID(r io.Reader) (string, error) {
	var u [16]byte
	if _, err := io.ReadFull(r, u[:]); err != nil {
		return "", fmt.Errorf("rendezvous: read random peer id: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return string(s[:]), nil
}

package cluster

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parlance-chat/parlance/protocol"
)

// Subjects, under Config.Prefix (P):
//
//	P.bus        every server publishes join, leave, beat and hello here,
//	             and every server subscribes to it
//	P.srv.<id>   what is addressed to server <id>: snapshot requests and
//	             the parts of the snapshots it asked for
//
// One connection delivers what one publisher sent in the order it was
// sent, across subjects; both subscriptions feed one channel from the
// connection's reader, so a server sees another's messages in that order.
const (
	subjBus = "bus"
	subjSrv = "srv"
)

// Message types.
const (
	TypeJoin    = "join"    // a peer registered, or its registration changed in place
	TypeLeave   = "leave"   // a peer's registration ended
	TypeBeat    = "beat"    // liveness, every Config.Beat
	TypeHello   = "hello"   // a server (re)connected to NATS
	TypeSnapReq = "snapreq" // asks the addressed server for a snapshot
	TypeSnap    = "snap"    // one part of a snapshot
)

// Msg is every cluster message, JSON-encoded; which fields are set
// depends on Type:
//
//	{"t":"join","s":"9f2c41d07ab35e18","g":1,"q":7,"ns":"","p":{"peer_id":"…","nickname":"alice",…}}
//	{"t":"leave","s":"9f2c41d07ab35e18","g":1,"q":8,"ns":"","id":"…"}
//	{"t":"beat","s":"9f2c41d07ab35e18","g":1,"q":8,"n":1,"name":"bootstrap-a"}
//	{"t":"hello","s":"9f2c41d07ab35e18","g":2,"q":8,"name":"bootstrap-a"}
//	{"t":"snapreq","s":"51aa0c6e2d9f7b34","r":3}
//	{"t":"snap","s":"9f2c41d07ab35e18","g":2,"q":8,"r":3,"i":0,"k":1,"peers":[{"ns":"","p":{…}}]}
//
// s is the sender's server id, g its generation (one more on each
// connection to NATS), q its sequence number: one more for every join and
// leave it publishes; a beat, a hello and a snapshot carry the last one.
// In a snapshot r is the request it answers and i of k its part.
type Msg struct {
	Type   string          `json:"t"`
	Server string          `json:"s"`
	Gen    uint64          `json:"g,omitempty"`
	Seq    uint64          `json:"q,omitempty"`
	NS     string          `json:"ns,omitempty"`
	Peer   json.RawMessage `json:"p,omitempty"`
	ID     string          `json:"id,omitempty"`
	Peers  int             `json:"n,omitempty"`
	Name   string          `json:"name,omitempty"`
	Req    uint64          `json:"r,omitempty"`
	Part   int             `json:"i,omitempty"`
	Parts  int             `json:"k,omitempty"`
	Snap   []WireEntry     `json:"peers,omitempty"`

	info protocol.PeerInfo // Peer decoded (join)
	snap []Entry           // Snap decoded (snap)
}

// WireEntry is one peer in a snapshot: its namespace and its peer_list
// entry.
type WireEntry struct {
	NS   string          `json:"ns"`
	Peer json.RawMessage `json:"p"`
}

// Entry is a peer as the host lists it: its namespace and its entry.
// Raw, when set, is the entry already encoded as in a peer_list (it is
// sent as it is); Info is the entry decoded.
type Entry struct {
	NS   string
	Info protocol.PeerInfo
	Raw  []byte
}

var errMalformed = errors.New("cluster: malformed message")

// Encode encodes m.
func Encode(m *Msg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode %s: %w", m.Type, err)
	}
	return b, nil
}

// Decode decodes and checks a cluster message. A message from another
// server is trusted as far as its meaning goes (NATS is the cluster's
// own), but never to be well formed: anything malformed is an error.
func Decode(b []byte) (*Msg, error) {
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if m.Server == "" {
		return nil, fmt.Errorf("%w: no server id", errMalformed)
	}
	switch m.Type {
	case TypeJoin:
		if err := decodePeer(m.Peer, &m.info); err != nil {
			return nil, err
		}
	case TypeLeave:
		if m.ID == "" {
			return nil, fmt.Errorf("%w: leave without id", errMalformed)
		}
	case TypeBeat, TypeHello, TypeSnapReq:
	case TypeSnap:
		if m.Parts < 1 || m.Part < 0 || m.Part >= m.Parts {
			return nil, fmt.Errorf("%w: snapshot part %d of %d", errMalformed, m.Part, m.Parts)
		}
		m.snap = make([]Entry, len(m.Snap))
		for i, e := range m.Snap {
			m.snap[i].NS = e.NS
			if err := decodePeer(e.Peer, &m.snap[i].Info); err != nil {
				return nil, err
			}
		}
		m.Snap = nil
	default:
		return nil, fmt.Errorf("%w: unknown type %q", errMalformed, m.Type)
	}
	return &m, nil
}

func decodePeer(raw json.RawMessage, info *protocol.PeerInfo) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no peer", errMalformed)
	}
	if err := json.Unmarshal(raw, info); err != nil {
		return fmt.Errorf("%w: peer: %v", errMalformed, err)
	}
	if info.PeerID == "" {
		return fmt.Errorf("%w: peer without peer_id", errMalformed)
	}
	return nil
}

// Info is a join's peer, decoded.
func (m *Msg) Info() protocol.PeerInfo { return m.info }

// Entries is a snapshot part's peers, decoded.
func (m *Msg) Entries() []Entry { return m.snap }

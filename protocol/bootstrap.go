package protocol

import (
	"fmt"
	"net/netip"
)

// MaxNamespaceLen bounds the optional namespace of a register message.
const MaxNamespaceLen = 64

// ClientMessage is a message from client to bootstrap server: *Register,
// *ListPeers, *Heartbeat, *Unregister, *RelayConnect or *RelayAccept.
type ClientMessage interface {
	clientType() string
}

// ServerMessage is a message from bootstrap server to client: *Registered,
// *PeerList, *Error, *PeerJoined, *PeerLeft, *RelayIncoming or *RelayReady.
type ServerMessage interface {
	serverType() string
}

// Register announces the client to the server.
type Register struct {
	Nickname string `json:"nickname"`
	// LocalAddr is "0.0.0.0:<tcp port>" as the original sends it.
	LocalAddr string `json:"local_addr"`
	// Optional extensions; absent from original clients.
	Instance  string   `json:"instance,omitempty"`
	Caps      []string `json:"caps,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	// Addrs are the client's own addresses ("ip:port" of its message
	// listener on each local interface), so that peers on the same
	// network can connect without going through its NAT. At most
	// MaxAddrs.
	Addrs []string `json:"addrs,omitempty"`
	// Rooms are the client's room membership tags, as in Announce.Rooms.
	// A server lists them only with a key it has checked.
	Rooms []string `json:"rooms,omitempty"`
	// Signature: the client's identity key and its signature over the
	// fields above (see Sign). A server that lists the key checks it.
	Signature
}

// MaxAddrs bounds the local addresses of a register and a peer entry.
const MaxAddrs = 8

// ListPeers asks for a PeerList.
type ListPeers struct{}

// Heartbeat refreshes the client's registration.
type Heartbeat struct{}

// Unregister removes the client's registration; the connection stays open.
type Unregister struct{}

// Registered answers Register.
type Registered struct {
	PeerID     string   `json:"peer_id"`
	PublicAddr string   `json:"public_addr"`
	Caps       []string `json:"caps,omitempty"`
	// RelayToken authenticates the client's relay WebSockets; present
	// only when both the client and the server listed CapRelay.
	RelayToken string `json:"relay_token,omitempty"`
	// Observed is the ip:port this WebSocket connection came from, as the
	// server saw it. A client compares its port with its own side's: a
	// NAT that does not keep ports (a symmetric NAT, usually) makes hole
	// punching hopeless, and such a client goes straight to the relay.
	Observed string `json:"observed,omitempty"`
}

// PeerInfo describes one registered peer.
type PeerInfo struct {
	PeerID     string   `json:"peer_id"`
	Nickname   string   `json:"nickname"`
	PublicAddr string   `json:"public_addr"`
	LocalAddr  string   `json:"local_addr"`
	LastSeen   int64    `json:"last_seen"`
	Instance   string   `json:"instance,omitempty"`
	Caps       []string `json:"caps,omitempty"`
	// Key is the peer's identity key, listed only when its registration
	// was signed by it.
	Key string `json:"key,omitempty"`
	// Addrs are the addresses the peer registered as its own (see
	// Register.Addrs).
	Addrs []string `json:"addrs,omitempty"`
	// Rooms are the membership tags the peer registered (see
	// Register.Rooms), listed only with Key.
	Rooms []string `json:"rooms,omitempty"`
}

// PeerList lists every registered peer, the requester included.
type PeerList struct {
	Peers []PeerInfo `json:"peers"`
}

// Error reports a failed request. The original's texts are the
// ErrText constants.
type Error struct {
	Message string `json:"message"`
}

// PeerJoined is pushed to clients with CapPush when a peer registers.
type PeerJoined struct {
	Peer PeerInfo `json:"peer"`
}

// PeerLeft is pushed to clients with CapPush when a peer leaves or expires.
type PeerLeft struct {
	PeerID string `json:"peer_id"`
}

// Error texts of the original server.
const (
	ErrTextNotRegistered     = "Not registered"
	ErrTextPeerNotRegistered = "Peer not registered"
	ErrTextInvalidPrefix     = "Invalid message format: "
)

func (*Register) clientType() string   { return "register" }
func (*ListPeers) clientType() string  { return "list_peers" }
func (*Heartbeat) clientType() string  { return "heartbeat" }
func (*Unregister) clientType() string { return "unregister" }

func (*Registered) serverType() string { return "registered" }
func (*PeerList) serverType() string   { return "peer_list" }
func (*Error) serverType() string      { return "error" }
func (*PeerJoined) serverType() string { return "peer_joined" }
func (*PeerLeft) serverType() string   { return "peer_left" }

// EncodeClientMessage returns the message's wire form (one text frame).
func EncodeClientMessage(m ClientMessage) ([]byte, error) {
	var v any
	switch m := m.(type) {
	case *Register:
		v = struct {
			Type string `json:"type"`
			*Register
		}{"register", m}
	case *ListPeers, *Heartbeat, *Unregister:
		v = struct {
			Type string `json:"type"`
		}{m.clientType()}
	case *RelayConnect:
		v = struct {
			Type string `json:"type"`
			*RelayConnect
		}{"relay_connect", m}
	case *RelayAccept:
		v = struct {
			Type string `json:"type"`
			*RelayAccept
		}{"relay_accept", m}
	default:
		return nil, fmt.Errorf("protocol: encode client message: unsupported type %T", m)
	}
	b, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", m.clientType(), err)
	}
	if len(b) > MaxClientFrameSize {
		return nil, fmt.Errorf("protocol: encode %s: %d bytes exceeds the limit of %d bytes: %w", m.clientType(), len(b), MaxClientFrameSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeClientMessage parses one frame from a client.
func DecodeClientMessage(b []byte) (ClientMessage, error) {
	const what = "client message"
	if err := checkInput(what, b, MaxClientFrameSize); err != nil {
		return nil, err
	}
	typ, err := peekType(what, b)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "register":
		var w struct {
			Nickname  *string  `json:"nickname"`
			LocalAddr *string  `json:"local_addr"`
			Instance  string   `json:"instance"`
			Caps      []string `json:"caps"`
			Namespace string   `json:"namespace"`
			Addrs     []string `json:"addrs"`
			Rooms     []string `json:"rooms"`
			Signature
		}
		if err := unmarshal("register", b, &w); err != nil {
			return nil, err
		}
		if w.Nickname == nil {
			return nil, missing("register", "nickname")
		}
		if w.LocalAddr == nil {
			return nil, missing("register", "local_addr")
		}
		if err := checkIdentity("register", *w.Nickname, w.Instance, w.Caps); err != nil {
			return nil, err
		}
		if len(*w.LocalAddr) > 64 {
			return nil, fmt.Errorf("register: field `local_addr` is longer than 64 bytes: %w", ErrMalformed)
		}
		if err := checkNamespace(w.Namespace); err != nil {
			return nil, err
		}
		if err := checkAddrs("register", w.Addrs); err != nil {
			return nil, err
		}
		if err := checkRooms("register", w.Rooms); err != nil {
			return nil, err
		}
		if err := w.Signature.check("register"); err != nil {
			return nil, err
		}
		return &Register{Nickname: *w.Nickname, LocalAddr: *w.LocalAddr, Instance: w.Instance, Caps: nilIfEmpty(w.Caps), Namespace: w.Namespace, Addrs: nilIfEmpty(w.Addrs), Rooms: nilIfEmpty(w.Rooms), Signature: w.Signature}, nil
	case "list_peers", "heartbeat", "unregister":
		// The original ignores extra fields; so do we, but the frame must
		// still be a JSON object.
		var w struct{}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		switch typ {
		case "list_peers":
			return &ListPeers{}, nil
		case "heartbeat":
			return &Heartbeat{}, nil
		default:
			return &Unregister{}, nil
		}
	case "relay_connect", "relay_accept":
		return decodeRelayClient(typ, b)
	default:
		return nil, fmt.Errorf("client message: type %q: %w", truncate(typ, 32), ErrUnknownType)
	}
}

// checkNamespace accepts the default (empty) namespace or 1 to
// MaxNamespaceLen token characters.
func checkNamespace(ns string) error {
	if len(ns) > MaxNamespaceLen || !isToken(ns) {
		return fmt.Errorf("register: field `namespace` must be at most %d letters, digits, '.', '_' or '-': %w", MaxNamespaceLen, ErrMalformed)
	}
	return nil
}

// EncodeServerMessage returns the message's wire form (one text frame).
func EncodeServerMessage(m ServerMessage) ([]byte, error) {
	var v any
	switch m := m.(type) {
	case *Registered:
		v = struct {
			Type string `json:"type"`
			*Registered
		}{"registered", m}
	case *PeerList:
		if m.Peers == nil {
			m = &PeerList{Peers: []PeerInfo{}}
		}
		v = struct {
			Type string `json:"type"`
			*PeerList
		}{"peer_list", m}
	case *Error:
		v = struct {
			Type string `json:"type"`
			*Error
		}{"error", m}
	case *PeerJoined:
		v = struct {
			Type string `json:"type"`
			*PeerJoined
		}{"peer_joined", m}
	case *PeerLeft:
		v = struct {
			Type string `json:"type"`
			*PeerLeft
		}{"peer_left", m}
	case *RelayIncoming:
		v = struct {
			Type string `json:"type"`
			*RelayIncoming
		}{"relay_incoming", m}
	case *RelayReady:
		v = struct {
			Type string `json:"type"`
			*RelayReady
		}{"relay_ready", m}
	default:
		return nil, fmt.Errorf("protocol: encode server message: unsupported type %T", m)
	}
	b, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", m.serverType(), err)
	}
	if len(b) > MaxServerFrameSize {
		return nil, fmt.Errorf("protocol: encode %s: %d bytes exceeds the limit of %d bytes: %w", m.serverType(), len(b), MaxServerFrameSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeServerMessage parses one frame from a server. Peers in a list are
// checked like a register: an entry with an invalid nickname is an error.
func DecodeServerMessage(b []byte) (ServerMessage, error) {
	const what = "server message"
	if err := checkInput(what, b, MaxServerFrameSize); err != nil {
		return nil, err
	}
	typ, err := peekType(what, b)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "registered":
		var w struct {
			PeerID     *string  `json:"peer_id"`
			PublicAddr *string  `json:"public_addr"`
			Caps       []string `json:"caps"`
			RelayToken string   `json:"relay_token"`
			Observed   string   `json:"observed"`
		}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		if w.PeerID == nil {
			return nil, missing(typ, "peer_id")
		}
		if w.PublicAddr == nil {
			return nil, missing(typ, "public_addr")
		}
		if err := checkCaps(typ, w.Caps); err != nil {
			return nil, err
		}
		if w.RelayToken != "" && !ValidRelayToken(w.RelayToken) {
			return nil, fmt.Errorf("registered: field `relay_token` is not a relay token (%d characters of base64url): %w", RelayTokenLen, ErrMalformed)
		}
		if w.Observed != "" {
			if _, err := netip.ParseAddrPort(w.Observed); err != nil {
				return nil, fmt.Errorf("registered: field `observed` is not ip:port: %w", ErrMalformed)
			}
		}
		return &Registered{PeerID: *w.PeerID, PublicAddr: *w.PublicAddr, Caps: nilIfEmpty(w.Caps), RelayToken: w.RelayToken, Observed: w.Observed}, nil
	case "peer_list":
		var w struct {
			Peers *[]wirePeer `json:"peers"`
		}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		if w.Peers == nil {
			return nil, missing(typ, "peers")
		}
		list := &PeerList{Peers: make([]PeerInfo, 0, len(*w.Peers))}
		for i := range *w.Peers {
			p, err := (*w.Peers)[i].check(fmt.Sprintf("peer_list: peers[%d]", i))
			if err != nil {
				return nil, err
			}
			list.Peers = append(list.Peers, p)
		}
		return list, nil
	case "error":
		var w struct {
			Message *string `json:"message"`
		}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		if w.Message == nil {
			return nil, missing(typ, "message")
		}
		return &Error{Message: *w.Message}, nil
	case "peer_joined":
		var w struct {
			Peer *wirePeer `json:"peer"`
		}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		if w.Peer == nil {
			return nil, missing(typ, "peer")
		}
		p, err := w.Peer.check("peer_joined: peer")
		if err != nil {
			return nil, err
		}
		return &PeerJoined{Peer: p}, nil
	case "peer_left":
		var w struct {
			PeerID *string `json:"peer_id"`
		}
		if err := unmarshal(typ, b, &w); err != nil {
			return nil, err
		}
		if w.PeerID == nil {
			return nil, missing(typ, "peer_id")
		}
		return &PeerLeft{PeerID: *w.PeerID}, nil
	case "relay_incoming", "relay_ready":
		return decodeRelayServer(typ, b)
	default:
		return nil, fmt.Errorf("server message: type %q: %w", truncate(typ, 32), ErrUnknownType)
	}
}

type wirePeer struct {
	PeerID     *string  `json:"peer_id"`
	Nickname   *string  `json:"nickname"`
	PublicAddr *string  `json:"public_addr"`
	LocalAddr  *string  `json:"local_addr"`
	LastSeen   *int64   `json:"last_seen"`
	Instance   string   `json:"instance"`
	Caps       []string `json:"caps"`
	Key        string   `json:"key"`
	Addrs      []string `json:"addrs"`
	Rooms      []string `json:"rooms"`
}

func (w *wirePeer) check(what string) (PeerInfo, error) {
	switch {
	case w.PeerID == nil:
		return PeerInfo{}, missing(what, "peer_id")
	case w.Nickname == nil:
		return PeerInfo{}, missing(what, "nickname")
	case w.PublicAddr == nil:
		return PeerInfo{}, missing(what, "public_addr")
	case w.LocalAddr == nil:
		return PeerInfo{}, missing(what, "local_addr")
	case w.LastSeen == nil:
		return PeerInfo{}, missing(what, "last_seen")
	}
	if err := checkIdentity(what, *w.Nickname, w.Instance, w.Caps); err != nil {
		return PeerInfo{}, err
	}
	if w.Key != "" {
		if _, err := ParsePublicKey(w.Key); err != nil {
			return PeerInfo{}, fmt.Errorf("%s: field `key`: %v: %w", what, err, ErrMalformed)
		}
	}
	if err := checkAddrs(what, w.Addrs); err != nil {
		return PeerInfo{}, err
	}
	if err := checkRooms(what, w.Rooms); err != nil {
		return PeerInfo{}, err
	}
	return PeerInfo{PeerID: *w.PeerID, Nickname: *w.Nickname, PublicAddr: *w.PublicAddr, LocalAddr: *w.LocalAddr, LastSeen: *w.LastSeen, Instance: w.Instance, Caps: nilIfEmpty(w.Caps), Key: w.Key, Addrs: nilIfEmpty(w.Addrs), Rooms: nilIfEmpty(w.Rooms)}, nil
}

// checkAddrs accepts at most MaxAddrs entries, each an IP address and a
// port from 1 to 65535 ("10.0.0.5:41135", "[fe80::1]:41135").
func checkAddrs(what string, addrs []string) error {
	if len(addrs) > MaxAddrs {
		return fmt.Errorf("%s: field `addrs` has more than %d entries: %w", what, MaxAddrs, ErrMalformed)
	}
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || ap.Port() == 0 || len(a) > 64 {
			return fmt.Errorf("%s: field `addrs` entry %q is not ip:port: %w", what, truncate(a, 64), ErrMalformed)
		}
	}
	return nil
}

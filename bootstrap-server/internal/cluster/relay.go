package cluster

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/protocol"
)

// Relayed streams between servers (doc.go, "Relayed streams"). Every
// message of a stream travels on its own subject, one per direction:
//
//	P.relay.<id>.<stream>   what is addressed to server <id> about
//	                        stream <stream> (a relay token)
//
// Each server subscribes once to P.relay.<its id>.* when it starts, so
// no subscription is made per stream (interest in a new subscription
// reaches the other nodes of a NATS cluster a moment later, and a first
// message could be lost on the way).
const subjRelay = "relay"

// Relay message types. Data is binary (RelayDataHeader, then the
// payload); the others are JSON objects.
const (
	RelayOpen   = "open"   // A's server asks B's for a stream to B
	RelayAccept = "accept" // B accepted: the stream is open
	RelayCredit = "credit" // the receiver may be sent up to Grant bytes in all
	RelayClose  = "close"  // the sender's half ended (or refused the open)
	RelayData   = "data"   // payload bytes, at Offset in their direction
)

// RelayDataHeader is the length of a data message's header: a zero byte
// (no JSON object starts with one) and the payload's offset in its
// direction of the stream, a big-endian uint64.
const RelayDataHeader = 9

// maxRelayText bounds the strings of a relay control message.
const maxRelayText = 1024

// RelayMsg is a relay message:
//
//	{"t":"open","s":"9f2c41d07ab35e18","g":1,"ns":"","from":"<A's peer_id>","to":"<B's peer_id>","w":262144}
//	{"t":"accept","s":"51aa0c6e2d9f7b34","g":3,"w":262144}
//	{"t":"credit","s":"51aa0c6e2d9f7b34","n":524288}
//	{"t":"close","s":"9f2c41d07ab35e18","code":1000,"reason":"peer closed","o":"closed"}
//	{"t":"close","s":"51aa0c6e2d9f7b34","code":1008,"reason":"relay refused","error":"Peer does not accept relayed streams","o":"no_relay_cap"}
//	0x00, offset (8 bytes), payload
//
// s is the sender's server id and g its generation (open and accept:
// a stream lives no longer than the NATS connection it was opened on).
// w is the sender's receive window: the other side may send that many
// bytes before the first credit. A credit's n is absolute: the receiver
// may be sent bytes up to that offset (so a later credit makes up for a
// lost one). A close carries the close frame (code, reason) for the
// other side's WebSocket, the error message to send before it when the
// stream was still pending, and the outcome it counted.
type RelayMsg struct {
	Type    string `json:"t"`
	Server  string `json:"s"`
	Gen     uint64 `json:"g,omitempty"`
	NS      string `json:"ns,omitempty"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Window  uint64 `json:"w,omitempty"`
	Grant   uint64 `json:"n,omitempty"`
	Code    int    `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
	Outcome string `json:"o,omitempty"`

	// Data only.
	Offset uint64 `json:"-"`
	Data   []byte `json:"-"`
}

// EncodeRelay encodes a relay control message (not data: see
// PutRelayHeader).
func EncodeRelay(m *RelayMsg) ([]byte, error) {
	if m.Type == RelayData {
		return nil, fmt.Errorf("cluster: encode relay data: use PutRelayHeader")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode relay %s: %w", m.Type, err)
	}
	return b, nil
}

// PutRelayHeader writes a data message's header, for the payload at
// offset off, into frame[:RelayDataHeader]; the payload follows it.
func PutRelayHeader(frame []byte, off uint64) {
	frame[0] = 0
	binary.BigEndian.PutUint64(frame[1:RelayDataHeader], off)
}

// DecodeRelay decodes and checks a relay message. A data message's Data
// is a slice of b.
func DecodeRelay(b []byte) (*RelayMsg, error) {
	if len(b) > 0 && b[0] == 0 {
		if len(b) < RelayDataHeader {
			return nil, fmt.Errorf("%w: relay data of %d bytes", errMalformed, len(b))
		}
		return &RelayMsg{Type: RelayData, Offset: binary.BigEndian.Uint64(b[1:RelayDataHeader]), Data: b[RelayDataHeader:]}, nil
	}
	var m RelayMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if m.Server == "" {
		return nil, fmt.Errorf("%w: no server id", errMalformed)
	}
	for _, s := range []string{m.NS, m.From, m.To, m.Reason, m.Error, m.Outcome} {
		if len(s) > maxRelayText {
			return nil, fmt.Errorf("%w: relay %s: a field of %d bytes", errMalformed, m.Type, len(s))
		}
	}
	switch m.Type {
	case RelayOpen:
		if m.From == "" || m.To == "" || m.Window == 0 || m.Gen == 0 {
			return nil, fmt.Errorf("%w: relay open without from, to, window or generation", errMalformed)
		}
	case RelayAccept:
		if m.Window == 0 || m.Gen == 0 {
			return nil, fmt.Errorf("%w: relay accept without window or generation", errMalformed)
		}
	case RelayCredit:
		if m.Grant == 0 {
			return nil, fmt.Errorf("%w: relay credit of nothing", errMalformed)
		}
	case RelayClose:
		// A close frame's code, and a reason that fits one (RFC 6455: 123 bytes).
		if m.Code < 1000 || m.Code > 4999 || len(m.Reason) > 123 {
			return nil, fmt.Errorf("%w: relay close with code %d and a reason of %d bytes", errMalformed, m.Code, len(m.Reason))
		}
	default:
		return nil, fmt.Errorf("%w: unknown relay type %q", errMalformed, m.Type)
	}
	return &m, nil
}

// RelayHandler receives the relay messages addressed to this server, for
// stream (a valid relay token), in the order each server published them,
// all on one goroutine of the NATS connection. It must not block: data
// is bounded by the windows, not by the handler's pace.
type RelayHandler func(stream string, m *RelayMsg)

// relayPendingBytes bounds what the relay subscription may hold unread
// (NATS drops beyond it, as a slow consumer; the offsets in data messages
// reveal the loss). The windows keep it far below in practice.
const relayPendingBytes = 256 << 20

// subscribeRelay subscribes the relay handler, if any.
func (n *Node) subscribeRelay() error {
	if n.cfg.Relay == nil {
		return nil
	}
	prefix := n.cfg.Prefix + "." + subjRelay + "." + n.cfg.ID + "."
	sub, err := n.nc.Subscribe(prefix+"*", func(nm *nats.Msg) {
		n.relayMu.RLock()
		defer n.relayMu.RUnlock()
		if n.relayClosed {
			return
		}
		stream := strings.TrimPrefix(nm.Subject, prefix)
		m, err := DecodeRelay(nm.Data)
		if err != nil || !protocol.ValidRelayToken(stream) {
			n.host.Count("malformed", "relay")
			n.log.Warn("cluster: malformed relay message", "subject", nm.Subject, "err", err)
			return
		}
		if m.Type != RelayData {
			n.host.Count("in", "relay_"+m.Type)
		}
		n.cfg.Relay(stream, m)
	})
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s*: %w", prefix, err)
	}
	return sub.SetPendingLimits(-1, relayPendingBytes)
}

// RelaySubject returns the subject of what is addressed to server about
// stream.
func (n *Node) RelaySubject(server, stream string) string {
	return n.cfg.Prefix + "." + subjRelay + "." + server + "." + stream
}

// Gen returns this server's generation: one more on each connection to
// NATS.
func (n *Node) Gen() uint64 { return n.gen.Load() }

// SendRelay publishes a relay control message to server about stream,
// now: it may block on the NATS connection, so never under a lock that
// must not wait (see QueueRelay). open and accept carry the generation.
func (n *Node) SendRelay(server, stream string, m *RelayMsg) error {
	m.Server, m.Gen = n.cfg.ID, 0
	if m.Type == RelayOpen || m.Type == RelayAccept {
		m.Gen = n.gen.Load()
	}
	b, err := EncodeRelay(m)
	if err == nil {
		err = n.nc.Publish(n.RelaySubject(server, stream), b)
	}
	if err != nil {
		n.host.Count("dropped", "relay_"+m.Type)
		return fmt.Errorf("cluster: relay %s to %s: %w", m.Type, server, err)
	}
	n.host.Count("out", "relay_"+m.Type)
	return nil
}

// QueueRelay publishes a relay control message as SendRelay does, but
// from the node's goroutine: it never blocks. It is dropped when NATS is
// down or too much is queued; the streams of a server cut off from NATS
// end anyway.
func (n *Node) QueueRelay(server, stream string, m *RelayMsg) {
	n.mu.Lock()
	if !n.up || n.closed || len(n.relayOut) >= n.maxQueue {
		n.mu.Unlock()
		n.host.Count("dropped", "relay_"+m.Type)
		return
	}
	n.relayOut = append(n.relayOut, relayOut{server, stream, m})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

type relayOut struct {
	server, stream string
	m              *RelayMsg
}

// flushRelay publishes the queued relay control messages.
func (n *Node) flushRelay() {
	n.mu.Lock()
	out := n.relayOut
	n.relayOut = nil
	n.mu.Unlock()
	for _, o := range out {
		n.SendRelay(o.server, o.stream, o.m) // counted; a stream whose close is lost ends by its idle timeout
	}
}

// SendRelayData publishes frame, whose first RelayDataHeader bytes are
// room for the header, as the payload at offset off on subject (from
// RelaySubject). NATS copies it: frame may be reused at once.
func (n *Node) SendRelayData(subject string, off uint64, frame []byte) error {
	PutRelayHeader(frame, off)
	if err := n.nc.Publish(subject, frame); err != nil {
		return fmt.Errorf("cluster: relay data: %w", err)
	}
	return nil
}

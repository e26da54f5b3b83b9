package protocol

import (
	"encoding/base64"
	"fmt"
	"io"
)

// CapRelay: in register, the client accepts relayed streams (it answers
// relay_incoming with relay_accept); in registered, the server relays
// and the answer carries the client's relay_token. See the package doc.
const CapRelay = "relay"

// Bounds of the relay.
const (
	// MaxRelayFrameSize bounds the payload of one binary frame of a
	// relayed stream. Clients write frames of at most this size; a
	// server refuses larger ones.
	MaxRelayFrameSize = 64 << 10
	// MaxRelayIDLen bounds a peer_id or stream id in relay messages.
	MaxRelayIDLen = 64
	// RelayTokenSize is the number of random bytes in a relay token; on
	// the wire it is RelayTokenLen characters of unpadded base64url.
	RelayTokenSize = 16
	RelayTokenLen  = 22
)

// RelayConnect opens a relayed stream to PeerID. It is the first frame
// on a WebSocket of its own, opened to the same URL as the control
// connection; Token is the sender's relay_token.
type RelayConnect struct {
	Token  string `json:"token"`
	PeerID string `json:"peer_id"`
}

// RelayAccept accepts the relayed stream Stream that a RelayIncoming
// announced. It is the first frame on a WebSocket of its own; Token is
// the sender's relay_token.
type RelayAccept struct {
	Token  string `json:"token"`
	Stream string `json:"stream"`
}

// RelayIncoming tells a client, on its control connection, that PeerID
// wants a relayed stream with it.
type RelayIncoming struct {
	Stream string `json:"stream"`
	PeerID string `json:"peer_id"`
}

// RelayReady tells both ends, on their relay WebSockets, that the stream
// is paired: binary frames carry its bytes from now on.
type RelayReady struct {
	Stream string `json:"stream"`
}

func (*RelayConnect) clientType() string { return "relay_connect" }
func (*RelayAccept) clientType() string  { return "relay_accept" }

func (*RelayIncoming) serverType() string { return "relay_incoming" }
func (*RelayReady) serverType() string    { return "relay_ready" }

// NewRelayToken reads RelayTokenSize random bytes from r and returns
// them as a relay token (also used for stream ids).
func NewRelayToken(r io.Reader) (string, error) {
	var b [RelayTokenSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("protocol: read random relay token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ValidRelayToken reports whether s has the form of a relay token:
// RelayTokenSize bytes in unpadded base64url.
func ValidRelayToken(s string) bool {
	if len(s) != RelayTokenLen {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == RelayTokenSize
}

// relayWire holds every field of every relay message, for decoding.
type relayWire struct {
	Token  *string `json:"token"`
	PeerID *string `json:"peer_id"`
	Stream *string `json:"stream"`
}

func checkRelayToken(what string, tok *string) error {
	if tok == nil {
		return missing(what, "token")
	}
	if !ValidRelayToken(*tok) {
		return fmt.Errorf("%s: field `token` is not a relay token (%d characters of base64url): %w", what, RelayTokenLen, ErrMalformed)
	}
	return nil
}

func checkRelayID(what, field string, id *string) error {
	if id == nil {
		return missing(what, field)
	}
	if *id == "" || len(*id) > MaxRelayIDLen || !isToken(*id) {
		return fmt.Errorf("%s: field `%s` must be 1 to %d letters, digits, '.', '_' or '-': %w", what, field, MaxRelayIDLen, ErrMalformed)
	}
	return nil
}

// decodeRelayClient decodes relay_connect and relay_accept.
func decodeRelayClient(typ string, b []byte) (ClientMessage, error) {
	var w relayWire
	if err := unmarshal(typ, b, &w); err != nil {
		return nil, err
	}
	if err := checkRelayToken(typ, w.Token); err != nil {
		return nil, err
	}
	if typ == "relay_connect" {
		if err := checkRelayID(typ, "peer_id", w.PeerID); err != nil {
			return nil, err
		}
		return &RelayConnect{Token: *w.Token, PeerID: *w.PeerID}, nil
	}
	if err := checkRelayID(typ, "stream", w.Stream); err != nil {
		return nil, err
	}
	return &RelayAccept{Token: *w.Token, Stream: *w.Stream}, nil
}

// decodeRelayServer decodes relay_incoming and relay_ready.
func decodeRelayServer(typ string, b []byte) (ServerMessage, error) {
	var w relayWire
	if err := unmarshal(typ, b, &w); err != nil {
		return nil, err
	}
	if err := checkRelayID(typ, "stream", w.Stream); err != nil {
		return nil, err
	}
	if typ == "relay_ready" {
		return &RelayReady{Stream: *w.Stream}, nil
	}
	if err := checkRelayID(typ, "peer_id", w.PeerID); err != nil {
		return nil, err
	}
	return &RelayIncoming{Stream: *w.Stream, PeerID: *w.PeerID}, nil
}

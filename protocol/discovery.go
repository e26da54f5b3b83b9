package protocol

import "fmt"

// Capabilities a peer advertises in announce and register. A peer sends a
// message that is not in the original protocol only to peers that list the
// matching capability.
const (
	// CapQuery: the peer answers a query datagram with an announce.
	CapQuery = "query"
	// CapGoodbye: the peer sends goodbye when it leaves and drops a peer
	// that sent one.
	CapGoodbye = "goodbye"
	// CapAck: the peer answers a direct message that carries an id with an
	// ack line on the same connection.
	CapAck = "ack"
	// CapPush: in register, the client wants pushed peer_joined/peer_left
	// updates; in registered, the server will send them.
	CapPush = "push"
)

// Limits on the optional identification fields.
const (
	MaxInstanceLen = 64
	MaxCaps        = 32
	MaxCapLen      = 32
	// MaxRoomTags bounds the membership tags (see RoomTagLen) of an
	// announce, a register and a peer entry.
	MaxRoomTags = 16
)

// Datagram is a LAN discovery message: *Announce, *Goodbye or *Query.
type Datagram interface {
	datagramType() string
}

// Announce says "I am here": sent at start-up, on a query, and every
// announce interval.
type Announce struct {
	Nickname string `json:"nickname"`
	TCPPort  uint16 `json:"tcp_port"`
	// Instance identifies one run of one peer. Empty for original peers.
	Instance string `json:"instance,omitempty"`
	// Caps lists optional features; empty for original peers.
	Caps []string `json:"caps,omitempty"`
	// Rooms are the sender's room membership tags (RoomTagLen lowercase
	// hex characters each, at most MaxRoomTags, no duplicates; see
	// client/room): tags, never room names. Only meaningful with a
	// signature, which covers them.
	Rooms []string `json:"rooms,omitempty"`
	// Signature holds the sender's identity key and its signature over
	// the fields above (see Sign); empty from original peers.
	Signature
}

// Goodbye says "I am leaving".
type Goodbye struct {
	Nickname string `json:"nickname"`
	Instance string `json:"instance,omitempty"`
	Signature
}

// Query asks every peer that supports CapQuery to announce now.
type Query struct {
	Instance string `json:"instance,omitempty"`
}

func (*Announce) datagramType() string { return "announce" }
func (*Goodbye) datagramType() string  { return "goodbye" }
func (*Query) datagramType() string    { return "query" }

// HasCap reports whether caps lists c.
func HasCap(caps []string, c string) bool {
	for _, x := range caps {
		if x == c {
			return true
		}
	}
	return false
}

// EncodeDatagram returns the datagram's wire form.
func EncodeDatagram(d Datagram) ([]byte, error) {
	var v any
	switch m := d.(type) {
	case *Announce:
		v = struct {
			Type string `json:"type"`
			*Announce
		}{"announce", m}
	case *Goodbye:
		v = struct {
			Type string `json:"type"`
			*Goodbye
		}{"goodbye", m}
	case *Query:
		v = struct {
			Type string `json:"type"`
			*Query
		}{"query", m}
	default:
		return nil, fmt.Errorf("protocol: encode datagram: unsupported type %T", d)
	}
	b, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", d.datagramType(), err)
	}
	if len(b) > MaxDatagramSize {
		return nil, fmt.Errorf("protocol: encode %s: %d bytes exceeds the limit of %d bytes: %w", d.datagramType(), len(b), MaxDatagramSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeDatagram parses one discovery datagram. Input over MaxDatagramSize,
// invalid UTF-8, a missing or mistyped field, an invalid nickname and an
// unknown type are errors. Datagrams in the canonical layout (the one
// EncodeDatagram produces) take a hand-written fast path with the same
// results; anything else goes through encoding/json.
func DecodeDatagram(b []byte) (Datagram, error) {
	const what = "datagram"
	if err := checkInput(what, b, MaxDatagramSize); err != nil {
		return nil, err
	}
	if d, ok := decodeDatagramFast(b); ok {
		return d, nil
	}
	return decodeDatagramSlow(b)
}

// decodeDatagramSlow is DecodeDatagram through encoding/json, for any input
// that passed checkInput.
func decodeDatagramSlow(b []byte) (Datagram, error) {
	const what = "datagram"
	typ, err := peekType(what, b)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "announce":
		var w struct {
			Nickname *string  `json:"nickname"`
			TCPPort  *uint16  `json:"tcp_port"`
			Instance string   `json:"instance"`
			Caps     []string `json:"caps"`
			Rooms    []string `json:"rooms"`
			Signature
		}
		if err := unmarshal("announce", b, &w); err != nil {
			return nil, err
		}
		if w.Nickname == nil {
			return nil, missing("announce", "nickname")
		}
		if w.TCPPort == nil {
			return nil, missing("announce", "tcp_port")
		}
		if *w.TCPPort == 0 {
			return nil, fmt.Errorf("announce: field `tcp_port` must be from 1 to 65535, got 0: %w", ErrMalformed)
		}
		if err := checkIdentity("announce", *w.Nickname, w.Instance, w.Caps); err != nil {
			return nil, err
		}
		if err := checkRooms("announce", w.Rooms); err != nil {
			return nil, err
		}
		if err := w.Signature.check("announce"); err != nil {
			return nil, err
		}
		return &Announce{Nickname: *w.Nickname, TCPPort: *w.TCPPort, Instance: w.Instance, Caps: nilIfEmpty(w.Caps), Rooms: nilIfEmpty(w.Rooms), Signature: w.Signature}, nil
	case "goodbye":
		var w struct {
			Nickname *string `json:"nickname"`
			Instance string  `json:"instance"`
			Signature
		}
		if err := unmarshal("goodbye", b, &w); err != nil {
			return nil, err
		}
		if w.Nickname == nil {
			return nil, missing("goodbye", "nickname")
		}
		if err := checkIdentity("goodbye", *w.Nickname, w.Instance, nil); err != nil {
			return nil, err
		}
		if err := w.Signature.check("goodbye"); err != nil {
			return nil, err
		}
		return &Goodbye{Nickname: *w.Nickname, Instance: w.Instance, Signature: w.Signature}, nil
	case "query":
		var w Query
		if err := unmarshal("query", b, &w); err != nil {
			return nil, err
		}
		if err := checkInstance("query", w.Instance); err != nil {
			return nil, err
		}
		return &w, nil
	default:
		return nil, fmt.Errorf("datagram: type %q: %w", truncate(typ, 32), ErrUnknownType)
	}
}

// checkIdentity validates the fields that identify a peer.
func checkIdentity(what, nickname, instance string, caps []string) error {
	if err := ValidateNickname(nickname); err != nil {
		return fmt.Errorf("%s: field `nickname`: %v: %w", what, err, ErrMalformed)
	}
	if err := checkInstance(what, instance); err != nil {
		return err
	}
	return checkCaps(what, caps)
}

// checkInstance accepts an empty instance (an original peer) or 1 to
// MaxInstanceLen characters from [A-Za-z0-9._-].
func checkInstance(what, instance string) error {
	if len(instance) > MaxInstanceLen {
		return fmt.Errorf("%s: field `instance` is longer than %d bytes: %w", what, MaxInstanceLen, ErrMalformed)
	}
	if !isToken(instance) {
		return fmt.Errorf("%s: field `instance` may hold only letters, digits, '.', '_' and '-': %w", what, ErrMalformed)
	}
	return nil
}

func checkCaps(what string, caps []string) error {
	if len(caps) > MaxCaps {
		return fmt.Errorf("%s: field `caps` has more than %d entries: %w", what, MaxCaps, ErrMalformed)
	}
	for _, c := range caps {
		if c == "" || len(c) > MaxCapLen || !isToken(c) {
			return fmt.Errorf("%s: field `caps` entry %q is not 1 to %d letters, digits, '.', '_' or '-': %w", what, truncate(c, MaxCapLen), MaxCapLen, ErrMalformed)
		}
	}
	return nil
}

// checkRooms accepts at most MaxRoomTags membership tags, each RoomTagLen
// lowercase hex characters, none twice.
func checkRooms(what string, rooms []string) error {
	if len(rooms) > MaxRoomTags {
		return fmt.Errorf("%s: field `rooms` has more than %d entries: %w", what, MaxRoomTags, ErrMalformed)
	}
	for i, r := range rooms {
		if !isRoomTag(r) {
			return fmt.Errorf("%s: field `rooms` entry %q is not %d lowercase hex characters: %w", what, truncate(r, RoomTagLen+1), RoomTagLen, ErrMalformed)
		}
		for _, prev := range rooms[:i] {
			if prev == r {
				return fmt.Errorf("%s: field `rooms` lists %q twice: %w", what, r, ErrMalformed)
			}
		}
	}
	return nil
}

// ValidRoomTag reports whether s is a room membership tag as announces
// and registers carry it: RoomTagLen lowercase hex characters.
func ValidRoomTag(s string) bool { return isRoomTag(s) }

// isRoomTag reports whether s is RoomTagLen lowercase hex characters.
func isRoomTag[T string | []byte](s T) bool {
	if len(s) != RoomTagLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// truncate shortens s for an error message without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// nilIfEmpty maps an empty list to nil, so that "caps":[] and an absent
// field decode alike.
func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

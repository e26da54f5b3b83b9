package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"
)

// CapRooms: the peer takes part in rooms. It accepts room_msg and room_sum
// lines inside its sessions; a peer that does not list it is never sent
// one.
const CapRooms = "rooms"

// Bounds of rooms.
const (
	// MaxRoomMembers bounds the authors a room's log accepts, and so the
	// entries of a message's deps and of a summary's have.
	MaxRoomMembers = 256
	// RoomIDLen is the length of a room ID: 16 bytes in lowercase hex.
	RoomIDLen = 32
	// RoomTagLen is the length of a membership tag: 12 bytes in
	// lowercase hex.
	RoomTagLen = 24
	// MaxRoomSeq bounds a sequence number so that it is exact in any JSON
	// implementation (a double holds integers up to 2^53) and seq+1
	// never overflows.
	MaxRoomSeq = 1<<53 - 1
)

// RoomSeq names one message of a room: its author's key (wire form) and
// the author's sequence number. A message's deps and a summary's have are
// lists of them.
type RoomSeq struct {
	Author string `json:"a"`
	Seq    uint64 `json:"s"`
}

// RoomMessage is one message of a room, signed by its author. Any member
// may forward it; every receiver checks the signature against Author.
type RoomMessage struct {
	// Room is the room ID (RoomIDLen lowercase hex characters).
	Room string `json:"room"`
	// Author is the author's Ed25519 public key (EncodePublicKey).
	Author string `json:"author"`
	// Nick is the author's nickname when it wrote the message. As for a
	// chat line's from, an invalid nickname is not a decoding error: the
	// receiver shows it escaped and marked (see ValidateNickname).
	Nick string `json:"nick"`
	// Seq is the author's sequence number in this room: 1 for its first
	// message, then each next one.
	Seq uint64 `json:"seq"`
	// Time is the author's clock when it wrote the message, Unix
	// milliseconds. Only for display: order comes from Seq and Deps.
	Time int64 `json:"time"`
	// Deps lists, for each other author whose highest message the author
	// had shown changed since its own previous message, that author and
	// seq. Never the author itself (its Seq-1 is implied), no author
	// twice, at most MaxRoomMembers entries.
	Deps []RoomSeq `json:"deps,omitempty"`
	// Text is what the author wrote, as a chat line's content.
	Text string `json:"text"`
	// Sig is the author's Ed25519 signature over RoomSigningBytes, in
	// standard base64 (88 characters).
	Sig string `json:"sig"`
}

// RoomSummary tells a member what the sender holds of a room: for each
// author, the highest seq it holds contiguously from the start of its
// history. Ask, when set, asks the receiver for the messages of those
// authors that the sender lacks; without it the receiver only learns what
// the sender holds (and may ask it in turn).
type RoomSummary struct {
	Room string    `json:"room"`
	Have []RoomSeq `json:"have"`
	// Ask lists authors (keys, wire form) whose messages the sender asks
	// the receiver for: at most MaxRoomMembers, none twice; omitted when
	// empty.
	Ask []string `json:"ask,omitempty"`
}

// Line types of room traffic. A chat line has no "type" key; these do.
const (
	RoomMessageType = "room_msg"
	RoomSummaryType = "room_sum"
)

// roomSigningDomain starts what a room message's signature covers, so that
// it can never verify as any other signed thing of ours.
const roomSigningDomain = "parlance room message v1\x00"

// RoomSigningBytes returns what a room message's signature covers: the
// domain string, then room, author and nick (each its length as a uvarint
// and its bytes), seq and time (8 bytes big-endian each), the number of
// deps (uvarint) and each dep's author (length-prefixed) and seq (8 bytes),
// in the order given, then text (length-prefixed). Every field but sig, in
// a form that no two different messages share.
func RoomSigningBytes(m *RoomMessage) []byte {
	n := len(roomSigningDomain) + 3*binary.MaxVarintLen64 + len(m.Room) + len(m.Author) + len(m.Nick) + 16 +
		binary.MaxVarintLen64 + len(m.Deps)*(binary.MaxVarintLen64+keyTextLen+8) + binary.MaxVarintLen64 + len(m.Text)
	b := make([]byte, 0, n)
	b = append(b, roomSigningDomain...)
	b = appendLenPrefixed(b, m.Room)
	b = appendLenPrefixed(b, m.Author)
	b = appendLenPrefixed(b, m.Nick)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = binary.AppendUvarint(b, uint64(len(m.Deps)))
	for _, d := range m.Deps {
		b = appendLenPrefixed(b, d.Author)
		b = binary.BigEndian.AppendUint64(b, d.Seq)
	}
	return appendLenPrefixed(b, m.Text)
}

func appendLenPrefixed(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Validate checks the message's fields as the decoder does, and that nick
// and text are valid UTF-8 (JSON cannot carry anything else, and the
// signature covers the exact bytes). It does not check the signature.
func (m *RoomMessage) Validate() error {
	const what = "room message"
	if err := checkRoomID(what, m.Room); err != nil {
		return err
	}
	if _, err := ParsePublicKey(m.Author); err != nil {
		return fmt.Errorf("%s: field `author`: %v: %w", what, err, ErrMalformed)
	}
	if !utf8.ValidString(m.Nick) {
		return fmt.Errorf("%s: field `nick`: %w", what, ErrInvalidUTF8)
	}
	if err := checkRoomSeq(what, "seq", m.Seq); err != nil {
		return err
	}
	if m.Time <= 0 {
		return fmt.Errorf("%s: field `time` must be a positive integer (Unix milliseconds): %w", what, ErrMalformed)
	}
	if err := checkRoomSeqs(what, "deps", m.Deps, m.Author); err != nil {
		return err
	}
	if !utf8.ValidString(m.Text) {
		return fmt.Errorf("%s: field `text`: %w", what, ErrInvalidUTF8)
	}
	if len(m.Sig) != sigTextLen {
		return fmt.Errorf("%s: field `sig` must be a base64 Ed25519 signature (%d characters): %w", what, sigTextLen, ErrMalformed)
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(m.Sig); err != nil || len(b) != ed25519.SignatureSize {
		return fmt.Errorf("%s: field `sig` must be a base64 Ed25519 signature (%d characters): %w", what, sigTextLen, ErrMalformed)
	}
	return nil
}

// Validate checks the summary's fields as the decoder does.
func (s *RoomSummary) Validate() error {
	const what = "room summary"
	if err := checkRoomID(what, s.Room); err != nil {
		return err
	}
	if err := checkRoomSeqs(what, "have", s.Have, ""); err != nil {
		return err
	}
	return checkRoomAsk(what, s.Ask)
}

// checkRoomAsk checks a summary's ask list: at most MaxRoomMembers keys,
// none twice.
func checkRoomAsk(what string, ask []string) error {
	if len(ask) > MaxRoomMembers {
		return fmt.Errorf("%s: field `ask` has more than %d entries: %w", what, MaxRoomMembers, ErrMalformed)
	}
	var seen map[string]bool
	if len(ask) > 8 {
		seen = make(map[string]bool, len(ask))
	}
	for i, a := range ask {
		if _, err := ParsePublicKey(a); err != nil {
			return fmt.Errorf("%s: field `ask[%d]`: %v: %w", what, i, err, ErrMalformed)
		}
		dup := seen[a]
		if seen == nil {
			dup = slices.Contains(ask[:i], a)
		} else {
			seen[a] = true
		}
		if dup {
			return fmt.Errorf("%s: field `ask[%d]`: author listed twice: %w", what, i, ErrMalformed)
		}
	}
	return nil
}

func checkRoomID(what, id string) error {
	if len(id) != RoomIDLen || !isLowerHex(id) {
		return fmt.Errorf("%s: field `room` must be a room ID (%d characters 0-9, a-f): %w", what, RoomIDLen, ErrMalformed)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func checkRoomSeq(what, field string, seq uint64) error {
	if seq < 1 || seq > MaxRoomSeq {
		return fmt.Errorf("%s: field `%s` must be an integer from 1 to %d: %w", what, field, uint64(MaxRoomSeq), ErrMalformed)
	}
	return nil
}

// checkRoomSeqs checks a deps or have list: at most MaxRoomMembers
// entries, each a key and a seq, no author twice, and (for deps) not self.
func checkRoomSeqs(what, field string, list []RoomSeq, self string) error {
	if len(list) > MaxRoomMembers {
		return fmt.Errorf("%s: field `%s` has more than %d entries: %w", what, field, MaxRoomMembers, ErrMalformed)
	}
	var seen map[string]bool // only for long lists; short ones are scanned
	if len(list) > 8 {
		seen = make(map[string]bool, len(list))
	}
	for i, e := range list {
		if _, err := ParsePublicKey(e.Author); err != nil {
			return fmt.Errorf("%s: field `%s[%d].a`: %v: %w", what, field, i, err, ErrMalformed)
		}
		if e.Seq < 1 || e.Seq > MaxRoomSeq {
			return checkRoomSeq(what, fmt.Sprintf("%s[%d].s", field, i), e.Seq)
		}
		dup := seen[e.Author]
		if seen == nil {
			dup = slices.ContainsFunc(list[:i], func(x RoomSeq) bool { return x.Author == e.Author })
		} else {
			seen[e.Author] = true
		}
		if dup {
			return fmt.Errorf("%s: field `%s[%d]`: author listed twice: %w", what, field, i, ErrMalformed)
		}
		if e.Author == self {
			return fmt.Errorf("%s: field `%s[%d]`: the author itself (its previous message is implied): %w", what, field, i, ErrMalformed)
		}
	}
	return nil
}

// EncodeRoomMessage returns the room_msg line with its trailing newline.
// It refuses a message that Validate refuses or whose line would exceed
// MaxLineSize.
func EncodeRoomMessage(m *RoomMessage) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return encodeRoomLine("room message", struct {
		Type string `json:"type"`
		*RoomMessage
	}{RoomMessageType, m})
}

// EncodeRoomSummary returns the room_sum line with its trailing newline.
func EncodeRoomSummary(s *RoomSummary) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	have := s.Have
	if have == nil {
		have = []RoomSeq{} // "have":[], not null
	}
	return encodeRoomLine("room summary", struct {
		Type string    `json:"type"`
		Room string    `json:"room"`
		Have []RoomSeq `json:"have"`
		Ask  []string  `json:"ask,omitempty"`
	}{RoomSummaryType, s.Room, have, s.Ask})
}

func encodeRoomLine(what string, v any) ([]byte, error) {
	b, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", what, err)
	}
	b = append(b, '\n')
	if len(b) > MaxLineSize {
		return nil, fmt.Errorf("protocol: encode %s: %d bytes exceeds the limit of %d bytes: %w", what, len(b), MaxLineSize, ErrTooLarge)
	}
	return b, nil
}

// roomSeqWire is a RoomSeq as decoded, to tell a missing field from zero.
type roomSeqWire struct {
	A *string `json:"a"`
	S *uint64 `json:"s"`
}

func (w roomSeqWire) get(what, field string, i int) (RoomSeq, error) {
	switch {
	case w.A == nil:
		return RoomSeq{}, missing(what, fmt.Sprintf("%s[%d].a", field, i))
	case w.S == nil:
		return RoomSeq{}, missing(what, fmt.Sprintf("%s[%d].s", field, i))
	}
	return RoomSeq{Author: *w.A, Seq: *w.S}, nil
}

func roomSeqsFromWire(what, field string, ws []roomSeqWire) ([]RoomSeq, error) {
	if len(ws) > MaxRoomMembers {
		return nil, fmt.Errorf("%s: field `%s` has more than %d entries: %w", what, field, MaxRoomMembers, ErrMalformed)
	}
	if len(ws) == 0 {
		return nil, nil
	}
	out := make([]RoomSeq, len(ws))
	for i, w := range ws {
		e, err := w.get(what, field, i)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// decodeRoomLine checks the input bounds, strips the newline and checks the
// type field.
func decodeRoomLine(what, typ string, line []byte) ([]byte, error) {
	if err := checkInput(what, line, MaxLineSize); err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	got, err := peekType(what, line)
	if err != nil {
		return nil, err
	}
	if got != typ {
		return nil, fmt.Errorf("%s: field `type` must be %q, got %q: %w", what, typ, truncate(got, 32), ErrMalformed)
	}
	return line, nil
}

// DecodeRoomMessage parses one room_msg line, with or without its newline.
// It checks every field's shape (Validate) but not the signature, and does
// not validate nick as a nickname.
func DecodeRoomMessage(line []byte) (*RoomMessage, error) {
	const what = "room message"
	line, err := decodeRoomLine(what, RoomMessageType, line)
	if err != nil {
		return nil, err
	}
	var w struct {
		Room   *string       `json:"room"`
		Author *string       `json:"author"`
		Nick   *string       `json:"nick"`
		Seq    *uint64       `json:"seq"`
		Time   *int64        `json:"time"`
		Deps   []roomSeqWire `json:"deps"`
		Text   *string       `json:"text"`
		Sig    *string       `json:"sig"`
	}
	if err := unmarshal(what, line, &w); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name    string
		present bool
	}{
		{"room", w.Room != nil}, {"author", w.Author != nil}, {"nick", w.Nick != nil}, {"seq", w.Seq != nil},
		{"time", w.Time != nil}, {"text", w.Text != nil}, {"sig", w.Sig != nil},
	} {
		if !f.present {
			return nil, missing(what, f.name)
		}
	}
	deps, err := roomSeqsFromWire(what, "deps", w.Deps)
	if err != nil {
		return nil, err
	}
	m := &RoomMessage{Room: *w.Room, Author: *w.Author, Nick: *w.Nick, Seq: *w.Seq, Time: *w.Time, Deps: deps, Text: *w.Text, Sig: *w.Sig}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// DecodeRoomSummary parses one room_sum line, with or without its newline.
func DecodeRoomSummary(line []byte) (*RoomSummary, error) {
	const what = "room summary"
	line, err := decodeRoomLine(what, RoomSummaryType, line)
	if err != nil {
		return nil, err
	}
	var w struct {
		Room *string        `json:"room"`
		Have *[]roomSeqWire `json:"have"`
		Ask  []string       `json:"ask"`
	}
	if err := unmarshal(what, line, &w); err != nil {
		return nil, err
	}
	if w.Room == nil {
		return nil, missing(what, "room")
	}
	// have is required, even empty: it is the whole point of the line.
	if w.Have == nil {
		return nil, missing(what, "have")
	}
	have, err := roomSeqsFromWire(what, "have", *w.Have)
	if err != nil {
		return nil, err
	}
	if len(w.Ask) > MaxRoomMembers {
		return nil, fmt.Errorf("%s: field `ask` has more than %d entries: %w", what, MaxRoomMembers, ErrMalformed)
	}
	s := &RoomSummary{Room: *w.Room, Have: have}
	if len(w.Ask) > 0 { // "ask":[] is no ask, as omitted
		s.Ask = w.Ask
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

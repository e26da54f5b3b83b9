package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxMessageIDLen bounds the optional message id.
const MaxMessageIDLen = 64

// ChatMessage is one direct message: one JSON line on a TCP connection.
type ChatMessage struct {
	From      string `json:"from"`
	Content   string `json:"content"`
	Timestamp int64  `json:"timestamp"`
	// ID is set by our senders; a receiver that advertised CapAck answers
	// with an Ack carrying it. Empty from original senders.
	ID string `json:"id,omitempty"`
	// Instance is the sender's instance id, so a receiver can tell which
	// of several peers with one nickname wrote. Empty from original
	// senders.
	Instance string `json:"instance,omitempty"`
	// Expires is when the sender stops trying to deliver the message
	// (Unix seconds; 0: never said). Our senders set it on messages that
	// can wait in their offline queue; a receiver drops a message that
	// arrives after it, unacknowledged, because the sender has told its
	// user that the message expired. Original senders never set it, and
	// original receivers ignore it.
	Expires int64 `json:"expires,omitempty"`
}

// Ack acknowledges delivery of the message with the given id.
type Ack struct {
	ID string `json:"ack"`
}

// EncodeChatLine returns the message's wire form with its trailing newline.
func EncodeChatLine(m *ChatMessage) ([]byte, error) {
	// Room for a line without escapes, so that it takes one allocation.
	const fixed = len(`{"from":"","content":"","timestamp":,"id":"","instance":"","expires":}`+"\n") + 2*len("-9223372036854775808")
	n := fixed + len(m.From) + len(m.Content) + len(m.ID) + len(m.Instance)
	b, err := AppendChatLine(make([]byte, 0, min(n, MaxLineSize)), m)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// AppendChatLine appends the message's wire form with its trailing newline
// to dst: the bytes EncodeChatLine returns. On error it returns dst
// unchanged.
func AppendChatLine(dst []byte, m *ChatMessage) ([]byte, error) {
	b := append(dst, `{"from":`...)
	b = appendJSONString(b, m.From)
	b = append(b, `,"content":`...)
	b = appendJSONString(b, m.Content)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, m.Timestamp, 10)
	if m.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, m.ID)
	}
	if m.Instance != "" {
		b = append(b, `,"instance":`...)
		b = appendJSONString(b, m.Instance)
	}
	if m.Expires != 0 {
		b = append(b, `,"expires":`...)
		b = strconv.AppendInt(b, m.Expires, 10)
	}
	b = append(b, '}', '\n')
	if n := len(b) - len(dst); n > MaxLineSize {
		return dst, fmt.Errorf("protocol: encode message: %d bytes exceeds the limit of %d bytes: %w", n, MaxLineSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeChatLine parses one message line, with or without its newline. It
// does not validate from as a nickname: see ValidateNickname.
func DecodeChatLine(line []byte) (*ChatMessage, error) {
	const what = "message"
	if err := checkInput(what, line, MaxLineSize); err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if m, ok := decodeChatLineFast(line); ok {
		return &m, nil
	}
	return decodeChatLineSlow(line)
}

// decodeChatLineSlow is DecodeChatLine by encoding/json, for line without
// its newline.
func decodeChatLineSlow(line []byte) (*ChatMessage, error) {
	const what = "message"
	var w struct {
		From      *string `json:"from"`
		Content   *string `json:"content"`
		Timestamp *int64  `json:"timestamp"`
		ID        string  `json:"id"`
		Instance  string  `json:"instance"`
		Expires   int64   `json:"expires"`
	}
	if err := unmarshal(what, line, &w); err != nil {
		return nil, err
	}
	switch {
	case w.From == nil:
		return nil, missing(what, "from")
	case w.Content == nil:
		return nil, missing(what, "content")
	case w.Timestamp == nil:
		return nil, missing(what, "timestamp")
	}
	// An invalid from (control characters, too long) is not refused
	// here: the receiver shows such a message with the name escaped and
	// marked, so the user sees that something arrived. Check it with
	// ValidateNickname.
	if err := checkMessageID(what, w.ID); err != nil {
		return nil, err
	}
	if err := checkInstance(what, w.Instance); err != nil {
		return nil, err
	}
	if w.Expires < 0 {
		return nil, fmt.Errorf("%s: field `expires` must not be negative: %w", what, ErrMalformed)
	}
	return &ChatMessage{From: *w.From, Content: *w.Content, Timestamp: *w.Timestamp, ID: w.ID, Instance: w.Instance, Expires: w.Expires}, nil
}

// EncodeAck returns the ack line with its trailing newline.
func EncodeAck(a *Ack) ([]byte, error) {
	b, err := AppendAck(make([]byte, 0, len(`{"ack":""}`+"\n")+len(a.ID)), a)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// AppendAck appends the ack line with its trailing newline to dst: the
// bytes EncodeAck returns. On error it returns dst unchanged.
func AppendAck(dst []byte, a *Ack) ([]byte, error) {
	if err := checkMessageID("ack", a.ID); err != nil {
		return dst, err
	}
	b := append(dst, `{"ack":`...)
	b = appendJSONString(b, a.ID)
	return append(b, '}', '\n'), nil
}

// DecodeAck parses one ack line, with or without its newline.
func DecodeAck(line []byte) (*Ack, error) {
	const what = "ack"
	if err := checkInput(what, line, MaxLineSize); err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	if a, ok := decodeAckFast(line); ok {
		return &a, nil
	}
	return decodeAckSlow(line)
}

// decodeAckSlow is DecodeAck by encoding/json, for line without its
// newline.
func decodeAckSlow(line []byte) (*Ack, error) {
	const what = "ack"
	var w struct {
		ID *string `json:"ack"`
	}
	if err := unmarshal(what, line, &w); err != nil {
		return nil, err
	}
	if w.ID == nil {
		return nil, missing(what, "ack")
	}
	if *w.ID == "" {
		return nil, fmt.Errorf("ack: field `ack` is empty: %w", ErrMalformed)
	}
	if err := checkMessageID(what, *w.ID); err != nil {
		return nil, err
	}
	return &Ack{ID: *w.ID}, nil
}

func checkMessageID(what, id string) error {
	if len(id) > MaxMessageIDLen || !isToken(id) {
		return fmt.Errorf("%s: field `id` must be at most %d letters, digits, '.', '_' or '-': %w", what, MaxMessageIDLen, ErrMalformed)
	}
	return nil
}

// LineReader reads newline-terminated lines of at most MaxLineSize bytes.
// A longer line is refused with ErrTooLarge and the stream is unusable
// afterwards: the caller closes the connection.
type LineReader struct {
	r *bufio.Reader
}

// NewLineReader returns a LineReader on r. It buffers at most MaxLineSize
// bytes.
func NewLineReader(r io.Reader) *LineReader {
	return &LineReader{r: bufio.NewReaderSize(r, MaxLineSize)}
}

// Buffered reports how many bytes are already read from the stream and
// not yet returned: more lines may be waiting without another read. A
// reader of pipelined lines handles what is buffered as one batch.
func (lr *LineReader) Buffered() int { return lr.r.Buffered() }

// ReadLine returns the next line without its newline. The returned slice is
// valid until the next call. A last line without a newline is returned
// before io.EOF.
func (lr *LineReader) ReadLine() ([]byte, error) {
	line, err := lr.r.ReadSlice('\n')
	switch {
	case err == nil:
		return line[:len(line)-1], nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("line longer than %d bytes: %w", MaxLineSize, ErrTooLarge)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return line, nil
	default:
		return nil, err
	}
}

// Punch coordinates a TCP hole punch (DCUtR-style) between two of our
// peers that talk through the relay. It travels inside their session, as
// a line like a chat message, only to peers that listed CapPunch:
//
//	{"punch":"connect","addrs":["203.0.113.5:41135"]}   both ways: where I can be dialled
//	{"punch":"sync"}                                     initiator: dial now
//	{"punch":"keepalive"}                                on a punched connection: keeps the NATs' mappings
//
// The initiator sends connect and times the answering connect (the round
// trip), sends sync and dials after half a round trip; the other side
// dials as soon as sync arrives, so that both SYNs cross the NATs at about
// the same time.
type Punch struct {
	Punch string   `json:"punch"`
	Addrs []string `json:"addrs,omitempty"`
}

// The Punch steps.
const (
	PunchConnect   = "connect"
	PunchSync      = "sync"
	PunchKeepalive = "keepalive"
)

// CapPunch: the peer takes part in hole punching (Punch lines).
const CapPunch = "punch"

// EncodePunch returns the line with its trailing newline.
func EncodePunch(p *Punch) ([]byte, error) {
	if err := checkPunch(p.Punch, p.Addrs); err != nil {
		return nil, err
	}
	b, err := marshal(p)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode punch: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodePunch parses one punch line, with or without its newline.
func DecodePunch(line []byte) (*Punch, error) {
	const what = "punch"
	if err := checkInput(what, line, MaxLineSize); err != nil {
		return nil, err
	}
	var w struct {
		Punch *string  `json:"punch"`
		Addrs []string `json:"addrs"`
	}
	if err := unmarshal(what, bytes.TrimSuffix(line, []byte("\n")), &w); err != nil {
		return nil, err
	}
	if w.Punch == nil {
		return nil, missing(what, "punch")
	}
	if err := checkPunch(*w.Punch, w.Addrs); err != nil {
		return nil, err
	}
	return &Punch{Punch: *w.Punch, Addrs: nilIfEmpty(w.Addrs)}, nil
}

func checkPunch(step string, addrs []string) error {
	if step != PunchConnect && step != PunchSync && step != PunchKeepalive {
		return fmt.Errorf("punch: field `punch` must be %q, %q or %q, got %q: %w", PunchConnect, PunchSync, PunchKeepalive, truncate(step, 16), ErrMalformed)
	}
	return checkAddrs("punch", addrs)
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Input bounds. Every decoder refuses input longer than its bound before it
// parses anything, so a peer cannot make us buffer or parse without limit.
const (
	// MaxDatagramSize bounds one discovery datagram. The largest datagram
	// we send today is about 200 bytes; the bound leaves room for keys and
	// capabilities while staying a single IP packet on jumbo-free links is
	// not required.
	MaxDatagramSize = 8 << 10
	// MaxLineSize bounds one direct-message line, its newline included.
	MaxLineSize = 64 << 10
	// MaxClientFrameSize bounds one WebSocket frame from client to
	// bootstrap server.
	MaxClientFrameSize = 8 << 10
	// MaxServerFrameSize bounds one WebSocket frame from bootstrap server
	// to client: a full peer_list of about 50,000 peers.
	MaxServerFrameSize = 16 << 20
)

// Errors that decoders wrap; branch on them with errors.Is.
var (
	ErrTooLarge    = errors.New("protocol: input too large")
	ErrInvalidUTF8 = errors.New("protocol: invalid UTF-8")
	ErrMalformed   = errors.New("protocol: malformed message")
	ErrUnknownType = errors.New("protocol: unknown message type")
)

// marshal encodes v as compact JSON the way the original (serde_json) does:
// no HTML escaping, no trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil
}

// checkInput applies the size and encoding bounds shared by every decoder.
func checkInput(what string, b []byte, limit int) error {
	if len(b) > limit {
		return fmt.Errorf("%s of %d bytes exceeds the limit of %d bytes: %w", what, len(b), limit, ErrTooLarge)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%s: %w", what, ErrInvalidUTF8)
	}
	return nil
}

// envelope reads the type tag of a tagged message.
type envelope struct {
	Type *string `json:"type"`
}

// peekType returns the "type" field of a JSON object.
func peekType(what string, b []byte) (string, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return "", malformed(what, err)
	}
	if env.Type == nil {
		return "", fmt.Errorf("%s: missing field `type`: %w", what, ErrMalformed)
	}
	return *env.Type, nil
}

// unmarshal decodes b into v and explains a failure in one sentence.
func unmarshal(what string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return malformed(what, err)
	}
	return nil
}

func malformed(what string, err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fmt.Errorf("%s: expected a JSON object, got %s: %w", what, typeErr.Value, ErrMalformed)
		}
		return fmt.Errorf("%s: field `%s` must be %s, got %s: %w", what, field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value, ErrMalformed)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("%s: invalid JSON at offset %d: %s: %w", what, syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "), ErrMalformed)
	default:
		return fmt.Errorf("%s: %s: %w", what, strings.TrimPrefix(err.Error(), "json: "), ErrMalformed)
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "uint16":
		return "an integer from 0 to 65535"
	case "int64", "uint64", "int":
		return "an integer"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	default:
		return "a " + goKind
	}
}

func missing(what, field string) error {
	return fmt.Errorf("%s: missing field `%s`: %w", what, field, ErrMalformed)
}

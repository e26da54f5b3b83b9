package protocol

import "unicode/utf8"

// Fast paths for chat lines and acks. A throughput run encodes and decodes
// one of each per message, and encoding/json (reflection) cost about 3 us
// to decode a chat line and 0.6 us to encode one.
//
// The encoders (AppendChatLine, AppendAck) write what marshal writes,
// byte for byte: keys in struct order, omitempty fields left out when
// zero, strings escaped as encoding/json escapes them with
// SetEscapeHTML(false) (appendJSONString). FuzzAppendChatLine and
// FuzzAppendAck compare them with marshal.
//
// The decoders follow decodeDatagramFast: they accept only the layout the
// encoders produce for strings that need no escape,
//
//	{"from":S,"content":S,"timestamp":N[,"id":S][,"instance":S][,"expires":N]}
//	{"ack":S}
//
// with S a string of bytes other than '"', '\\' and control bytes (< 0x20)
// (non-empty for the ack), N an integer as signed reads it, keys once each
// in this order and case, and no whitespace. On such input encoding/json
// builds the same value (the input is valid UTF-8: checkInput ran), so the
// fast path returns it after the slow path's own checks; on any other
// input, or when a check fails, it declines and encoding/json decides,
// errors included. FuzzChatLineFastPath and FuzzAckFastPath check this.

// appendJSONString appends s as a JSON string the way encoding/json does
// with SetEscapeHTML(false): '"', '\\' and control bytes escaped (\b, \f,
// \n, \r and \t by name, the rest as \u00XX), each byte of invalid UTF-8
// as \ufffd, U+2028 and U+2029 as \u2028 and \u2029; everything else,
// DEL included, as it is.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonPlain marks the bytes appendJSONString copies as they are without a
// second look: ASCII other than '"', '\\' and control bytes. A table
// lookup makes the usual, all-plain string about a third cheaper than
// comparisons.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// decodeChatLineFast decodes line (without its newline) if it has the
// canonical layout and passes DecodeChatLine's checks. It reports false
// when line is not handled; the caller then uses the slow path. line must
// already have passed checkInput.
func decodeChatLineFast(line []byte) (ChatMessage, bool) {
	r := fastReader{b: line}
	if !r.lit(`{"from":"`) {
		return ChatMessage{}, false
	}
	from, ok := r.span()
	if !ok || !r.lit(`,"content":"`) {
		return ChatMessage{}, false
	}
	content, ok := r.span()
	if !ok || !r.lit(`,"timestamp":`) {
		return ChatMessage{}, false
	}
	ts, ok := r.signed()
	if !ok {
		return ChatMessage{}, false
	}
	var id, inst []byte
	if r.lit(`,"id":"`) {
		if id, ok = r.span(); !ok {
			return ChatMessage{}, false
		}
	}
	if r.lit(`,"instance":"`) {
		if inst, ok = r.span(); !ok {
			return ChatMessage{}, false
		}
	}
	var expires int64
	if r.lit(`,"expires":`) {
		if expires, ok = r.signed(); !ok {
			return ChatMessage{}, false
		}
	}
	if !r.end() {
		return ChatMessage{}, false
	}
	m := ChatMessage{From: string(from), Content: string(content), Timestamp: ts, ID: string(id), Instance: string(inst), Expires: expires}
	// DecodeChatLine's checks after unmarshal.
	if checkMessageID("message", m.ID) != nil || checkInstance("message", m.Instance) != nil || m.Expires < 0 {
		return ChatMessage{}, false
	}
	return m, true
}

// decodeAckFast decodes line (without its newline) if it is {"ack":S} with
// a valid, non-empty id. It reports false when line is not handled; the
// caller then uses the slow path. line must already have passed
// checkInput.
func decodeAckFast(line []byte) (Ack, bool) {
	r := fastReader{b: line}
	if !r.lit(`{"ack":"`) {
		return Ack{}, false
	}
	id, ok := r.span()
	if !ok || !r.end() || len(id) == 0 {
		return Ack{}, false
	}
	a := Ack{ID: string(id)}
	if checkMessageID("ack", a.ID) != nil {
		return Ack{}, false
	}
	return a, true
}

package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// jsonEncodeChatLine is EncodeChatLine by encoding/json: the reference.
func jsonEncodeChatLine(m *ChatMessage) ([]byte, error) {
	b, err := marshal(m)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode message: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxLineSize {
		return nil, fmt.Errorf("protocol: encode message: %d bytes exceeds the limit of %d bytes: %w", len(b), MaxLineSize, ErrTooLarge)
	}
	return b, nil
}

// jsonEncodeAck is EncodeAck by encoding/json: the reference.
func jsonEncodeAck(a *Ack) ([]byte, error) {
	if err := checkMessageID("ack", a.ID); err != nil {
		return nil, err
	}
	b, err := marshal(a)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode ack: %w", err)
	}
	return append(b, '\n'), nil
}

// slowDecodeChatLine is DecodeChatLine without the fast path: the reference.
func slowDecodeChatLine(b []byte) (*ChatMessage, error) {
	if err := checkInput("message", b, MaxLineSize); err != nil {
		return nil, err
	}
	return decodeChatLineSlow(bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r")))
}

// slowDecodeAck is DecodeAck without the fast path: the reference.
func slowDecodeAck(b []byte) (*Ack, error) {
	if err := checkInput("ack", b, MaxLineSize); err != nil {
		return nil, err
	}
	return decodeAckSlow(bytes.TrimSuffix(b, []byte("\n")))
}

// errText is err's message, or "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"hello bob", `"hello bob"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x01\x0b\x1b\x1f", `"\u0000\u0001\u000b\u001b\u001f"`},
		{"a\x7fb", "\"a\x7fb\""},
		{"<a href='x'>&amp;</a>", `"<a href='x'>&amp;</a>"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"\u2027\u202a", "\"\u2027\u202a\""},
		{"bøb 🙂", `"bøb 🙂"`},
		{"\xff", `"\ufffd"`},
		{"a\xc3", `"a\ufffd"`},
		// Each byte of an invalid sequence is replaced on its own.
		{"\xe2\x80", `"\ufffd\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"\xc0\x80", `"\ufffd\ufffd"`},
		{"\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
		// An encoded U+FFFD stays as it is.
		{"\uFFFD", "\"\uFFFD\""},
	}
	for _, tt := range tests {
		got := string(appendJSONString(nil, tt.in))
		if got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.in, got, tt.want)
		}
		if ref, _ := marshal(tt.in); string(ref) != tt.want {
			t.Errorf("%q: encoding/json gives %s, the table says %s", tt.in, ref, tt.want)
		}
	}
}

// Every byte, every pair of bytes and every rune, against encoding/json.
func TestAppendJSONStringExhaustive(t *testing.T) {
	check := func(s string) {
		t.Helper()
		ref, err := marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, ref) {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, ref)
		}
	}
	for i := range 1 << 16 {
		check(string([]byte{byte(i >> 8), byte(i)}))
	}
	if testing.Short() {
		return
	}
	for r := rune(0); r <= utf8.MaxRune; r++ {
		check("x" + string(r))
	}
}

// checkAppendChatLine asserts that AppendChatLine appends what the
// encoding/json reference returns, fails when it fails, and then leaves
// dst as it was.
func checkAppendChatLine(t *testing.T, m *ChatMessage) []byte {
	t.Helper()
	want, wantErr := jsonEncodeChatLine(m)
	prefix := []byte("prefix")
	got, gotErr := AppendChatLine(prefix, m)
	if errText(gotErr) != errText(wantErr) {
		t.Fatalf("%#v: error %v, encoding/json %v", m, gotErr, wantErr)
	}
	if wantErr != nil {
		if string(got) != "prefix" || !errors.Is(gotErr, ErrTooLarge) {
			t.Fatalf("%#v: on error returned %q, %v", m, got, gotErr)
		}
		return nil
	}
	if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("%#v:\n got %q\nwant %q", m, got, "prefix"+string(want))
	}
	enc, err := EncodeChatLine(m)
	if err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("%#v: EncodeChatLine gives %q, %v; want %q", m, enc, err, want)
	}
	return want
}

func TestAppendChatLine(t *testing.T) {
	// Content that makes the line, newline included, n bytes long.
	sized := func(n int) string {
		return strings.Repeat("x", n-len(`{"from":"a","content":"","timestamp":1}`+"\n"))
	}
	tests := []struct {
		name string
		m    ChatMessage
		want string // "" for an error
	}{
		{"a plain message", ChatMessage{From: "alice", Content: "hello bob", Timestamp: 1795739259},
			`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n"},
		{"every field", ChatMessage{From: "alice", Content: "are you back?", Timestamp: 1795739259, ID: "5f0c1a2b3c4d5e70", Instance: "8c1d2e4f5a6b7c8d", Expires: 1796344059},
			`{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}` + "\n"},
		{"the zero message", ChatMessage{},
			`{"from":"","content":"","timestamp":0}` + "\n"},
		{"only expires", ChatMessage{From: "a", Content: "b", Timestamp: 1, Expires: -3},
			`{"from":"a","content":"b","timestamp":1,"expires":-3}` + "\n"},
		{"the extreme timestamps", ChatMessage{Timestamp: math.MinInt64, Expires: math.MaxInt64},
			`{"from":"","content":"","timestamp":-9223372036854775808,"expires":9223372036854775807}` + "\n"},
		{"escapes in every string", ChatMessage{From: "a\"\x1b", Content: "x\ny\u2028<&>\xff\x7f", ID: "i\\d", Instance: "\t"},
			`{"from":"a\"\u001b","content":"x\ny\u2028<&>\ufffd` + "\x7f" + `","timestamp":0,"id":"i\\d","instance":"\t"}` + "\n"},
		{"a line of exactly the limit", ChatMessage{From: "a", Content: sized(MaxLineSize), Timestamp: 1},
			`{"from":"a","content":"` + sized(MaxLineSize) + `","timestamp":1}` + "\n"},
		{"a line one byte over the limit", ChatMessage{From: "a", Content: sized(MaxLineSize + 1), Timestamp: 1}, ""},
		{"escapes that push the line over the limit", ChatMessage{From: "a", Content: sized(MaxLineSize-1) + "\x01", Timestamp: 1}, ""},
		{"much too long", ChatMessage{Content: strings.Repeat("\x00", MaxLineSize)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkAppendChatLine(t, &tt.m)
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAppendAck(t *testing.T) {
	tests := []struct {
		name, id, want string // want "" for an error
	}{
		{"an id", "5f0c1a2b3c4d5e70", `{"ack":"5f0c1a2b3c4d5e70"}` + "\n"},
		{"every token byte", "azAZ09._-", `{"ack":"azAZ09._-"}` + "\n"},
		// As before: the encoder lets an empty id through, the decoder refuses it.
		{"an empty id", "", `{"ack":""}` + "\n"},
		{"a space", "a b", ""},
		{"a quote", `a"b`, ""},
		{"too long", strings.Repeat("a", MaxMessageIDLen+1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkAppendAck(t, &Ack{ID: tt.id})
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// checkAppendAck is checkAppendChatLine for acks.
func checkAppendAck(t *testing.T, a *Ack) []byte {
	t.Helper()
	want, wantErr := jsonEncodeAck(a)
	got, gotErr := AppendAck([]byte("prefix"), a)
	if errText(gotErr) != errText(wantErr) {
		t.Fatalf("%#v: error %v, encoding/json %v", a, gotErr, wantErr)
	}
	if wantErr != nil {
		if string(got) != "prefix" {
			t.Fatalf("%#v: on error returned %q", a, got)
		}
		return nil
	}
	if string(got) != "prefix"+string(want) {
		t.Fatalf("%#v:\n got %q\nwant %q", a, got, "prefix"+string(want))
	}
	enc, err := EncodeAck(a)
	if err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("%#v: EncodeAck gives %q, %v; want %q", a, enc, err, want)
	}
	return want
}

func FuzzAppendChatLine(f *testing.F) {
	f.Add("alice", "hello bob", int64(1795739259), "", "", int64(0))
	f.Add("alice", "are you back?", int64(1795739259), "5f0c1a2b3c4d5e70", "8c1d2e4f5a6b7c8d", int64(1796344059))
	f.Add("a\"\x1b", "x\ny\u2028\u2029<&>\xff\x7f\b\f", int64(-1), "i\\d", "\t", int64(-5))
	f.Add("", "", int64(math.MinInt64), "", "", int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, from, content string, ts int64, id, instance string, expires int64) {
		// Long strings add nothing that short ones miss (the too-large
		// error is pinned at the exact limit in TestAppendChatLine), and
		// the fuzzer spends seconds minimizing each one it finds.
		if len(from)+len(content)+len(id)+len(instance) > 256 {
			return
		}
		m := &ChatMessage{From: from, Content: content, Timestamp: ts, ID: id, Instance: instance, Expires: expires}
		if line := checkAppendChatLine(t, m); line != nil {
			// What we encode, the fast decoder may take, and must then
			// agree with the slow one.
			checkChatLineFastPath(t, line)
		}
	})
}

func FuzzAppendAck(f *testing.F) {
	f.Add("5f0c1a2b3c4d5e70")
	f.Add("")
	f.Add("a\"b")
	f.Fuzz(func(t *testing.T, id string) {
		if line := checkAppendAck(t, &Ack{ID: id}); line != nil {
			checkAckFastPath(t, line)
		}
	})
}

func TestAppendChatLineAllocs(t *testing.T) {
	m := &ChatMessage{From: "alice", Content: "are you coming to the standup at 10:30?", Timestamp: 1795739259, ID: "5f0c1a2b3c4d5e70", Instance: "8c1d2e4f5a6b7c8d", Expires: 1796344059}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { AppendChatLine(buf, m) }); n != 0 {
		t.Errorf("AppendChatLine into a large enough buffer: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { EncodeChatLine(m) }); n != 1 {
		t.Errorf("EncodeChatLine: %v allocations, want 1", n)
	}
	a := &Ack{ID: "5f0c1a2b3c4d5e70"}
	if n := testing.AllocsPerRun(100, func() { AppendAck(buf, a) }); n != 0 {
		t.Errorf("AppendAck into a large enough buffer: %v allocations, want 0", n)
	}
}

// checkChatLineFastPath asserts that DecodeChatLine gives exactly what the
// slow path gives, errors included, and that the fast path, when it
// handles b, gives the slow path's value. It returns whether the fast path
// handled b.
func checkChatLineFastPath(t *testing.T, b []byte) bool {
	t.Helper()
	return checkFastDecoder(t, b, "message", DecodeChatLine, slowDecodeChatLine, decodeChatLineFast,
		bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r")))
}

// checkAckFastPath is checkChatLineFastPath for acks.
func checkAckFastPath(t *testing.T, b []byte) bool {
	t.Helper()
	return checkFastDecoder(t, b, "ack", DecodeAck, slowDecodeAck, decodeAckFast, bytes.TrimSuffix(b, []byte("\n")))
}

// checkFastDecoder is the check of checkChatLineFastPath: decode is the
// public decoder, slow the reference without the fast path, fast the fast
// path, which sees trimmed (b as the decoder hands it over).
func checkFastDecoder[T comparable](t *testing.T, b []byte, what string, decode, slow func([]byte) (*T, error), fast func([]byte) (T, bool), trimmed []byte) bool {
	t.Helper()
	want, wantErr := slow(b)
	got, gotErr := decode(b)
	if errText(gotErr) != errText(wantErr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: the %s decoder gives %#v, %v; slow path %#v, %v", b, what, got, gotErr, want, wantErr)
	}
	if checkInput(what, b, MaxLineSize) != nil {
		return false
	}
	v, ok := fast(trimmed)
	var zero T
	if !ok {
		if v != zero {
			t.Fatalf("%q: not handled but returned %#v", b, v)
		}
		return false
	}
	if wantErr != nil {
		t.Fatalf("%q: fast path accepted %#v, slow path says %v", b, v, wantErr)
	}
	if v != *want {
		t.Fatalf("%q: fast path %#v, slow path %#v", b, v, *want)
	}
	return true
}

var chatLineCases = []struct {
	in      string
	handled bool
}{
	// The canonical layouts.
	{`{"from":"alice","content":"hello bob","timestamp":1795739259}`, true},
	{`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n", true},
	{`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\r\n", true},
	{`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\r", true},
	{`{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}`, true},
	{`{"from":"alice","content":"x","timestamp":1,"id":"5f0c1a2b3c4d5e70"}`, true},
	{`{"from":"alice","content":"x","timestamp":1,"instance":"8c1d2e4f5a6b7c8d"}`, true},
	{`{"from":"alice","content":"x","timestamp":1,"expires":2}`, true},
	{`{"from":"","content":"","timestamp":0}`, true},
	{`{"from":"alice","content":"x","timestamp":-1795739259}`, true},
	{`{"from":"alice","content":"x","timestamp":999999999999999999}`, true},
	{`{"from":"alice","content":"x","timestamp":-999999999999999999}`, true},
	{`{"from":"bøb 🙂","content":"<a&b> ` + "\x7f\u2028" + `","timestamp":1}`, true},
	// Not what omitempty writes, but encoding/json reads it the same.
	{`{"from":"alice","content":"x","timestamp":1,"id":"","instance":"","expires":0}`, true},
	// An invalid from is the receiver's business, as on the slow path.
	{`{"from":" not a nickname ","content":"x","timestamp":1}`, true},

	// Valid, but not the canonical layout: the slow path decides.
	{`{"from":"alice","content":"a\"b","timestamp":1}`, false},
	{`{"from":"alice","content":"a\\b","timestamp":1}`, false},
	{`{"from":"alice","content":"line\nbreak","timestamp":1}`, false},
	{`{"from":"alice","content":"\u00e9","timestamp":1}`, false},
	{`{"from":"alice","content":"\ud83d\ude42","timestamp":1}`, false},
	{`{"from":"alice","content":"\ud83d","timestamp":1}`, false},
	{`{"content":"x","from":"alice","timestamp":1}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"expires":2,"id":"a"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"instance":"b","id":"a"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"from":"eve"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"a","id":"b"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"timestamp":2}`, false},
	{`{"From":"alice","content":"x","timestamp":1}`, false},
	{`{"from":"alice","content":"x","TIMESTAMP":1}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"extra":true}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"extra":{"a":[1,{"b":null}]}}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":null}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"expires":null}`, false},
	{`{"from":"alice","content":"x","timestamp":-0}`, false},
	{`{"from":"alice","content":"x","timestamp":1234567890123456789}`, false},
	{`{"from":"alice","content":"x","timestamp":9223372036854775807}`, false},
	{`{"from":"alice","content":"x","timestamp":-9223372036854775808}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"expires":9223372036854775807}`, false},
	{`{"from":"alice","content":"x","timestamp":1} `, false},
	{`{"from":"alice","content":"x","timestamp":1}` + "\n\n", false},
	{` {"from":"alice","content":"x","timestamp":1}`, false},
	{`{"from": "alice","content":"x","timestamp":1}`, false},
	{`{"from":"alice","content":"x","timestamp":1 }`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"a" ,"instance":"b"}`, false},

	// Errors: never handled, the slow path gives them.
	{`{"from":"alice","content":"x","timestamp":01}`, false},
	{`{"from":"alice","content":"x","timestamp":00}`, false},
	{`{"from":"alice","content":"x","timestamp":-01}`, false},
	{`{"from":"alice","content":"x","timestamp":-}`, false},
	{`{"from":"alice","content":"x","timestamp":+1}`, false},
	{`{"from":"alice","content":"x","timestamp":1.0}`, false},
	{`{"from":"alice","content":"x","timestamp":1.5}`, false},
	{`{"from":"alice","content":"x","timestamp":1e3}`, false},
	{`{"from":"alice","content":"x","timestamp":0x10}`, false},
	{`{"from":"alice","content":"x","timestamp":"1"}`, false},
	{`{"from":"alice","content":"x","timestamp":}`, false},
	{`{"from":"alice","content":"x","timestamp":9223372036854775808}`, false},
	{`{"from":"alice","content":"x","timestamp":99999999999999999999}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"expires":-1}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"expires":-0}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"a b"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"` + strings.Repeat("a", MaxMessageIDLen+1) + `"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"` + strings.Repeat("a", MaxMessageIDLen) + `"}`, true},
	{`{"from":"alice","content":"x","timestamp":1,"instance":"a/b"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"instance":"` + strings.Repeat("a", MaxInstanceLen+1) + `"}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"instance":"` + strings.Repeat("a", MaxInstanceLen) + `"}`, true},
	{`{"from":"alice","content":"x","timestamp":1,"id":7}`, false},
	{"{\"from\":\"alice\",\"content\":\"a\tb\",\"timestamp\":1}", false},
	{"{\"from\":\"alice\",\"content\":\"a\x1fb\",\"timestamp\":1}", false},
	{"{\"from\":\"\x00\",\"content\":\"x\",\"timestamp\":1}", false},
	{"{\"from\":\"alice\",\"content\":\"x\",\"timestamp\":1,\"id\":\"\x1f\"}", false},
	{"{\"from\":\"alice\",\"content\":\"\xff\",\"timestamp\":1}", false},
	{`{"from":"alice","content":"x"}`, false},
	{`{"from":"alice","timestamp":1}`, false},
	{`{"content":"x","timestamp":1}`, false},
	{`{"from":"alice","content":"x","timestamp":1}}`, false},
	{`{"from":"alice","content":"x","timestamp":1`, false},
	{`{"from":"alice","content":"x,"timestamp":1}`, false},
	{`{"from":"alice","content":"x","timestamp":1,}`, false},
	{`{"from":"alice","content":"x","timestamp":1,"id":"a}`, false},
	{`{"from":"`, false},
	{`{}`, false},
	{`[]`, false},
	{`null`, false},
	{``, false},
}

func TestChatLineFastPath(t *testing.T) {
	for _, tt := range chatLineCases {
		if got := checkChatLineFastPath(t, []byte(tt.in)); got != tt.handled {
			t.Errorf("%q: fast path handled %v, want %v", tt.in, got, tt.handled)
		}
	}
}

var ackCases = []struct {
	in      string
	handled bool
}{
	{`{"ack":"5f0c1a2b3c4d5e70"}`, true},
	{`{"ack":"5f0c1a2b3c4d5e70"}` + "\n", true},
	{`{"ack":"` + strings.Repeat("a", MaxMessageIDLen) + `"}`, true},

	{`{"ack":"5f0c1a2b3c4d5e70"}` + "\r\n", false},
	{`{"ack":"5f0c1a2b3c4d5e70"} `, false},
	{`{ "ack":"5f0c1a2b3c4d5e70"}`, false},
	{`{"ACK":"5f0c1a2b3c4d5e70"}`, false},
	{`{"ack":"\u0035f0c"}`, false},
	{`{"ack":"a","ack":"b"}`, false},
	{`{"ack":"a","x":1}`, false},
	{`{"x":[1,{}],"ack":"a"}`, false},

	{`{"ack":""}`, false},
	{`{"ack":"a b"}`, false},
	{"{\"ack\":\"a\x1f\"}", false},
	{`{"ack":"a\"b"}`, false},
	{`{"ack":"` + strings.Repeat("a", MaxMessageIDLen+1) + `"}`, false},
	{`{"ack":7}`, false},
	{`{"ack":null}`, false},
	{`{"ack":"a"`, false},
	{`{"ack":"a}`, false},
	{`{}`, false},
	{``, false},
}

func TestAckFastPath(t *testing.T) {
	for _, tt := range ackCases {
		if got := checkAckFastPath(t, []byte(tt.in)); got != tt.handled {
			t.Errorf("%q: fast path handled %v, want %v", tt.in, got, tt.handled)
		}
	}
}

// Everything our encoder produces for plain text takes the fast path.
func TestEncodedChatLinesTakeFastPath(t *testing.T) {
	for _, m := range []ChatMessage{
		{From: "alice", Content: "hello bob", Timestamp: 1795739259},
		{From: "alice", Content: "are you back?", Timestamp: 1795739259, ID: "5f0c1a2b3c4d5e70", Instance: "8c1d2e4f5a6b7c8d", Expires: 1796344059},
		{From: "élodie", Content: "ça va? 🙂 <b>&</b> \x7f", Timestamp: 1, Instance: "x"},
		{From: "", Content: "", Timestamp: -1},
		{},
	} {
		b, err := EncodeChatLine(&m)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeChatLineFast(bytes.TrimSuffix(b, []byte("\n")))
		if !ok || got != m {
			t.Errorf("%s: fast path gave %#v, %v; want %#v", b, got, ok, m)
		}
	}
	b, err := EncodeAck(&Ack{ID: "5f0c1a2b3c4d5e70"})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := decodeAckFast(bytes.TrimSuffix(b, []byte("\n"))); !ok || got.ID != "5f0c1a2b3c4d5e70" {
		t.Errorf("%s: fast path gave %#v, %v", b, got, ok)
	}
}

func TestChatLineFastPathAllocs(t *testing.T) {
	line := []byte(`{"from":"alice","content":"are you coming to the standup at 10:30?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}` + "\n")
	// The four strings and the *ChatMessage.
	if n := testing.AllocsPerRun(100, func() { DecodeChatLine(line) }); n > 5 {
		t.Errorf("DecodeChatLine of a canonical line: %v allocations, want at most 5", n)
	}
	ack := []byte(`{"ack":"5f0c1a2b3c4d5e70"}` + "\n")
	// The id and the *Ack.
	if n := testing.AllocsPerRun(100, func() { DecodeAck(ack) }); n > 2 {
		t.Errorf("DecodeAck of a canonical ack: %v allocations, want at most 2", n)
	}
}

// FuzzChatLineFastPath is a differential check: on every input the fast
// path either declines or returns exactly the slow path's value, and
// DecodeChatLine returns exactly what the slow path returns, errors
// included.
func FuzzChatLineFastPath(f *testing.F) {
	f.Add([]byte(`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n"))
	f.Add([]byte(`{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkChatLineFastPath(t, b)
	})
}

// FuzzAckFastPath is FuzzChatLineFastPath for acks.
func FuzzAckFastPath(f *testing.F) {
	f.Add([]byte(`{"ack":"5f0c1a2b3c4d5e70"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAckFastPath(t, b)
	})
}

// A message as the client sends it: its nickname, a short line of text, a
// 16-hex-digit id and instance, and an expiry.
var benchChat = &ChatMessage{From: "alice", Content: "are you coming to the standup at 10:30?", Timestamp: 1795739259, ID: "5f0c1a2b3c4d5e70", Instance: "8c1d2e4f5a6b7c8d", Expires: 1796344059}

var (
	sinkBytes []byte
	sinkChat  *ChatMessage
	sinkAck   *Ack
)

func BenchmarkEncodeChatLine(b *testing.B) {
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			line, err := AppendChatLine(buf[:0], benchChat)
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = line
		}
	})
	benchEncode(b, "encode", benchChat, EncodeChatLine)
	benchEncode(b, "json", benchChat, jsonEncodeChatLine)
}

func BenchmarkEncodeAck(b *testing.B) {
	a := &Ack{ID: benchChat.ID}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for b.Loop() {
			line, err := AppendAck(buf[:0], a)
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = line
		}
	})
	benchEncode(b, "encode", a, EncodeAck)
	benchEncode(b, "json", a, jsonEncodeAck)
}

func benchEncode[T any](b *testing.B, name string, x T, encode func(T) ([]byte, error)) {
	b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			line, err := encode(x)
			if err != nil {
				b.Fatal(err)
			}
			sinkBytes = line
		}
	})
}

func BenchmarkDecodeChatLine(b *testing.B) {
	line, err := EncodeChatLine(benchChat)
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, "fast", line, DecodeChatLine, &sinkChat)
	benchDecode(b, "json", line, slowDecodeChatLine, &sinkChat)
}

func BenchmarkDecodeAck(b *testing.B) {
	line, err := EncodeAck(&Ack{ID: benchChat.ID})
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, "fast", line, DecodeAck, &sinkAck)
	benchDecode(b, "json", line, slowDecodeAck, &sinkAck)
}

func benchDecode[T any](b *testing.B, name string, line []byte, decode func([]byte) (T, error), sink *T) {
	b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			x, err := decode(line)
			if err != nil {
				b.Fatal(err)
			}
			*sink = x
		}
	})
}

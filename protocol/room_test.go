package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const (
	testRoomID = "4f1c2a9e8b7d6c5f4e3d2c1b0a998877"
	testKey1   = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=" // testKey(1)
	testKey2   = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=" // testKey(2)
	testSig    = "4pKUswe4z7YD3KFFaFOhpsIiA/FWW4dUXw0QW3OWyF7wjGUDbl5Hc/i7x/nMo4OTOvg+kIrwlysTBErQUMhtAw=="
)

// goldenRoomMessage is signed by testKey(1); its signature is pinned in the
// golden line, so the signed bytes are part of the wire format.
func goldenRoomMessage() *RoomMessage {
	return &RoomMessage{Room: testRoomID, Author: testKey1, Nick: "bob", Seq: 7, Time: 1795739259123,
		Deps: []RoomSeq{{Author: testKey2, Seq: 3}}, Text: "hello room", Sig: testSig}
}

func TestGoldenRoomLines(t *testing.T) {
	first := &RoomMessage{Room: testRoomID, Author: testKey1, Nick: "bob", Seq: 1, Time: 1795739259123, Text: "hello room",
		Sig: "GF0nFdqnTWDqnWsbPEr9fU6ojSJdyMH+cau3oidYVSJ3k3PYYr6YKW6IAw8U6UH8VjSuLtfVL8nBhXTld23dBA=="}
	tests := []struct {
		name   string
		msg    any
		wire   string
		encode func(any) ([]byte, error)
		decode func([]byte) (any, error)
	}{
		{"message with a dep", goldenRoomMessage(),
			`{"type":"room_msg","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","author":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","nick":"bob","seq":7,"time":1795739259123,` +
				`"deps":[{"a":"gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=","s":3}],"text":"hello room","sig":"` + testSig + `"}` + "\n",
			encodeMsg, decodeMsg},
		{"message without deps omits the field", first,
			`{"type":"room_msg","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","author":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","nick":"bob","seq":1,"time":1795739259123,` +
				`"text":"hello room","sig":"GF0nFdqnTWDqnWsbPEr9fU6ojSJdyMH+cau3oidYVSJ3k3PYYr6YKW6IAw8U6UH8VjSuLtfVL8nBhXTld23dBA=="}` + "\n",
			encodeMsg, decodeMsg},
		{"summary", &RoomSummary{Room: testRoomID, Have: []RoomSeq{{Author: testKey1, Seq: 7}, {Author: testKey2, Seq: 3}}},
			`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[{"a":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","s":7},{"a":"gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=","s":3}]}` + "\n",
			encodeSum, decodeSum},
		{"empty summary of a late joiner", &RoomSummary{Room: testRoomID},
			`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[]}` + "\n",
			encodeSum, decodeSum},
		{"summary that asks", &RoomSummary{Room: testRoomID, Have: []RoomSeq{{Author: testKey1, Seq: 7}}, Ask: []string{testKey2}},
			`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[{"a":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","s":7}],"ask":["gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="]}` + "\n",
			encodeSum, decodeSum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.encode(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wire {
				t.Errorf("encode:\n got %s\nwant %s", got, tt.wire)
			}
			back, err := tt.decode([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("decode: got %#v, want %#v", back, tt.msg)
			}
		})
	}
}

func encodeMsg(v any) ([]byte, error) { return EncodeRoomMessage(v.(*RoomMessage)) }
func decodeMsg(b []byte) (any, error) { return DecodeRoomMessage(b) }
func encodeSum(v any) ([]byte, error) { return EncodeRoomSummary(v.(*RoomSummary)) }
func decodeSum(b []byte) (any, error) { return DecodeRoomSummary(b) }
func decodeMsgErr(b []byte) error     { _, err := DecodeRoomMessage(b); return err }
func decodeSumErr(b []byte) error     { _, err := DecodeRoomSummary(b); return err }
func pub(k ed25519.PrivateKey) string { return EncodePublicKey(k.Public().(ed25519.PublicKey)) }

// The pinned signature verifies over RoomSigningBytes, and the signed
// bytes of a small message are pinned byte for byte.
func TestRoomSigningBytes(t *testing.T) {
	m := goldenRoomMessage()
	sig, _ := base64.StdEncoding.DecodeString(m.Sig)
	if !ed25519.Verify(testKey(1).Public().(ed25519.PublicKey), RoomSigningBytes(m), sig) {
		t.Fatal("the golden signature does not verify over RoomSigningBytes")
	}
	small := &RoomMessage{Room: "r", Author: "k", Nick: "n", Seq: 1, Time: 2, Deps: []RoomSeq{{"d", 3}}, Text: "t", Sig: "ignored"}
	want := "parlance room message v1\x00\x01r\x01k\x01n\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x01\x01d\x00\x00\x00\x00\x00\x00\x00\x03\x01t"
	if got := string(RoomSigningBytes(small)); got != want {
		t.Errorf("signed bytes:\n got %q\nwant %q", got, want)
	}
}

// Changing any one field, or moving bytes from one field to the next,
// changes the signed bytes; only sig is not covered.
func TestRoomSigningBytesCoverEveryField(t *testing.T) {
	base := goldenRoomMessage()
	changes := map[string]func(m *RoomMessage){
		"room":         func(m *RoomMessage) { m.Room = "00000000000000000000000000000000" },
		"author":       func(m *RoomMessage) { m.Author = testKey2 },
		"nick":         func(m *RoomMessage) { m.Nick = "bob2" },
		"seq":          func(m *RoomMessage) { m.Seq++ },
		"time":         func(m *RoomMessage) { m.Time++ },
		"dep seq":      func(m *RoomMessage) { m.Deps[0].Seq++ },
		"dep author":   func(m *RoomMessage) { m.Deps[0].Author = testKey1 },
		"no deps":      func(m *RoomMessage) { m.Deps = nil },
		"another dep":  func(m *RoomMessage) { m.Deps = append(m.Deps, RoomSeq{Author: testKey1, Seq: 1}) },
		"text":         func(m *RoomMessage) { m.Text += "!" },
		"nick to text": func(m *RoomMessage) { m.Nick, m.Text = "bo", "b"+m.Text },
	}
	for name, change := range changes {
		m := goldenRoomMessage()
		m.Deps = append([]RoomSeq(nil), m.Deps...)
		change(m)
		if bytes.Equal(RoomSigningBytes(m), RoomSigningBytes(base)) {
			t.Errorf("changing %s leaves the signed bytes unchanged", name)
		}
	}
	m := goldenRoomMessage()
	m.Sig = "x"
	if !bytes.Equal(RoomSigningBytes(m), RoomSigningBytes(base)) {
		t.Error("the signed bytes depend on sig")
	}
}

// Field order and unknown fields are free, and the newline is optional.
func TestDecodeRoomMessageTolerates(t *testing.T) {
	want := goldenRoomMessage()
	line := `{"sig":"` + testSig + `","future":[1,2],"text":"hello room","deps":[{"s":3,"a":"` + testKey2 + `"}],"time":1795739259123,"seq":7,"nick":"bob","author":"` + testKey1 + `","room":"` + testRoomID + `","type":"room_msg"}` + "\r\n"
	got, err := DecodeRoomMessage([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	// An empty deps list decodes as none, so it re-encodes without the
	// field: both forms carry the same signed bytes.
	first := strings.Replace(string(mustEncode(t, want)), `"deps":[{"a":"`+testKey2+`","s":3}]`, `"deps":[]`, 1)
	got, err = DecodeRoomMessage([]byte(first))
	if err != nil || got.Deps != nil {
		t.Errorf("empty deps: got %#v, %v", got, err)
	}
	// An invalid nickname is the caller's to mark, not a decoding error.
	bad := strings.Replace(string(mustEncode(t, want)), `"nick":"bob"`, `"nick":"\u001b[31m "`, 1)
	if got, err := DecodeRoomMessage([]byte(bad)); err != nil || got.Nick != "\x1b[31m " {
		t.Errorf("nick with an escape: got %#v, %v", got, err)
	}
}

func mustEncode(t *testing.T, m *RoomMessage) []byte {
	t.Helper()
	b, err := EncodeRoomMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRoomErrors(t *testing.T) {
	good := string(mustEncode(t, goldenRoomMessage()))
	with := func(old, new string) string {
		if !strings.Contains(good, old) {
			panic("test: no " + old)
		}
		return strings.Replace(good, old, new, 1)
	}
	dep := `{"a":"` + testKey2 + `","s":3}`
	manyDeps := make([]string, MaxRoomMembers+1)
	for i := range manyDeps {
		manyDeps[i] = fmt.Sprintf(`{"a":"%s","s":%d}`, pub(testKey(byte(i+3))), i+1)
	}
	manyHave := strings.Join(manyDeps, ",")
	asks := make([]string, MaxRoomMembers+1)
	for i := range asks {
		asks[i] = `"` + pub(testKey(byte(i+3))) + `"`
	}
	manyAsk := strings.Join(asks, ",")
	sum := `{"type":"room_sum","room":"` + testRoomID + `","have":[` + dep + `]}`
	withSum := func(old, new string) string { return strings.Replace(sum, old, new, 1) }
	tests := []struct {
		name    string
		decode  func([]byte) error
		input   string
		wantErr error
		wantMsg string
	}{
		{"line over the bound", decodeMsgErr, with(`"text":"hello room"`, `"text":"`+strings.Repeat("a", MaxLineSize)+`"`), ErrTooLarge, "exceeds the limit of 65536 bytes"},
		{"invalid UTF-8", decodeMsgErr, with("hello", "hel\xfflo"), ErrInvalidUTF8, "room message: protocol: invalid UTF-8"},
		{"not JSON", decodeMsgErr, "room_msg", ErrMalformed, "invalid JSON"},
		{"missing type (a chat line)", decodeMsgErr, `{"from":"alice","content":"hi","timestamp":1}`, ErrMalformed, "missing field `type`"},
		{"a summary", decodeMsgErr, sum, ErrMalformed, "field `type` must be \"room_msg\", got \"room_sum\""},
		{"missing room", decodeMsgErr, with(`"room":"`+testRoomID+`",`, ""), ErrMalformed, "missing field `room`"},
		{"missing author", decodeMsgErr, with(`"author":"`+testKey1+`",`, ""), ErrMalformed, "missing field `author`"},
		{"missing nick", decodeMsgErr, with(`"nick":"bob",`, ""), ErrMalformed, "missing field `nick`"},
		{"missing seq", decodeMsgErr, with(`"seq":7,`, ""), ErrMalformed, "missing field `seq`"},
		{"missing time", decodeMsgErr, with(`"time":1795739259123,`, ""), ErrMalformed, "missing field `time`"},
		{"missing text", decodeMsgErr, with(`"text":"hello room",`, ""), ErrMalformed, "missing field `text`"},
		{"missing sig", decodeMsgErr, with(`,"sig":"`+testSig+`"`, ""), ErrMalformed, "missing field `sig`"},
		{"room in capitals", decodeMsgErr, with(testRoomID, strings.ToUpper(testRoomID)), ErrMalformed, "field `room` must be a room ID (32 characters 0-9, a-f)"},
		{"room too short", decodeMsgErr, with(testRoomID, testRoomID[:30]), ErrMalformed, "field `room` must be a room ID"},
		{"author not a key", decodeMsgErr, with(testKey1, "bob"), ErrMalformed, "field `author`: not a base64 Ed25519 public key"},
		{"seq zero", decodeMsgErr, with(`"seq":7`, `"seq":0`), ErrMalformed, "field `seq` must be an integer from 1 to 9007199254740991"},
		{"seq negative", decodeMsgErr, with(`"seq":7`, `"seq":-1`), ErrMalformed, "field `seq` must be an integer"},
		{"seq over 2^53", decodeMsgErr, with(`"seq":7`, `"seq":9007199254740992`), ErrMalformed, "field `seq` must be an integer from 1"},
		{"seq as a string", decodeMsgErr, with(`"seq":7`, `"seq":"7"`), ErrMalformed, "field `seq` must be an integer"},
		{"seq fractional", decodeMsgErr, with(`"seq":7`, `"seq":7.5`), ErrMalformed, "field `seq` must be an integer"},
		{"time zero", decodeMsgErr, with(`"time":1795739259123`, `"time":0`), ErrMalformed, "field `time` must be a positive integer"},
		{"deps not an array", decodeMsgErr, with(`[`+dep+`]`, `{}`), ErrMalformed, "field `deps` must be an array"},
		{"dep without author", decodeMsgErr, with(dep, `{"s":3}`), ErrMalformed, "missing field `deps[0].a`"},
		{"dep without seq", decodeMsgErr, with(dep, `{"a":"`+testKey2+`"}`), ErrMalformed, "missing field `deps[0].s`"},
		{"dep null", decodeMsgErr, with(dep, `null`), ErrMalformed, "missing field `deps[0].a`"},
		{"dep with a bad key", decodeMsgErr, with(dep, `{"a":"x","s":3}`), ErrMalformed, "field `deps[0].a`: not a base64 Ed25519 public key"},
		{"dep seq zero", decodeMsgErr, with(dep, `{"a":"`+testKey2+`","s":0}`), ErrMalformed, "field `deps[0].s` must be an integer from 1"},
		{"dep on the author itself", decodeMsgErr, with(dep, `{"a":"`+testKey1+`","s":6}`), ErrMalformed, "field `deps[0]`: the author itself"},
		{"dep author twice", decodeMsgErr, with(dep, dep+`,{"a":"`+testKey2+`","s":4}`), ErrMalformed, "field `deps[1]`: author listed twice"},
		{"too many deps", decodeMsgErr, with(dep, manyHave), ErrMalformed, "field `deps` has more than 256 entries"},
		{"sig too short", decodeMsgErr, with(testSig, testSig[:86]), ErrMalformed, "field `sig` must be a base64 Ed25519 signature (88 characters)"},
		{"sig not base64", decodeMsgErr, with(testSig, "!"+testSig[1:]), ErrMalformed, "field `sig` must be a base64 Ed25519 signature"},
		{"summary over the bound", decodeSumErr, withSum(`"have":[`, `"x":"`+strings.Repeat("a", MaxLineSize)+`","have":[`), ErrTooLarge, "room summary of"},
		{"a message as summary", decodeSumErr, good, ErrMalformed, "field `type` must be \"room_sum\""},
		{"summary missing room", decodeSumErr, withSum(`"room":"`+testRoomID+`",`, ""), ErrMalformed, "room summary: missing field `room`"},
		{"summary missing have", decodeSumErr, withSum(`,"have":[`+dep+`]`, ""), ErrMalformed, "missing field `have`"},
		{"summary have null", decodeSumErr, withSum(`[`+dep+`]`, "null"), ErrMalformed, "missing field `have`"},
		{"summary have zero", decodeSumErr, withSum(`"s":3`, `"s":0`), ErrMalformed, "field `have[0].s` must be an integer from 1"},
		{"summary author twice", decodeSumErr, withSum(dep, dep+","+dep), ErrMalformed, "field `have[1]`: author listed twice"},
		{"summary too many entries", decodeSumErr, withSum(dep, manyHave), ErrMalformed, "field `have` has more than 256 entries"},
		{"summary bad room", decodeSumErr, withSum(testRoomID, "general"), ErrMalformed, "field `room` must be a room ID"},
		{"ask not an array", decodeSumErr, withSum(`]}`, `],"ask":"`+testKey2+`"}`), ErrMalformed, "field `ask` must be an array"},
		{"ask with a bad key", decodeSumErr, withSum(`]}`, `],"ask":["bob"]}`), ErrMalformed, "field `ask[0]`: not a base64 Ed25519 public key"},
		{"ask author twice", decodeSumErr, withSum(`]}`, `],"ask":["`+testKey2+`","`+testKey1+`","`+testKey2+`"]}`), ErrMalformed, "field `ask[2]`: author listed twice"},
		{"ask too long", decodeSumErr, withSum(`]}`, `],"ask":[`+manyAsk+`]}`), ErrMalformed, "field `ask` has more than 256 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode([]byte(tt.input))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want one wrapping %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestEncodeRoomErrors(t *testing.T) {
	tooLong := goldenRoomMessage()
	tooLong.Text = strings.Repeat("a", MaxLineSize)
	if _, err := EncodeRoomMessage(tooLong); !errors.Is(err, ErrTooLarge) {
		t.Errorf("text over the line bound: %v, want ErrTooLarge", err)
	}
	// The signature covers the exact bytes; encoding/json would replace
	// invalid UTF-8, so the receiver could never verify it.
	badText := goldenRoomMessage()
	badText.Text = "a\xffb"
	if _, err := EncodeRoomMessage(badText); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("text not UTF-8: %v, want ErrInvalidUTF8", err)
	}
	unsigned := goldenRoomMessage()
	unsigned.Sig = ""
	if _, err := EncodeRoomMessage(unsigned); !errors.Is(err, ErrMalformed) {
		t.Errorf("unsigned: %v, want ErrMalformed", err)
	}
	if _, err := EncodeRoomSummary(&RoomSummary{Room: "x"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("summary with a bad room: %v, want ErrMalformed", err)
	}
}

// The largest message that fits: a text of the line bound minus everything
// else encodes, and one byte more does not.
func TestRoomMessageLineBound(t *testing.T) {
	m := goldenRoomMessage()
	m.Text = ""
	overhead := len(mustEncode(t, m))
	m.Text = strings.Repeat("a", MaxLineSize-overhead)
	b := mustEncode(t, m)
	if len(b) != MaxLineSize {
		t.Fatalf("got %d bytes, want %d", len(b), MaxLineSize)
	}
	if _, err := DecodeRoomMessage(b); err != nil {
		t.Fatalf("decode the largest line: %v", err)
	}
	m.Text += "a"
	if _, err := EncodeRoomMessage(m); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one byte over: %v", err)
	}
}

func FuzzDecodeRoomMessage(f *testing.F) {
	f.Add(mustEncodeF(goldenRoomMessage()))
	f.Add([]byte(`{"type":"room_msg","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","author":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","nick":"bob","seq":1,"time":1,"deps":[],"text":"","sig":"` + testSig + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeRoomMessage(b)
		if err != nil {
			return
		}
		roundTrip(t, m, EncodeRoomMessage, DecodeRoomMessage)
	})
}

func FuzzDecodeRoomSummary(f *testing.F) {
	f.Add([]byte(`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[{"a":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","s":7}]}` + "\n"))
	f.Add([]byte(`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[]}`))
	f.Add([]byte(`{"type":"room_sum","room":"4f1c2a9e8b7d6c5f4e3d2c1b0a998877","have":[],"ask":["gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeRoomSummary(b)
		if err != nil {
			return
		}
		roundTrip(t, s, EncodeRoomSummary, DecodeRoomSummary)
	})
}

func mustEncodeF(m *RoomMessage) []byte {
	b, err := EncodeRoomMessage(m)
	if err != nil {
		panic(err)
	}
	return b
}

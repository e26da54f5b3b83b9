package protocol

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// slowDecode is DecodeDatagram without the fast path: the reference.
func slowDecode(b []byte) (Datagram, error) {
	if err := checkInput("datagram", b, MaxDatagramSize); err != nil {
		return nil, err
	}
	return decodeDatagramSlow(b)
}

var datagramErrs = []error{ErrTooLarge, ErrInvalidUTF8, ErrMalformed, ErrUnknownType}

// errClass names the sentinel an error wraps, or "" for nil.
func errClass(err error) string {
	if err == nil {
		return ""
	}
	for _, e := range datagramErrs {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "unclassified: " + err.Error()
}

// checkFastPath asserts that the fast path, when it handles b, gives the
// slow path's value, and that DecodeDatagram gives the slow path's value or
// an error of the same class. It returns whether the fast path handled b.
func checkFastPath(t *testing.T, b []byte) bool {
	t.Helper()
	want, wantErr := slowDecode(b)
	got, gotErr := DecodeDatagram(b)
	if errClass(gotErr) != errClass(wantErr) {
		t.Fatalf("%q: DecodeDatagram error %v, slow path %v", b, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: DecodeDatagram %#v, slow path %#v", b, got, want)
	}
	if checkInput("datagram", b, MaxDatagramSize) != nil {
		return false
	}
	fast, ok := decodeDatagramFast(b)
	if !ok {
		if fast != nil {
			t.Fatalf("%q: not handled but returned %#v", b, fast)
		}
		return false
	}
	if wantErr != nil {
		t.Fatalf("%q: fast path accepted %#v, slow path says %v", b, fast, wantErr)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%q: fast path %#v, slow path %#v", b, fast, want)
	}
	return true
}

func TestDatagramFastPath(t *testing.T) {
	tests := []struct {
		in      string
		handled bool
	}{
		// The canonical layouts.
		{`{"type":"announce","nickname":"bob","tcp_port":41135}`, true},
		{`{"type":"announce","nickname":"peer999","tcp_port":40000}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":1}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":65535}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d"}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"caps":["query"]}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack"]}`, true},
		{`{"type":"announce","nickname":"bøb 🙂","tcp_port":2}`, true},
		{`{"type":"announce","nickname":"a\"b","tcp_port":2}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["rooms"],"rooms":["0f1e2d3c4b5a69788796a5b4"]}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"]}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":[` + roomList(MaxRoomTags) + `]}`, true},
		{`{"type":"goodbye","nickname":"bob"}`, true},
		{`{"type":"goodbye","nickname":"bob","instance":"8c1d2e4f5a6b7c8d"}`, true},
		{`{"type":"query"}`, true},
		{`{"type":"query","instance":"8c1d2e4f5a6b7c8d"}`, true},

		// Valid, but not the canonical layout: the slow path decides.
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":""}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"caps":[]}`, false},
		{`{"type":"announce","tcp_port":41135,"nickname":"bob"}`, false},
		{`{"tcp_port":41135,"future":{"x":1},"nickname":"bob","type":"announce"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"x":1}`, false},
		{`{"Type":"announce","nickname":"bob","tcp_port":41135}`, false},
		{`{"type":"announce","NICKNAME":"bob","tcp_port":41135}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"nickname":"eve"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"caps":["query"],"caps":["ack"]}`, false},
		{`{"type":"announce","nickname":"b\u00f8b","tcp_port":41135}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135 }`, false},
		{` {"type":"announce","nickname":"bob","tcp_port":41135}`, false},
		{`{"type":"announce", "nickname":"bob","tcp_port":41135}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135}` + "\n", false},
		{`{"type":"announce","nickname":"bob","tcp_port":4.1e4}`, false},
		{`{"type":"goodbye","nickname":"bob","caps":["query"]}`, false},
		{`{"type":"query","instance":"a","type":"query"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":[]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":null}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":["0f1e2d3c4b5a69788796a5b4"],"caps":["rooms"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":["0f1e2d3c4b5a69788796a5b4"],"rooms":["c3d2e1f00112233445566778"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":[ "0f1e2d3c4b5a69788796a5b4"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":["0f1e2d3c4b5a69788796a5b4" ]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"Rooms":["0f1e2d3c4b5a69788796a5b4"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":41135,"rooms":["0f1e2d3c4b5a69788796a5b\u0034"]}`, false},
		{`{"type":"goodbye","nickname":"bob","rooms":["0f1e2d3c4b5a69788796a5b4"]}`, false},

		// Errors: never handled, the slow path gives them.
		{`{"type":"announce","nickname":"bob","tcp_port":0}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":01}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":65536}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":100000}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":-1}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":}`, false},
		{`{"type":"announce","nickname":"","tcp_port":1}`, false},
		{`{"type":"announce","nickname":" bob","tcp_port":1}`, false},
		{`{"type":"announce","nickname":"` + strings.Repeat("x", 33) + `","tcp_port":1}`, false},
		{"{\"type\":\"announce\",\"nickname\":\"a\x7fb\",\"tcp_port\":1}", false},
		{"{\"type\":\"announce\",\"nickname\":\"a\tb\",\"tcp_port\":1}", false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"instance":"a b"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"instance":"` + strings.Repeat("a", 65) + `"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"caps":["a,b"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"caps":["q",]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"caps":["q"` + strings.Repeat(`,"q"`, MaxCaps) + `]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"caps":["q"` + strings.Repeat(`,"q"`, MaxCaps-1) + `]}`, true},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":[` + roomList(MaxRoomTags+1) + `]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4","0f1e2d3c4b5a69788796a5b4"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0F1E2D3C4B5A69788796A5B4"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4c"]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4",]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4"`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4"}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1,"rooms":[7]}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1}}`, false},
		{`{"type":"announce","nickname":"bob","tcp_port":1`, false},
		{`{"type":"announce","nickname":"bob"}`, false},
		{`{"type":"announce"}`, false},
		{`{"type":"hello"}`, false},
		{`{"type":"query","instance":"a/b"}`, false},
		{"{\"type\":\"announce\",\"nickname\":\"\xff\",\"tcp_port\":1}", false},
		{`{"type":"`, false},
		{`{"type":"query"`, false},
		{`}`, false},
		{``, false},
	}
	for _, tt := range tests {
		if got := checkFastPath(t, []byte(tt.in)); got != tt.handled {
			t.Errorf("%q: fast path handled %v, want %v", tt.in, got, tt.handled)
		}
	}
}

// Everything our encoder produces for a valid datagram takes the fast path.
func TestEncodedDatagramsTakeFastPath(t *testing.T) {
	for _, d := range []Datagram{
		&Announce{Nickname: "bob", TCPPort: 41135},
		&Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{CapQuery, CapGoodbye, CapAck}},
		&Announce{Nickname: "élodie", TCPPort: 7, Caps: []string{CapAck}},
		&Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{CapNoise, CapRooms}, Rooms: []string{"0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"}},
		signedWithRooms(),
		&Goodbye{Nickname: "bob"},
		&Goodbye{Nickname: "bob", Instance: "x"},
		&Query{},
		&Query{Instance: "8c1d2e4f5a6b7c8d"},
	} {
		b, err := EncodeDatagram(d)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeDatagramFast(b)
		if !ok || !reflect.DeepEqual(got, d) {
			t.Errorf("%s: fast path gave %#v, %v; want %#v", b, got, ok, d)
		}
	}
}

func TestDatagramFastPathAllocs(t *testing.T) {
	b := []byte(`{"type":"announce","nickname":"peer123","tcp_port":40000}`)
	// The nickname and the *Announce.
	if n := testing.AllocsPerRun(100, func() { DecodeDatagram(b) }); n > 2 {
		t.Errorf("DecodeDatagram of a canonical announce: %v allocations, want at most 2", n)
	}
}

func signedWithRooms() *Announce {
	a := &Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{CapNoise, CapRooms}, Rooms: []string{"0f1e2d3c4b5a69788796a5b4"}}
	a.Sign(testKey(1), signTime)
	return a
}

// FuzzDatagramFastPath is a differential check: on every input the fast
// path either declines or returns exactly the slow path's value, and
// DecodeDatagram returns the slow path's value or an error of its class.
func FuzzDatagramFastPath(f *testing.F) {
	f.Add([]byte(`{"type":"announce","nickname":"bob","tcp_port":41135}`))
	f.Add([]byte(`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack"]}`))
	f.Add([]byte(`{"type":"goodbye","nickname":"bob","instance":"8c1d2e4f5a6b7c8d"}`))
	f.Add([]byte(`{"type":"query","instance":"8c1d2e4f5a6b7c8d"}`))
	f.Add([]byte(`{"type":"announce","nickname":"bob","tcp_port":41135,"caps":["rooms"],"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFastPath(t, b)
	})
}

var benchDatagrams = []struct{ name, wire string }{
	{"announce", `{"type":"announce","nickname":"peer123","tcp_port":40000}`},
	{"announce_ext", `{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack"]}`},
	{"announce_rooms", `{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack","noise","rooms"],"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778","8796a5b40f1e2d3c4b5a6978"]}`},
}

var sinkDatagram Datagram

func BenchmarkDecodeDatagram(b *testing.B) {
	for _, bd := range benchDatagrams {
		wire := []byte(bd.wire)
		b.Run(bd.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := DecodeDatagram(wire)
				if err != nil {
					b.Fatal(err)
				}
				sinkDatagram = d
			}
		})
		b.Run(bd.name+"/slow", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := slowDecode(wire)
				if err != nil {
					b.Fatal(err)
				}
				sinkDatagram = d
			}
		})
	}
}

// plainNickname may only accept what ValidateNickname accepts.
func TestPlainNickname(t *testing.T) {
	for _, s := range []string{"bob", "peer123", "a b", "~!@#$%^&*()_+{}|:<>?", strings.Repeat("x", 32)} {
		if !plainNickname(s) || ValidateNickname(s) != nil {
			t.Errorf("%q: plain %v, ValidateNickname %v", s, plainNickname(s), ValidateNickname(s))
		}
	}
	for _, s := range []string{"", " bob", "bob ", " ", strings.Repeat("x", 33), "a\tb", "a\x7fb", "bøb", "a\nb"} {
		if plainNickname(s) {
			t.Errorf("%q: plain, want not", s)
		}
	}
}

func FuzzPlainNickname(f *testing.F) {
	f.Add("bob")
	f.Fuzz(func(t *testing.T, s string) {
		if plainNickname(s) && ValidateNickname(s) != nil {
			t.Fatalf("%q: plain but ValidateNickname says %v", s, ValidateNickname(s))
		}
	})
}

package rendezvous

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/parlance-chat/parlance/protocol"
)

// fastCases are frames for the differential tests: some the fast path
// takes, many it must decline (the general path decides those).
var fastCases = []struct {
	name, frame string
	handled     bool
}{
	{"the canonical heartbeat", `{"type":"heartbeat"}`, true},
	{"the canonical list_peers", `{"type":"list_peers"}`, true},
	{"the canonical unregister", `{"type":"unregister"}`, true},
	{"the original's register", `{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045"}`, true},
	{"a register with a space in the nickname", `{"type":"register","nickname":"a b","local_addr":"0.0.0.0:1"}`, true},
	{"a register with a UTF-8 nickname", `{"type":"register","nickname":"zoë","local_addr":"0.0.0.0:1"}`, true},
	{"a register with an unparsable local_addr", `{"type":"register","nickname":"x","local_addr":"nonsense"}`, true},
	{"a heartbeat with a space", `{"type": "heartbeat"}`, false},
	{"a heartbeat with an extra field", `{"type":"heartbeat","x":1}`, false},
	{"a heartbeat with trailing bytes", `{"type":"heartbeat"} `, false},
	{"a heartbeat type in capitals", `{"type":"Heartbeat"}`, false},
	{"a register with fields in another order", `{"type":"register","local_addr":"0.0.0.0:1","nickname":"x"}`, false},
	{"a register with caps", `{"type":"register","nickname":"x","local_addr":"0.0.0.0:1","caps":["push"]}`, false},
	{"a register with rooms", `{"type":"register","nickname":"x","local_addr":"0.0.0.0:1","rooms":["0f1e2d3c4b5a69788796a5b4"]}`, false},
	{"a register with a bad room tag", `{"type":"register","nickname":"x","local_addr":"0.0.0.0:1","rooms":["x"]}`, false},
	{"a register with an escaped nickname", `{"type":"register","nickname":"a\u0062","local_addr":"0.0.0.0:1"}`, false},
	{"a register with a quote in local_addr", `{"type":"register","nickname":"x","local_addr":"a\"b"}`, false},
	{"a register with an empty nickname", `{"type":"register","nickname":"","local_addr":"0.0.0.0:1"}`, false},
	{"a register with an empty local_addr", `{"type":"register","nickname":"x","local_addr":""}`, false},
	{"a register with a nickname in spaces", `{"type":"register","nickname":" x ","local_addr":"0.0.0.0:1"}`, false},
	{"a register with a nickname of 33 bytes", `{"type":"register","nickname":"` + strings.Repeat("n", 33) + `","local_addr":"0.0.0.0:1"}`, false},
	{"a register with a local_addr of 65 bytes", `{"type":"register","nickname":"x","local_addr":"` + strings.Repeat("1", 65) + `"}`, false},
	{"a register with a tab in the nickname", "{\"type\":\"register\",\"nickname\":\"a\tb\",\"local_addr\":\"0.0.0.0:1\"}", false},
	{"a register with invalid UTF-8", "{\"type\":\"register\",\"nickname\":\"a\xffb\",\"local_addr\":\"0.0.0.0:1\"}", false},
	{"a register with a duplicate nickname", `{"type":"register","nickname":"x","local_addr":"0.0.0.0:1","nickname":"y"}`, false},
	{"a register missing its end", `{"type":"register","nickname":"x","local_addr":"0.0.0.0:1"`, false},
	{"a register in a register", `{"type":"register","nickname":"x","local_addr":"a","local_addr":"b"}`, false},
	{"not JSON", `heartbeat`, false},
}

// Whatever decodeFast handles, protocol.DecodeClientMessage decodes to
// the same message.
func TestDecodeFastMatchesProtocol(t *testing.T) {
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := decodeFast([]byte(tc.frame))
			if ok != tc.handled {
				t.Fatalf("decodeFast handled %v, want %v", ok, tc.handled)
			}
			if !ok {
				return
			}
			want, err := protocol.DecodeClientMessage([]byte(tc.frame))
			if err != nil {
				t.Fatalf("the fast path took a frame the protocol refuses: %v", err)
			}
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("decodeFast = %#v, protocol = %#v", m, want)
			}
		})
	}
}

// Messages encoded by the protocol package, as clients send them, take
// the fast path when they have only the original's fields.
func TestDecodeFastTakesEncodedMessages(t *testing.T) {
	for _, m := range []protocol.ClientMessage{&protocol.Heartbeat{}, &protocol.ListPeers{}, &protocol.Unregister{},
		&protocol.Register{Nickname: "load42", LocalAddr: "0.0.0.0:10042"}} {
		b, err := protocol.EncodeClientMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeFast(b)
		if !ok || !reflect.DeepEqual(got, m) {
			t.Errorf("decodeFast(%s) = %#v, %v; want %#v", b, got, ok, m)
		}
	}
}

func FuzzDecodeFast(f *testing.F) {
	for _, tc := range fastCases {
		f.Add([]byte(tc.frame))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := decodeFast(b)
		if !ok {
			return
		}
		want, err := protocol.DecodeClientMessage(b)
		if err != nil {
			t.Fatalf("decodeFast took %q, which the protocol refuses: %v", b, err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("decodeFast(%q) = %#v, protocol = %#v", b, m, want)
		}
	})
}

var entryCases = []struct {
	name string
	info protocol.PeerInfo
}{
	{"an original client", protocol.PeerInfo{PeerID: "0b7a5c2e-1f3d-4e8a-9b6c-2d4f6a8c0e1b", Nickname: "alice", PublicAddr: "192.0.2.10:40045", LocalAddr: "0.0.0.0:40045", LastSeen: 1764755000}},
	{"every field", protocol.PeerInfo{PeerID: "id", Nickname: "bob", PublicAddr: "198.51.100.7:1", LocalAddr: "0.0.0.0:1", LastSeen: 1,
		Instance: "inst-1", Caps: []string{"push", "relay"}, Key: "AAAA", Addrs: []string{"10.0.0.7:4003", "[fe80::1]:4003"},
		Rooms: []string{"0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"}}},
	{"rooms without addrs", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "l", LastSeen: 7, Key: "AAAA", Rooms: []string{"0f1e2d3c4b5a69788796a5b4"}}},
	{"a room tag JSON escapes", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "l", Rooms: []string{"<&>"}}},
	{"a nickname JSON escapes", protocol.PeerInfo{PeerID: "id", Nickname: `a "b" \ <c> é`, PublicAddr: "p", LocalAddr: "l", LastSeen: 99}},
	{"a local_addr JSON escapes", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "a\tb\u2028", LastSeen: 5}},
	{"a cap JSON escapes", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "l", Caps: []string{"a&b"}}},
	{"a zero last_seen", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "l"}},
	{"a negative last_seen", protocol.PeerInfo{PeerID: "id", Nickname: "n", PublicAddr: "p", LocalAddr: "l", LastSeen: -12}},
}

// appendEntry writes the bytes encodeEntry (encoding/json) writes, and
// points at the last_seen digits.
func TestAppendEntryMatchesJSON(t *testing.T) {
	for _, tc := range entryCases {
		t.Run(tc.name, func(t *testing.T) {
			got, at := appendEntry(&tc.info)
			want := encodeEntry(&tc.info)
			if !bytes.Equal(got, want) {
				t.Fatalf("appendEntry:\n%s\nencoding/json:\n%s", got, want)
			}
			if at != lastSeenOffset(want) || at < 0 {
				t.Fatalf("last_seen at %d, want %d", at, lastSeenOffset(want))
			}
		})
	}
}

// appendEntry writes every field of PeerInfo: one added to the struct
// must be added there too (and to this count).
func TestAppendEntryKnowsEveryField(t *testing.T) {
	if n := reflect.TypeFor[protocol.PeerInfo]().NumField(); n != peerInfoFields || !entryFieldsKnown {
		t.Fatalf("protocol.PeerInfo has %d fields, appendEntry writes %d: until it learns the new one, every entry takes encoding/json", n, peerInfoFields)
	}
}

// A heartbeat that moves last_seen to another second leaves the entry
// as encoding/json writes it, whether or not the digits fit in place.
func TestSetLastSeen(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to int64
	}{
		{"the next second", 1764755000, 1764755001},
		{"more digits", 999, 1000},
		{"fewer digits", 1000, 999},
		{"from zero", 0, 1764755000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ec := range entryCases {
				info := ec.info
				info.LastSeen = tc.from
				p := &peer{info: info}
				p.entry, p.lastSeenAt = appendEntry(&p.info)
				p.setLastSeen(tc.to)
				info.LastSeen = tc.to
				if want := encodeEntry(&info); !bytes.Equal(p.entry, want) || p.info.LastSeen != tc.to {
					t.Fatalf("%s: entry\n%s\nwant\n%s", ec.name, p.entry, want)
				}
			}
		})
	}
}

func TestIsHeartbeatFrame(t *testing.T) {
	frame := func(mask [4]byte, payload string, b0 byte) *[heartbeatFrameLen]byte {
		var f [heartbeatFrameLen]byte
		b := append([]byte{b0, 0x80 | byte(len(payload))}, mask[:]...)
		for i := range len(payload) {
			b = append(b, payload[i]^mask[i%4])
		}
		copy(f[:], b)
		return &f
	}
	for _, tc := range []struct {
		name string
		f    *[heartbeatFrameLen]byte
		want bool
	}{
		{"a masked heartbeat", frame([4]byte{0x37, 0xfa, 0x21, 0x3d}, heartbeatJSON, 0x81), true},
		{"a heartbeat with a zero mask", frame([4]byte{}, heartbeatJSON, 0x81), true},
		{"a fragment", frame([4]byte{1, 2, 3, 4}, heartbeatJSON, 0x01), false},
		{"a binary frame", frame([4]byte{1, 2, 3, 4}, heartbeatJSON, 0x82), false},
		{"another message of the same length", frame([4]byte{1, 2, 3, 4}, `{"type":"heartbeaT"}`, 0x81), false},
	} {
		if got := isHeartbeatFrame(tc.f[:]); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func benchFastHeartbeat(s *Server, c *conn) { s.fastHeartbeat(c) }

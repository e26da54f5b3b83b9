package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The original's JSON, exactly as PROTOCOL.md shows it. Encoding the Go value
// must give these bytes, and decoding these bytes must give the Go value.
func TestGoldenDatagrams(t *testing.T) {
	tests := []struct {
		name string
		msg  Datagram
		wire string
	}{
		{"original announce", &Announce{Nickname: "bob", TCPPort: 41135}, `{"type":"announce","nickname":"bob","tcp_port":41135}`},
		{"original goodbye", &Goodbye{Nickname: "bob"}, `{"type":"goodbye","nickname":"bob"}`},
		{"announce with extensions", &Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{"query", "goodbye", "ack"}},
			`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["query","goodbye","ack"]}`},
		{"goodbye with instance", &Goodbye{Nickname: "bob", Instance: "8c1d2e4f5a6b7c8d"}, `{"type":"goodbye","nickname":"bob","instance":"8c1d2e4f5a6b7c8d"}`},
		{"query", &Query{Instance: "8c1d2e4f5a6b7c8d"}, `{"type":"query","instance":"8c1d2e4f5a6b7c8d"}`},
		{"announce with rooms", &Announce{Nickname: "bob", TCPPort: 41135, Instance: "8c1d2e4f5a6b7c8d", Caps: []string{"rooms"}, Rooms: []string{"0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"}},
			`{"type":"announce","nickname":"bob","tcp_port":41135,"instance":"8c1d2e4f5a6b7c8d","caps":["rooms"],"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeDatagram(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wire {
				t.Errorf("encode:\n got %s\nwant %s", got, tt.wire)
			}
			back, err := DecodeDatagram([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("decode: got %#v, want %#v", back, tt.msg)
			}
		})
	}
}

func TestGoldenChatLine(t *testing.T) {
	const wire = `{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n"
	msg := &ChatMessage{From: "alice", Content: "hello bob", Timestamp: 1795739259}
	got, err := EncodeChatLine(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != wire {
		t.Errorf("encode:\n got %q\nwant %q", got, wire)
	}
	back, err := DecodeChatLine([]byte(wire))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, msg) {
		t.Errorf("decode: got %#v, want %#v", back, msg)
	}

	withID := &ChatMessage{From: "alice", Content: "a<b & \"c\"", Timestamp: 1, ID: "5f0c1a2b3c4d5e6f", Instance: "8c1d2e4f5a6b7c8d"}
	got, _ = EncodeChatLine(withID)
	if want := `{"from":"alice","content":"a<b & \"c\"","timestamp":1,"id":"5f0c1a2b3c4d5e6f","instance":"8c1d2e4f5a6b7c8d"}` + "\n"; string(got) != want {
		t.Errorf("encode with id, instance and HTML characters:\n got %s\nwant %s", got, want)
	}
	if back, err := DecodeChatLine(got); err != nil || !reflect.DeepEqual(back, withID) {
		t.Errorf("decode with id and instance: got %#v, %v", back, err)
	}
	queued := &ChatMessage{From: "alice", Content: "are you back?", Timestamp: 1795739259, ID: "5f0c1a2b3c4d5e70", Instance: "8c1d2e4f5a6b7c8d", Expires: 1796344059}
	got, _ = EncodeChatLine(queued)
	if want := `{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}` + "\n"; string(got) != want {
		t.Errorf("encode with expires:\n got %s\nwant %s", got, want)
	}
	if back, err := DecodeChatLine(got); err != nil || !reflect.DeepEqual(back, queued) {
		t.Errorf("decode with expires: got %#v, %v", back, err)
	}
	if _, err := DecodeChatLine([]byte(`{"from":"a","content":"x","timestamp":1,"expires":-5}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("negative expires: %v, want ErrMalformed", err)
	}
	ack, _ := EncodeAck(&Ack{ID: "5f0c1a2b3c4d5e6f"})
	if want := `{"ack":"5f0c1a2b3c4d5e6f"}` + "\n"; string(ack) != want {
		t.Errorf("ack: got %s, want %s", ack, want)
	}
}

func TestGoldenBootstrap(t *testing.T) {
	client := []struct {
		name string
		msg  ClientMessage
		wire string
	}{
		{"register", &Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045"}, `{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045"}`},
		{"list_peers", &ListPeers{}, `{"type":"list_peers"}`},
		{"heartbeat", &Heartbeat{}, `{"type":"heartbeat"}`},
		{"unregister", &Unregister{}, `{"type":"unregister"}`},
		{"register with extensions", &Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045", Instance: "8c1d2e4f5a6b7c8d", Caps: []string{"push"}, Namespace: "team"},
			`{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045","instance":"8c1d2e4f5a6b7c8d","caps":["push"],"namespace":"team"}`},
		{"register with rooms", &Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045", Caps: []string{"push", "rooms"}, Addrs: []string{"10.0.0.5:40045"}, Rooms: []string{"0f1e2d3c4b5a69788796a5b4"}},
			`{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045","caps":["push","rooms"],"addrs":["10.0.0.5:40045"],"rooms":["0f1e2d3c4b5a69788796a5b4"]}`},
		{"relay_connect", &RelayConnect{Token: "q7cY3nJ0wK2mZ5xV9sPdAg", PeerID: "19c5e1eb-b897-49e4-b781-d187d0de38d6"},
			`{"type":"relay_connect","token":"q7cY3nJ0wK2mZ5xV9sPdAg","peer_id":"19c5e1eb-b897-49e4-b781-d187d0de38d6"}`},
		{"relay_accept", &RelayAccept{Token: "Zm9vYmFyYmF6cXV4cXV1eA", Stream: "Hk2pQ0vX8rTz4LmN6bCyEw"},
			`{"type":"relay_accept","token":"Zm9vYmFyYmF6cXV4cXV1eA","stream":"Hk2pQ0vX8rTz4LmN6bCyEw"}`},
	}
	for _, tt := range client {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeClientMessage(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wire {
				t.Errorf("encode:\n got %s\nwant %s", got, tt.wire)
			}
			back, err := DecodeClientMessage([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("decode: got %#v, want %#v", back, tt.msg)
			}
		})
	}
	server := []struct {
		name string
		msg  ServerMessage
		wire string
	}{
		{"registered", &Registered{PeerID: "f2cb7c76-c795-4ba9-a63e-71b1d1345eb8", PublicAddr: "127.0.0.1:40045"},
			`{"type":"registered","peer_id":"f2cb7c76-c795-4ba9-a63e-71b1d1345eb8","public_addr":"127.0.0.1:40045"}`},
		{"peer_list", &PeerList{Peers: []PeerInfo{{PeerID: "19c5e1eb-b897-49e4-b781-d187d0de38d6", Nickname: "probe", PublicAddr: "127.0.0.1:40000", LocalAddr: "0.0.0.0:40000", LastSeen: 1795739225}}},
			`{"type":"peer_list","peers":[{"peer_id":"19c5e1eb-b897-49e4-b781-d187d0de38d6","nickname":"probe","public_addr":"127.0.0.1:40000","local_addr":"0.0.0.0:40000","last_seen":1795739225}]}`},
		{"empty peer_list", &PeerList{Peers: []PeerInfo{}}, `{"type":"peer_list","peers":[]}`},
		{"error", &Error{Message: "Not registered"}, `{"type":"error","message":"Not registered"}`},
		{"registered with caps", &Registered{PeerID: "p1", PublicAddr: "127.0.0.1:1", Caps: []string{"push"}}, `{"type":"registered","peer_id":"p1","public_addr":"127.0.0.1:1","caps":["push"]}`},
		{"peer_joined", &PeerJoined{Peer: PeerInfo{PeerID: "p2", Nickname: "bob", PublicAddr: "10.0.0.2:40000", LocalAddr: "0.0.0.0:40000", LastSeen: 5}},
			`{"type":"peer_joined","peer":{"peer_id":"p2","nickname":"bob","public_addr":"10.0.0.2:40000","local_addr":"0.0.0.0:40000","last_seen":5}}`},
		{"peer_joined with rooms", &PeerJoined{Peer: PeerInfo{PeerID: "p2", Nickname: "bob", PublicAddr: "10.0.0.2:40000", LocalAddr: "0.0.0.0:40000", LastSeen: 5,
			Key: "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=", Addrs: []string{"192.168.1.2:40000"}, Rooms: []string{"0f1e2d3c4b5a69788796a5b4", "c3d2e1f00112233445566778"}}},
			`{"type":"peer_joined","peer":{"peer_id":"p2","nickname":"bob","public_addr":"10.0.0.2:40000","local_addr":"0.0.0.0:40000","last_seen":5,"key":"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","addrs":["192.168.1.2:40000"],"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778"]}}`},
		{"peer_left", &PeerLeft{PeerID: "p2"}, `{"type":"peer_left","peer_id":"p2"}`},
		{"registered with relay token", &Registered{PeerID: "p1", PublicAddr: "127.0.0.1:1", Caps: []string{"push", "relay"}, RelayToken: "q7cY3nJ0wK2mZ5xV9sPdAg"},
			`{"type":"registered","peer_id":"p1","public_addr":"127.0.0.1:1","caps":["push","relay"],"relay_token":"q7cY3nJ0wK2mZ5xV9sPdAg"}`},
		{"relay_incoming", &RelayIncoming{Stream: "Hk2pQ0vX8rTz4LmN6bCyEw", PeerID: "f2cb7c76-c795-4ba9-a63e-71b1d1345eb8"},
			`{"type":"relay_incoming","stream":"Hk2pQ0vX8rTz4LmN6bCyEw","peer_id":"f2cb7c76-c795-4ba9-a63e-71b1d1345eb8"}`},
		{"relay_ready", &RelayReady{Stream: "Hk2pQ0vX8rTz4LmN6bCyEw"}, `{"type":"relay_ready","stream":"Hk2pQ0vX8rTz4LmN6bCyEw"}`},
	}
	for _, tt := range server {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeServerMessage(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wire {
				t.Errorf("encode:\n got %s\nwant %s", got, tt.wire)
			}
			back, err := DecodeServerMessage([]byte(tt.wire))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("decode: got %#v, want %#v", back, tt.msg)
			}
		})
	}
}

// Field order and unknown fields are free on the wire: an original capture
// with fields reordered and an extra field still decodes.
func TestDecodeToleratesOrderAndUnknownFields(t *testing.T) {
	d, err := DecodeDatagram([]byte(`{"tcp_port":41135,"future":{"x":1},"nickname":"bob","type":"announce"}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := d.(*Announce); a.Nickname != "bob" || a.TCPPort != 41135 {
		t.Errorf("got %#v", a)
	}
}

func TestDecodeErrors(t *testing.T) {
	big := `{"type":"announce","nickname":"bob","tcp_port":1,"x":"` + strings.Repeat("a", MaxDatagramSize) + `"}`
	tests := []struct {
		name    string
		decode  func([]byte) error
		input   string
		wantErr error
		wantMsg string
	}{
		{"datagram over the bound", decodeDatagram, big, ErrTooLarge, "exceeds the limit of 8192 bytes"},
		{"invalid UTF-8", decodeDatagram, "{\"type\":\"announce\",\"nickname\":\"\xff\",\"tcp_port\":1}", ErrInvalidUTF8, "invalid UTF-8"},
		{"not JSON", decodeDatagram, `hello`, ErrMalformed, "invalid JSON"},
		{"JSON array", decodeDatagram, `[1,2]`, ErrMalformed, "expected a JSON object"},
		{"missing type", decodeDatagram, `{"nickname":"bob"}`, ErrMalformed, "missing field `type`"},
		{"type not a string", decodeDatagram, `{"type":7}`, ErrMalformed, "field `type` must be a string"},
		{"unknown type", decodeDatagram, `{"type":"hello"}`, ErrUnknownType, `type "hello"`},
		{"missing nickname", decodeDatagram, `{"type":"announce","tcp_port":1}`, ErrMalformed, "missing field `nickname`"},
		{"missing port", decodeDatagram, `{"type":"announce","nickname":"bob"}`, ErrMalformed, "missing field `tcp_port`"},
		{"port out of range", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":70000}`, ErrMalformed, "field `tcp_port` must be an integer from 0 to 65535"},
		{"port zero", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":0}`, ErrMalformed, "must be from 1 to 65535"},
		{"port as string", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":"1"}`, ErrMalformed, "field `tcp_port` must be"},
		{"nickname with escape", decodeDatagram, "{\"type\":\"announce\",\"nickname\":\"\\u001b[31m\",\"tcp_port\":1}", ErrMalformed, "control characters"},
		{"instance with spaces", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"instance":"a b"}`, ErrMalformed, "field `instance`"},
		{"trailing garbage", decodeDatagram, `{"type":"goodbye","nickname":"bob"}x`, ErrMalformed, "invalid JSON"},
		{"chat line missing content", decodeChat, `{"from":"a","timestamp":1}`, ErrMalformed, "missing field `content`"},
		{"chat line wrong timestamp", decodeChat, `{"from":"a","content":"x","timestamp":"now"}`, ErrMalformed, "field `timestamp` must be an integer"},
		{"chat line too long", decodeChat, strings.Repeat("x", MaxLineSize+1), ErrTooLarge, "exceeds the limit"},
		{"client frame too large", decodeClient, strings.Repeat(" ", MaxClientFrameSize+1), ErrTooLarge, "exceeds the limit"},
		{"register missing local_addr", decodeClient, `{"type":"register","nickname":"a"}`, ErrMalformed, "missing field `local_addr`"},
		{"register bad namespace", decodeClient, `{"type":"register","nickname":"a","local_addr":"x","namespace":"a/b"}`, ErrMalformed, "field `namespace`"},
		{"unknown client type", decodeClient, `{"type":"subscribe"}`, ErrUnknownType, `type "subscribe"`},
		{"peer_list entry missing field", decodeServer, `{"type":"peer_list","peers":[{"peer_id":"x"}]}`, ErrMalformed, "peers[0]: missing field `nickname`"},
		{"peer_list not an array", decodeServer, `{"type":"peer_list","peers":{}}`, ErrMalformed, "field `peers` must be an array"},
		{"relay_connect missing token", decodeClient, `{"type":"relay_connect","peer_id":"p"}`, ErrMalformed, "relay_connect: missing field `token`"},
		{"relay_connect short token", decodeClient, `{"type":"relay_connect","token":"abc","peer_id":"p"}`, ErrMalformed, "field `token` is not a relay token"},
		{"relay_connect token with padding bits", decodeClient, `{"type":"relay_connect","token":"q7cY3nJ0wK2mZ5xV9sPdAh","peer_id":"p"}`, ErrMalformed, "field `token` is not a relay token"},
		{"relay_connect missing peer_id", decodeClient, `{"type":"relay_connect","token":"q7cY3nJ0wK2mZ5xV9sPdAg"}`, ErrMalformed, "missing field `peer_id`"},
		{"relay_connect empty peer_id", decodeClient, `{"type":"relay_connect","token":"q7cY3nJ0wK2mZ5xV9sPdAg","peer_id":""}`, ErrMalformed, "field `peer_id` must be 1 to 64"},
		{"relay_accept stream too long", decodeClient, `{"type":"relay_accept","token":"q7cY3nJ0wK2mZ5xV9sPdAg","stream":"` + strings.Repeat("s", 65) + `"}`, ErrMalformed, "field `stream` must be 1 to 64"},
		{"relay_accept stream with a slash", decodeClient, `{"type":"relay_accept","token":"q7cY3nJ0wK2mZ5xV9sPdAg","stream":"a/b"}`, ErrMalformed, "field `stream`"},
		{"relay_incoming missing peer_id", decodeServer, `{"type":"relay_incoming","stream":"s"}`, ErrMalformed, "missing field `peer_id`"},
		{"relay_ready missing stream", decodeServer, `{"type":"relay_ready"}`, ErrMalformed, "missing field `stream`"},
		{"announce with too many rooms", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":[` + roomList(MaxRoomTags+1) + `]}`, ErrMalformed, "field `rooms` has more than 16 entries"},
		{"announce with a short room tag", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b"]}`, ErrMalformed, "field `rooms` entry \"0f1e2d3c4b5a69788796a5b\" is not 24 lowercase hex characters"},
		{"announce with a long room tag", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4c"]}`, ErrMalformed, "field `rooms` entry"},
		{"announce with an upper-case room tag", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0F1E2D3C4B5A69788796A5B4"]}`, ErrMalformed, "is not 24 lowercase hex characters"},
		{"announce with a room tag not hex", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5bg"]}`, ErrMalformed, "field `rooms` entry"},
		{"announce with a room tag twice", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":["0f1e2d3c4b5a69788796a5b4","c3d2e1f00112233445566778","0f1e2d3c4b5a69788796a5b4"]}`, ErrMalformed, "field `rooms` lists \"0f1e2d3c4b5a69788796a5b4\" twice"},
		{"announce with rooms not a list", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":"0f1e2d3c4b5a69788796a5b4"}`, ErrMalformed, "field `rooms` must be an array"},
		{"announce with a room tag not a string", decodeDatagram, `{"type":"announce","nickname":"bob","tcp_port":1,"rooms":[7]}`, ErrMalformed, "field `rooms"},
		{"register with too many rooms", decodeClient, `{"type":"register","nickname":"a","local_addr":"x","rooms":[` + roomList(MaxRoomTags+1) + `]}`, ErrMalformed, "register: field `rooms` has more than 16 entries"},
		{"register with a bad room tag", decodeClient, `{"type":"register","nickname":"a","local_addr":"x","rooms":["room"]}`, ErrMalformed, "register: field `rooms` entry \"room\""},
		{"register with a room tag twice", decodeClient, `{"type":"register","nickname":"a","local_addr":"x","rooms":["0f1e2d3c4b5a69788796a5b4","0f1e2d3c4b5a69788796a5b4"]}`, ErrMalformed, "register: field `rooms` lists"},
		{"peer_list entry with a bad room tag", decodeServer, `{"type":"peer_list","peers":[{"peer_id":"x","nickname":"a","public_addr":"1.2.3.4:5","local_addr":"0.0.0.0:5","last_seen":1,"rooms":["#general"]}]}`, ErrMalformed, "peers[0]: field `rooms` entry"},
		{"peer_joined with too many rooms", decodeServer, `{"type":"peer_joined","peer":{"peer_id":"x","nickname":"a","public_addr":"1.2.3.4:5","local_addr":"0.0.0.0:5","last_seen":1,"rooms":[` + roomList(MaxRoomTags+1) + `]}}`, ErrMalformed, "peer_joined: peer: field `rooms` has more than 16 entries"},
		{"registered bad relay token", decodeServer, `{"type":"registered","peer_id":"p","public_addr":"a","relay_token":"x"}`, ErrMalformed, "field `relay_token`"},
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

// roomList returns n distinct room tags, quoted and joined by commas.
func roomList(n int) string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = fmt.Sprintf(`"%024x"`, i)
	}
	return strings.Join(tags, ",")
}

func decodeDatagram(b []byte) error { _, err := DecodeDatagram(b); return err }
func decodeChat(b []byte) error     { _, err := DecodeChatLine(b); return err }
func decodeClient(b []byte) error   { _, err := DecodeClientMessage(b); return err }
func decodeServer(b []byte) error   { _, err := DecodeServerMessage(b); return err }

func TestValidateNickname(t *testing.T) {
	tests := []struct {
		nick string
		want string
	}{
		{"alice", ""},
		{"Zoë 🦊", ""},
		{strings.Repeat("a", 32), ""},
		{"", "Nickname cannot be empty"},
		{strings.Repeat("a", 33), "Nickname cannot be longer than 32 bytes"},
		{"   ", "Nickname cannot be only whitespace"},
		{" bob", "Nickname cannot start or end with whitespace"},
		{"bob\t", "Nickname cannot start or end with whitespace"},
		{"bo\nb", "Nickname cannot contain newlines"},
		{"bo\x1bb", "Nickname cannot contain control characters"},
		{"bo\u0085b", "Nickname cannot contain control characters"},
		{"bo\xffb", "Nickname must be valid UTF-8"},
	}
	for _, tt := range tests {
		err := ValidateNickname(tt.nick)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidateNickname(%q) = %q, want %q", tt.nick, got, tt.want)
		}
	}
}

func TestLineReader(t *testing.T) {
	input := "one\n" + strings.Repeat("x", MaxLineSize-1) + "\n" + "last"
	lr := NewLineReader(strings.NewReader(input))
	for _, want := range []string{"one", strings.Repeat("x", MaxLineSize-1), "last"} {
		got, err := lr.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("got line of %d bytes, want %d", len(got), len(want))
		}
	}
	if _, err := lr.ReadLine(); err == nil || err.Error() != "EOF" {
		t.Fatalf("after the last line: got %v, want EOF", err)
	}
	lr = NewLineReader(strings.NewReader(strings.Repeat("y", MaxLineSize+10) + "\n"))
	if _, err := lr.ReadLine(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized line: got %v, want ErrTooLarge", err)
	}
}

package cluster

import (
	"errors"
	"testing"
)

// The relay messages' exact bytes.
func TestRelayWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    RelayMsg
		want string
	}{
		{"open", RelayMsg{Type: RelayOpen, Server: "9f2c41d07ab35e18", Gen: 1, From: "a", To: "b", Window: 262144},
			`{"t":"open","s":"9f2c41d07ab35e18","g":1,"from":"a","to":"b","w":262144}`},
		{"accept", RelayMsg{Type: RelayAccept, Server: "51aa0c6e2d9f7b34", Gen: 3, Window: 131072},
			`{"t":"accept","s":"51aa0c6e2d9f7b34","g":3,"w":131072}`},
		{"credit", RelayMsg{Type: RelayCredit, Server: "51aa0c6e2d9f7b34", Grant: 524288},
			`{"t":"credit","s":"51aa0c6e2d9f7b34","n":524288}`},
		{"close of a refused stream", RelayMsg{Type: RelayClose, Server: "51aa0c6e2d9f7b34", Code: 1008, Reason: "relay refused", Error: "Unknown peer", Outcome: "unknown_peer"},
			`{"t":"close","s":"51aa0c6e2d9f7b34","code":1008,"reason":"relay refused","error":"Unknown peer","o":"unknown_peer"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeRelay(&tc.m)
			if err != nil || string(b) != tc.want {
				t.Fatalf("encoded %s, %v; want %s", b, err, tc.want)
			}
			if _, err := DecodeRelay(b); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("data", func(t *testing.T) {
		frame := append(make([]byte, RelayDataHeader), "hi"...)
		PutRelayHeader(frame, 0x0102030405060708)
		if want := "\x00\x01\x02\x03\x04\x05\x06\x07\x08hi"; string(frame) != want {
			t.Fatalf("data %q, want %q", frame, want)
		}
		m, err := DecodeRelay(frame)
		if err != nil || m.Type != RelayData || m.Offset != 0x0102030405060708 || string(m.Data) != "hi" {
			t.Fatalf("decoded %+v, %v", m, err)
		}
	})
	for _, bad := range []string{
		"\x00\x01", `{"t":"open","s":"x","g":1,"from":"a","w":1}`, `{"t":"accept","s":"x","w":1}`,
		`{"t":"credit","s":"x"}`, `{"t":"close","s":"x","code":999}`, `{"t":"nope","s":"x"}`, `{"t":"credit","n":1}`,
	} {
		if _, err := DecodeRelay([]byte(bad)); !errors.Is(err, errMalformed) {
			t.Errorf("DecodeRelay(%q): %v, want malformed", bad, err)
		}
	}
}

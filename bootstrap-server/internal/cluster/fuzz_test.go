package cluster

import (
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics, and what it accepts encodes and
// decodes again to the same message.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"t":"join","s":"x","g":1,"q":7,"ns":"","p":{"peer_id":"p","nickname":"a","public_addr":"192.0.2.1:1","local_addr":"0.0.0.0:1","last_seen":5}}`,
		`{"t":"leave","s":"x","g":1,"q":8,"id":"p"}`,
		`{"t":"beat","s":"x","g":1,"q":8,"n":1,"name":"a"}`,
		`{"t":"hello","s":"x","g":2,"q":8}`,
		`{"t":"snapreq","s":"y","r":3}`,
		`{"t":"snap","s":"x","g":2,"q":8,"r":3,"i":0,"k":1,"peers":[{"ns":"","p":{"peer_id":"p"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if m.Type == TypeSnap {
			return // decoded entries are not re-encoded
		}
		b2, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", b2, err)
		}
		if m2.Type != m.Type || m2.Server != m.Server || m2.Gen != m.Gen || m2.Seq != m.Seq || m2.ID != m.ID || m2.Info().PeerID != m.Info().PeerID {
			t.Fatalf("round trip: %+v != %+v", m2, m)
		}
	})
}

// FuzzDecodeRelay: DecodeRelay never panics, and what it accepts encodes
// and decodes again to the same message.
func FuzzDecodeRelay(f *testing.F) {
	for _, s := range []string{
		`{"t":"open","s":"x","g":1,"ns":"","from":"p","to":"q","w":262144}`,
		`{"t":"accept","s":"y","g":3,"w":262144}`,
		`{"t":"credit","s":"y","n":524288}`,
		`{"t":"close","s":"x","code":1000,"reason":"peer closed","o":"closed"}`,
		`{"t":"close","s":"y","code":1008,"reason":"relay refused","error":"Peer does not accept relayed streams","o":"no_relay_cap"}`,
		"\x00\x00\x00\x00\x00\x00\x00\x00\x10payload",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeRelay(b)
		if err != nil {
			return
		}
		var b2 []byte
		if m.Type == RelayData {
			b2 = make([]byte, RelayDataHeader+len(m.Data))
			copy(b2[RelayDataHeader:], m.Data)
			PutRelayHeader(b2, m.Offset)
		} else if b2, err = EncodeRelay(m); err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := DecodeRelay(b2)
		if err != nil {
			t.Fatalf("decode of re-encoded %q: %v", b2, err)
		}
		if !reflect.DeepEqual(m, m2) && !(len(m.Data) == 0 && len(m2.Data) == 0) {
			t.Fatalf("round trip: %+v != %+v", m2, m)
		}
	})
}

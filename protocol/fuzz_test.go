package protocol

import (
	"reflect"
	"testing"
)

// Each fuzz target checks that its decoder never panics, and that whatever
// it accepts survives a round trip: decode(encode(x)) == x. The seed corpus
// lives in testdata/fuzz/<target>/.

func FuzzDecodeDatagram(f *testing.F) {
	f.Add([]byte(`{"type":"announce","nickname":"bob","tcp_port":41135}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDatagram(b)
		if err != nil {
			return
		}
		roundTrip(t, d, EncodeDatagram, DecodeDatagram)
	})
}

func FuzzDecodeChatLine(f *testing.F) {
	f.Add([]byte(`{"from":"alice","content":"hello bob","timestamp":1795739259}` + "\n"))
	f.Add([]byte(`{"from":"alice","content":"are you back?","timestamp":1795739259,"id":"5f0c1a2b3c4d5e70","instance":"8c1d2e4f5a6b7c8d","expires":1796344059}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeChatLine(b)
		if err != nil {
			return
		}
		roundTrip(t, m, EncodeChatLine, DecodeChatLine)
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add([]byte(`{"ack":"5f0c1a2b3c4d5e6f"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAck(b)
		if err != nil {
			return
		}
		roundTrip(t, a, EncodeAck, DecodeAck)
	})
}

func FuzzDecodeClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"register","nickname":"alice","local_addr":"0.0.0.0:40045"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeClientMessage(b)
		if err != nil {
			return
		}
		roundTrip(t, m, EncodeClientMessage, DecodeClientMessage)
	})
}

func FuzzDecodeServerMessage(f *testing.F) {
	f.Add([]byte(`{"type":"peer_list","peers":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeServerMessage(b)
		if err != nil {
			return
		}
		roundTrip(t, m, EncodeServerMessage, DecodeServerMessage)
	})
}

func roundTrip[T any](t *testing.T, x T, encode func(T) ([]byte, error), decode func([]byte) (T, error)) {
	t.Helper()
	b, err := encode(x)
	if err != nil {
		t.Fatalf("decoded %#v but cannot encode it: %v", x, err)
	}
	y, err := decode(b)
	if err != nil {
		t.Fatalf("cannot decode our own encoding %s: %v", b, err)
	}
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("round trip changed the message:\n was %#v\n now %#v\nwire %s", x, y, b)
	}
}

func FuzzDecodePunch(f *testing.F) {
	f.Add([]byte(`{"punch":"connect","addrs":["203.0.113.5:41135"]}` + "\n"))
	f.Add([]byte(`{"punch":"sync"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePunch(b)
		if err != nil {
			return
		}
		roundTrip(t, p, EncodePunch, DecodePunch)
	})
}

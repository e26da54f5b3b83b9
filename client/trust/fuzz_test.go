package trust

import (
	"reflect"
	"testing"
)

// FuzzParseKnownPeers: parsing never panics, and what parses comes back
// the same after it is formatted and parsed again:
// parse(format(parse(x))) == parse(x).
func FuzzParseKnownPeers(f *testing.F) {
	f.Add([]byte("# known peers\n\"alice\" 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w0= verified 1795739259\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		pins, err := parseKnownPeers("f", data)
		if err != nil {
			return
		}
		out := formatKnownPeers(pins)
		if len(out) > MaxFileSize {
			t.Fatalf("formatted file has %d bytes", len(out))
		}
		again, err := parseKnownPeers("f", out)
		if err != nil {
			t.Fatalf("parse(format(pins)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(pins, again) {
			t.Fatalf("round trip changed the pins:\n%+v\n%+v", pins, again)
		}
	})
}

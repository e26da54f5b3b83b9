package identity

import (
	"crypto/ed25519"
	"testing"
)

// FuzzParseKeyFile: parseKeyFile never panics, and a key it accepts is
// written back to a file that parses to the same key.
func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKeyFile(data)
		if err != nil {
			return
		}
		if len(key) != ed25519.PrivateKeySize {
			t.Fatalf("parsed key has %d bytes", len(key))
		}
		out, err := formatKeyFile(key)
		if err != nil {
			t.Fatalf("formatKeyFile: %v", err)
		}
		again, err := parseKeyFile(out)
		if err != nil {
			t.Fatalf("parseKeyFile(formatKeyFile(key)): %v\n%s", err, out)
		}
		if !key.Equal(again) {
			t.Fatal("the key changed in a round trip")
		}
	})
}

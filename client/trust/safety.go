package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"
)

const safetyDomain = "parlance-safety-number-v1"

// SafetyNumber is the number two people compare out of band (read aloud,
// or side by side) to check that each holds the other's real key: both
// compute the same number from their two keys, and a man in the middle,
// who gives each side a key of his own, cannot make the two numbers agree
// without about 2^99 work.
//
// Derivation: SHA-512 over the ASCII string "parlance-safety-number-v1"
// followed by the two 32-byte keys, the smaller (bytes.Compare) first, so
// the order of a and b does not matter. The first 60 bytes of the digest,
// taken 5 at a time as a big-endian integer modulo 100000, give 12 groups
// of 5 decimal digits (as Signal shows them), joined by spaces:
//
//	05219 77241 10845 ... (12 groups, 60 digits)
//
// It returns "" if a key is not 32 bytes.
func SafetyNumber(a, b ed25519.PublicKey) string {
	if len(a) != ed25519.PublicKeySize || len(b) != ed25519.PublicKeySize {
		return ""
	}
	if bytes.Compare(a, b) > 0 {
		a, b = b, a
	}
	h := sha512.New()
	h.Write([]byte(safetyDomain))
	h.Write(a)
	h.Write(b)
	sum := h.Sum(nil)
	groups := make([]string, 12)
	for i := range groups {
		var v [8]byte
		copy(v[3:], sum[i*5:i*5+5])
		groups[i] = fmt.Sprintf("%05d", binary.BigEndian.Uint64(v[:])%100000)
	}
	return strings.Join(groups, " ")
}

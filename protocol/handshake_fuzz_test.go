package protocol

import "testing"

// FuzzDecodeHandshakePayload checks that DecodeHandshakePayload never
// panics, that what it accepts survives a round trip, and that
// VerifyStatic on an accepted payload never panics either. The seed corpus
// lives in testdata/fuzz/FuzzDecodeHandshakePayload/.
func FuzzDecodeHandshakePayload(f *testing.F) {
	f.Add([]byte(handshakeGoldenPayload))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeHandshakePayload(b)
		if err != nil {
			return
		}
		roundTrip(t, p, EncodeHandshakePayload, DecodeHandshakePayload)
		if _, err := p.VerifyStatic(handshakeTestStatic(0xa0)); err != nil && string(b) == handshakeGoldenPayload {
			t.Fatalf("the golden payload does not verify: %v", err)
		}
	})
}

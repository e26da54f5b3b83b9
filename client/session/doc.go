// Package session owns the end-to-end encrypted, mutually authenticated
// channel between two chat peers over any net.Conn: a Noise_XX_25519_
// ChaChaPoly_BLAKE2s handshake (github.com/flynn/noise) in which each side
// proves its long-term Ed25519 identity by signing its Noise static key
// (protocol.HandshakePayload, as libp2p-noise does), then length-framed
// transport messages. It knows nothing of nicknames' meaning, trust or the
// chat loop: the caller decides what to do with the Peer a handshake
// proves. XX, not IK: both static keys travel encrypted and the responder
// learns who called, with no X25519 key in announces; IK would need the
// responder's static key in every announce and saves only half a round
// trip, which on a LAN is well under a millisecond.
//
// # Wire
//
// The initiator writes Preamble ("\x00PRLNC1\n"); a NUL can never start a
// JSON chat line, so a listener tells a Noise session from an original
// peer's plaintext line by the first byte (Sniff). Then every message,
// handshake and transport alike, is a 2-byte big-endian length and that
// many bytes (at most 65535):
//
//	-> e                      (32 bytes, empty payload)
//	<- e, ee, s, es, payload  (the responder's signed HandshakePayload)
//	-> s, se, payload         (the initiator's)
//	<-> transport frames      (ciphertext of at most 65519 plaintext bytes + 16-byte tag)
//
// The preamble is the Noise prologue, so both sides agree on it or the
// handshake fails. Each transport frame's nonce is its position in the
// stream: a dropped, repeated, reordered or altered frame fails to
// authenticate, and the Conn then fails for good (ErrTampered) without
// returning anything from that frame on.
//
// A clean end of stream at a frame boundary reads as io.EOF; Noise does not
// tell it from an attacker cutting the connection there, so a message
// protocol on top must not treat silence as "nothing more was sent".
package session

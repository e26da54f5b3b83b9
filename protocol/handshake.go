package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
)

// Noise handshake payload
//
// Peers that advertise CapNoise talk inside a Noise_XX session (package
// client/session). Each side sends one payload inside the handshake,
// encrypted: the responder in the second message, the initiator in the
// third. It binds the sender's long-term Ed25519 identity key to the
// session's Noise static key, as libp2p-noise does:
//
//	{"key":"<44 characters>","sig":"<88 characters>","nickname":"alice","instance":"8c1d2e4f5a6b7c8d"}
//
// sig is the Ed25519 signature by key over the bytes
// "parlance-noise-static-key:" followed by the 32-byte Noise static public
// key. The payload is at most MaxHandshakePayloadSize bytes. key and sig
// must be in canonical base64 (EncodePublicKey's form), so one key has one
// spelling.

// MaxHandshakePayloadSize bounds one handshake payload.
const MaxHandshakePayloadSize = 1 << 10

// StaticKeySize is the length of a Noise (X25519) static public key.
const StaticKeySize = 32

// staticKeyPrefix is the domain prefix of what a handshake signature covers.
const staticKeyPrefix = "parlance-noise-static-key:"

// HandshakePayload is what each side of a Noise handshake proves about
// itself: its identity key (wire form), the signature binding that key to
// the handshake's static key, and the nickname and instance it runs as.
// Instance may be empty; the other fields are required.
type HandshakePayload struct {
	Key      string `json:"key"`
	Sig      string `json:"sig"`
	Nickname string `json:"nickname"`
	Instance string `json:"instance,omitempty"`
}

// SignStatic sets the payload's key and sig: priv signs the static key.
func (p *HandshakePayload) SignStatic(priv ed25519.PrivateKey, static []byte) {
	p.Key = EncodePublicKey(priv.Public().(ed25519.PublicKey))
	p.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, staticSigned(static)))
}

// VerifyStatic checks that the payload's signature binds its key to
// static, the Noise static public key the sender proved in the handshake,
// and returns the key. The error wraps ErrBadSignature when the signature
// does not verify and ErrMalformed when a field is not well formed.
func (p *HandshakePayload) VerifyStatic(static []byte) (ed25519.PublicKey, error) {
	const what = "handshake payload"
	if len(static) != StaticKeySize {
		return nil, fmt.Errorf("%s: static key of %d bytes, want %d: %w", what, len(static), StaticKeySize, ErrBadSignature)
	}
	pub, err := parseCanonicalKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: field `key`: %v: %w", what, err, ErrMalformed)
	}
	sig, err := parseCanonicalSig(p.Sig)
	if err != nil {
		return nil, fmt.Errorf("%s: field `sig`: %v: %w", what, err, ErrMalformed)
	}
	if !ed25519.Verify(pub, staticSigned(static), sig) {
		return nil, fmt.Errorf("%s: signature does not bind key %s to the static key: %w", what, ShortFingerprint(pub), ErrBadSignature)
	}
	return pub, nil
}

func staticSigned(static []byte) []byte {
	b := make([]byte, 0, len(staticKeyPrefix)+len(static))
	b = append(b, staticKeyPrefix...)
	return append(b, static...)
}

// EncodeHandshakePayload returns the payload's wire form. It refuses a
// payload that DecodeHandshakePayload would refuse.
func EncodeHandshakePayload(p *HandshakePayload) ([]byte, error) {
	if err := p.check("protocol: encode handshake payload"); err != nil {
		return nil, err
	}
	b, err := marshal(p)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode handshake payload: %w", err)
	}
	if len(b) > MaxHandshakePayloadSize {
		return nil, fmt.Errorf("protocol: encode handshake payload: %d bytes exceeds the limit of %d bytes: %w", len(b), MaxHandshakePayloadSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeHandshakePayload parses a handshake payload. Input over
// MaxHandshakePayloadSize, invalid UTF-8, a missing or mistyped field, a
// key or sig not in canonical base64, an invalid nickname and an invalid
// instance are errors. It does not verify the signature: see VerifyStatic.
func DecodeHandshakePayload(b []byte) (*HandshakePayload, error) {
	const what = "handshake payload"
	if err := checkInput(what, b, MaxHandshakePayloadSize); err != nil {
		return nil, err
	}
	var w struct {
		Key      *string `json:"key"`
		Sig      *string `json:"sig"`
		Nickname *string `json:"nickname"`
		Instance string  `json:"instance"`
	}
	if err := unmarshal(what, b, &w); err != nil {
		return nil, err
	}
	switch {
	case w.Key == nil:
		return nil, missing(what, "key")
	case w.Sig == nil:
		return nil, missing(what, "sig")
	case w.Nickname == nil:
		return nil, missing(what, "nickname")
	}
	p := &HandshakePayload{Key: *w.Key, Sig: *w.Sig, Nickname: *w.Nickname, Instance: w.Instance}
	if err := p.check(what); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *HandshakePayload) check(what string) error {
	if _, err := parseCanonicalKey(p.Key); err != nil {
		return fmt.Errorf("%s: field `key`: %v: %w", what, err, ErrMalformed)
	}
	if _, err := parseCanonicalSig(p.Sig); err != nil {
		return fmt.Errorf("%s: field `sig`: %v: %w", what, err, ErrMalformed)
	}
	if err := ValidateNickname(p.Nickname); err != nil {
		return fmt.Errorf("%s: field `nickname`: %v: %w", what, err, ErrMalformed)
	}
	return checkInstance(what, p.Instance)
}

// parseCanonicalKey is ParsePublicKey that also refuses the other base64
// spellings of a key (non-zero padding bits), so a key has one wire form.
func parseCanonicalKey(s string) (ed25519.PublicKey, error) {
	k, err := ParsePublicKey(s)
	if err != nil {
		return nil, err
	}
	if EncodePublicKey(k) != s {
		return nil, errors.New("not in canonical base64")
	}
	return k, nil
}

func parseCanonicalSig(s string) ([]byte, error) {
	if len(s) != sigTextLen {
		return nil, fmt.Errorf("not a base64 Ed25519 signature (%d characters)", sigTextLen)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.SignatureSize {
		return nil, fmt.Errorf("not a base64 Ed25519 signature (%d characters)", sigTextLen)
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, errors.New("not in canonical base64")
	}
	return b, nil
}

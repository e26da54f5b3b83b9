package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// CapNoise: the peer accepts direct messages inside a Noise session (see
// the package doc) and signs its announces, goodbyes and registrations with
// the identity key in their key field.
const CapNoise = "noise"

// Identity keys and signatures travel as standard base64 with padding:
// 44 characters for an Ed25519 public key, 88 for a signature.
const (
	keyTextLen = 44
	sigTextLen = 88
)

// ErrUnsigned is returned by the Verify methods for a message without a
// key: one from an original peer, or one whose key was stripped.
var ErrUnsigned = errors.New("protocol: message is not signed")

// ErrBadSignature is returned by the Verify methods when the signature
// does not verify with the message's key.
var ErrBadSignature = errors.New("protocol: signature does not verify")

// Signature is the optional identity part of an announce, a goodbye and a
// register: the sender's Ed25519 public key, the time of signing (Unix
// milliseconds) and the signature over the message's other fields (see
// signedBytes). Either all three are set or none.
type Signature struct {
	Key string `json:"key,omitempty"`
	TS  int64  `json:"ts,omitempty"`
	Sig string `json:"sig,omitempty"`
}

// Signed reports whether the message carries a key.
func (s *Signature) Signed() bool { return s.Key != "" }

// PublicKey returns the key field decoded; ok is false when it is absent.
// A decoded message's key is always well formed.
func (s *Signature) PublicKey() (ed25519.PublicKey, bool) {
	k, err := ParsePublicKey(s.Key)
	return k, err == nil
}

// Time returns the signing time.
func (s *Signature) Time() time.Time { return time.UnixMilli(s.TS) }

func (s *Signature) sign(priv ed25519.PrivateKey, now time.Time, fields func(ts int64) []byte) {
	s.Key = EncodePublicKey(priv.Public().(ed25519.PublicKey))
	s.TS = now.UnixMilli()
	s.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, fields(s.TS)))
}

func (s *Signature) verify(fields func(ts int64) []byte) error {
	if s.Key == "" {
		return ErrUnsigned
	}
	pub, err := ParsePublicKey(s.Key)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("protocol: field `sig` is not a base64 Ed25519 signature: %w", ErrBadSignature)
	}
	if !ed25519.Verify(pub, fields(s.TS), sig) {
		return ErrBadSignature
	}
	return nil
}

// check validates the shape of the fields: none, or a well-formed key, a
// positive ts and a well-formed signature.
func (s *Signature) check(what string) error {
	if s.Key == "" && s.TS == 0 && s.Sig == "" {
		return nil
	}
	if _, err := ParsePublicKey(s.Key); err != nil {
		return fmt.Errorf("%s: field `key`: %v: %w", what, err, ErrMalformed)
	}
	if s.TS <= 0 {
		return fmt.Errorf("%s: field `ts` must be a positive integer (Unix milliseconds) when `key` is set: %w", what, ErrMalformed)
	}
	if len(s.Sig) != sigTextLen {
		return fmt.Errorf("%s: field `sig` must be a base64 Ed25519 signature (%d characters): %w", what, sigTextLen, ErrMalformed)
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(s.Sig); err != nil || len(b) != ed25519.SignatureSize {
		return fmt.Errorf("%s: field `sig` must be a base64 Ed25519 signature (%d characters): %w", what, sigTextLen, ErrMalformed)
	}
	return nil
}

// EncodePublicKey returns the wire form of an Ed25519 public key.
func EncodePublicKey(k ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(k)
}

// ParsePublicKey parses the wire form of an Ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	if len(s) != keyTextLen {
		return nil, fmt.Errorf("not a base64 Ed25519 public key (%d characters)", keyTextLen)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a base64 Ed25519 public key (%d characters)", keyTextLen)
	}
	return ed25519.PublicKey(b), nil
}

// signedBytes is what a signature covers: a domain string that names the
// message, then each field as its length (uvarint) and its bytes, so no two
// different messages sign the same bytes and a signature for one kind of
// message never verifies as another.
func signedBytes(domain string, fields ...string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, "parlance/"...)
	b = append(b, domain...)
	b = append(b, 0)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// Sign sets the announce's key, ts and sig: the signature covers the
// nickname, tcp_port, instance, caps, rooms (when there are any) and ts.
func (a *Announce) Sign(priv ed25519.PrivateKey, now time.Time) {
	a.Signature.sign(priv, now, a.signed)
}

// Verify checks the announce's signature: ErrUnsigned without a key,
// ErrBadSignature when it does not verify.
func (a *Announce) Verify() error { return a.Signature.verify(a.signed) }

// signed is what an announce's signature covers. Without rooms it is
// "announce/v1" as before rooms existed, so every earlier announce keeps
// verifying; with rooms, "announce/v2" and the rooms after caps. The
// domains differ, so no v1 message verifies as a v2 one or back, and
// stripping every tag breaks the signature like changing one does.
func (a *Announce) signed(ts int64) []byte {
	if len(a.Rooms) == 0 {
		return signedBytes("announce/v1", a.Nickname, itoa(int64(a.TCPPort)), a.Instance, strings.Join(a.Caps, ","), itoa(ts))
	}
	return signedBytes("announce/v2", a.Nickname, itoa(int64(a.TCPPort)), a.Instance, strings.Join(a.Caps, ","), strings.Join(a.Rooms, ","), itoa(ts))
}

// Sign sets the goodbye's key, ts and sig over nickname, instance and ts.
func (g *Goodbye) Sign(priv ed25519.PrivateKey, now time.Time) {
	g.Signature.sign(priv, now, g.signed)
}

// Verify checks the goodbye's signature.
func (g *Goodbye) Verify() error { return g.Signature.verify(g.signed) }

func (g *Goodbye) signed(ts int64) []byte {
	return signedBytes("goodbye/v1", g.Nickname, g.Instance, itoa(ts))
}

// Sign sets the register's key, ts and sig over nickname, local_addr,
// instance, caps, namespace, addrs, rooms (when there are any) and ts.
func (m *Register) Sign(priv ed25519.PrivateKey, now time.Time) {
	m.Signature.sign(priv, now, m.signed)
}

// Verify checks the register's signature.
func (m *Register) Verify() error { return m.Signature.verify(m.signed) }

// signed is what a register's signature covers: "register/v1" without
// rooms, "register/v2" with the rooms after addrs (see Announce.signed).
func (m *Register) signed(ts int64) []byte {
	if len(m.Rooms) == 0 {
		return signedBytes("register/v1", m.Nickname, m.LocalAddr, m.Instance, strings.Join(m.Caps, ","), m.Namespace, strings.Join(m.Addrs, ","), itoa(ts))
	}
	return signedBytes("register/v2", m.Nickname, m.LocalAddr, m.Instance, strings.Join(m.Caps, ","), m.Namespace, strings.Join(m.Addrs, ","), strings.Join(m.Rooms, ","), itoa(ts))
}

// Fingerprints
//
// A fingerprint is the SHA-256 of the public key in base32 (52 characters
// A-Z and 2-7), cut into four blocks of 13, each followed by a check
// character (Luhn mod 32, as Syncthing's device IDs), and shown in eight
// groups of seven joined by dashes:
//
//	MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZLTM-JXWC3BQ-NZSWK3D-FOMFZW5

var fpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

const fpAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// Fingerprint returns the key's fingerprint in its grouped form.
func Fingerprint(k ed25519.PublicKey) string {
	sum := sha256.Sum256(k)
	raw := fpEncoding.EncodeToString(sum[:]) // 52 characters
	var withCheck strings.Builder
	for i := 0; i < 4; i++ {
		block := raw[i*13 : (i+1)*13]
		withCheck.WriteString(block)
		withCheck.WriteByte(luhn32(block))
	}
	s := withCheck.String() // 56 characters
	groups := make([]string, 8)
	for i := range groups {
		groups[i] = s[i*7 : (i+1)*7]
	}
	return strings.Join(groups, "-")
}

// ShortFingerprint is the fingerprint's first group: enough to tell peers
// apart in a list and to select one (/send bob#MFZWI3D).
func ShortFingerprint(k ed25519.PublicKey) string { return Fingerprint(k)[:7] }

// KeyFingerprint is Fingerprint of a key in wire form; "" if it is not one.
func KeyFingerprint(key string) string {
	k, err := ParsePublicKey(key)
	if err != nil {
		return ""
	}
	return Fingerprint(k)
}

// NormalizeFingerprint turns what a person typed (any case, with or
// without dashes or spaces) into the compact form of a fingerprint or of a
// prefix of one, and reports whether it can be one: only base32
// characters.
func NormalizeFingerprint(s string) (string, bool) {
	var b strings.Builder
	for _, c := range strings.ToUpper(s) {
		switch {
		case c == '-' || c == ' ':
		case strings.ContainsRune(fpAlphabet, c):
			b.WriteRune(c)
		default:
			return "", false
		}
	}
	return b.String(), b.Len() > 0
}

// CheckFingerprint reports whether s, a full fingerprint as typed, has
// 56 base32 characters with correct check characters: a mistyped character
// is caught before it is compared.
func CheckFingerprint(s string) bool {
	c, ok := NormalizeFingerprint(s)
	if !ok || len(c) != 56 {
		return false
	}
	for i := 0; i < 4; i++ {
		if luhn32(c[i*14:i*14+13]) != c[i*14+13] {
			return false
		}
	}
	return true
}

// luhn32 is the Luhn mod N check character over base32, as Syncthing
// computes it.
func luhn32(s string) byte {
	const n = 32
	factor, sum := 1, 0
	for i := 0; i < len(s); i++ {
		cp := strings.IndexByte(fpAlphabet, s[i])
		addend := factor * cp
		if factor == 2 {
			factor = 1
		} else {
			factor = 2
		}
		addend = addend/n + addend%n
		sum += addend
	}
	remainder := sum % n
	return fpAlphabet[(n-remainder)%n]
}

package room

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"

	"github.com/parlance-chat/parlance/protocol"
)

// Bounds of names and secrets.
const (
	MaxNameLen   = 32
	MaxSecretLen = 256
)

// Name is a room name in its canonical form: '#' and 1 to MaxNameLen
// characters a-z, 0-9, '_' or '-'. The zero Name is not a name; get one
// from ParseName.
type Name struct{ s string }

// ParseName accepts what a person typed, with or without the leading '#';
// ASCII capitals are lowered first, so #Team and #team are one room.
func ParseName(s string) (Name, error) {
	bare := s
	if len(bare) > 0 && bare[0] == '#' {
		bare = bare[1:]
	}
	switch {
	case bare == "":
		return Name{}, errors.New("room name is empty: use '#' and 1 to 32 characters a-z, 0-9, '_' or '-'")
	case len(bare) > MaxNameLen:
		return Name{}, fmt.Errorf("room name %q is longer than %d characters (a-z, 0-9, '_' or '-')", truncate(s, 40), MaxNameLen)
	}
	b := []byte(bare)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return Name{}, fmt.Errorf("room name %q may hold only a-z, 0-9, '_' and '-' (1 to %d characters)", truncate(s, 40), MaxNameLen)
		}
	}
	return Name{"#" + string(b)}, nil
}

// String returns the name with its '#'.
func (n Name) String() string { return n.s }

// Bare returns the name without its '#': what the room key is derived
// from.
func (n Name) Bare() string {
	if n.s == "" {
		return ""
	}
	return n.s[1:]
}

// IsZero reports whether n is the zero Name.
func (n Name) IsZero() bool { return n.s == "" }

// Room is a room as one member knows it: its name, its key (never on the
// wire) and the identifiers derived from the key.
type Room struct {
	Name
	// Private is true when the room was joined with a secret.
	Private bool
	// ID names the room inside room messages and summaries, which only
	// travel over encrypted sessions between members.
	ID  string
	key [32]byte
}

// keySalt separates room keys from any other use of HKDF or Argon2 over
// the same secret.
const keySalt = "parlance room v1"

// The Argon2id cost of a private room's key: OWASP's recommended minimum
// (19 MiB, two passes, one thread), about 50 ms here. Every guess of a
// name and secret an observer tests against announced tags costs it that.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
)

// New derives the room's key and ID. A public room (empty secret): key =
// HKDF-SHA256("", salt "parlance room v1", info = the bare name); its name
// is its only secret, so there is nothing to slow down. A private room:
// key = Argon2id(secret, salt = "parlance room v1" 0x00 bare name), so
// that a weak secret is expensive to guess offline from announced tags.
// ID = the first 16 bytes of HMAC-SHA256(key, "id") in hex.
func New(name Name, secret string) (*Room, error) {
	if name.IsZero() {
		return nil, errors.New("room: no room name")
	}
	if len(secret) > MaxSecretLen {
		return nil, fmt.Errorf("room %s: the secret is longer than %d bytes", name, MaxSecretLen)
	}
	r := &Room{Name: name, Private: secret != ""}
	if r.Private {
		salt := append([]byte(keySalt+"\x00"), name.Bare()...)
		copy(r.key[:], argon2.IDKey([]byte(secret), salt, argonTime, argonMemory, argonThreads, 32))
	} else {
		k, err := hkdf.Key(sha256.New, nil, []byte(keySalt), name.Bare(), 32)
		if err != nil {
			// Only in FIPS 140-only mode, which refuses a short secret.
			return nil, fmt.Errorf("room %s: derive key: %w", name, err)
		}
		copy(r.key[:], k)
	}
	r.ID = r.id()
	return r, nil
}

// FromKey rebuilds a room from what a member keeps of it across restarts:
// its name, its key (Key) and whether it is private. The secret is not
// needed, and the Argon2id of a private room is not run again. The name
// is not checked against the key: the caller keeps the two together.
func FromKey(name Name, key [32]byte, private bool) *Room {
	r := &Room{Name: name, Private: private, key: key}
	r.ID = r.id()
	return r
}

// Key returns the room key. It is what membership rests on: whoever holds
// it can compute the ID and every member's tag, and read and post in the
// room. Keep it as private as the identity key; it never goes on the wire.
func (r *Room) Key() [32]byte { return r.key }

// id is the room ID: the first 16 bytes of HMAC-SHA256(key, "id") in hex.
func (r *Room) id() string {
	return hex.EncodeToString(r.mac([]byte("id"))[:protocol.RoomIDLen/2])
}

func (r *Room) mac(data ...[]byte) []byte {
	h := hmac.New(sha256.New, r.key[:])
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

// Tag returns the membership tag that the peer with identity key pub puts
// in its announces and registrations: the first 12 bytes of
// HMAC-SHA256(key, "member" || pub) in hex. It is "" for a key that is not
// an Ed25519 public key.
func (r *Room) Tag(pub ed25519.PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	return hex.EncodeToString(r.mac([]byte("member"), pub)[:protocol.RoomTagLen/2])
}

// IsMember reports whether tags, as announced by the peer with key pub
// (the key that signed the announce), hold that peer's tag for this room.
// A tag copied from another peer's announce does not match: it is bound
// to that other key.
func (r *Room) IsMember(pub ed25519.PublicKey, tags []string) bool {
	want := r.Tag(pub)
	if want == "" {
		return false
	}
	for _, t := range tags {
		if hmac.Equal([]byte(t), []byte(want)) {
			return true
		}
	}
	return false
}

// truncate shortens s for an error message without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

package room

import (
	"crypto/ed25519"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
)

// testKey is a fixed identity key (the seed is b repeated), as in the
// protocol tests: testKey(1) is iojj3XQJ….
func testKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	return ed25519.NewKeyFromSeed(seed)
}

func testPub(b byte) ed25519.PublicKey { return testKey(b).Public().(ed25519.PublicKey) }

func mustName(t testing.TB, s string) Name {
	t.Helper()
	n, err := ParseName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustRoom(t testing.TB, name, secret string) *Room {
	t.Helper()
	r, err := New(mustName(t, name), secret)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseName(t *testing.T) {
	good := []struct{ in, want string }{
		{"#general", "#general"},
		{"general", "#general"},
		{"#Team-Alpha_2", "#team-alpha_2"},
		{"TEAM", "#team"},
		{"#a", "#a"},
		{"#" + strings.Repeat("z", 32), "#" + strings.Repeat("z", 32)},
		{"#-_-", "#-_-"},
	}
	for _, tt := range good {
		n, err := ParseName(tt.in)
		if err != nil {
			t.Errorf("ParseName(%q): %v", tt.in, err)
			continue
		}
		if n.String() != tt.want || n.Bare() != tt.want[1:] {
			t.Errorf("ParseName(%q) = %q (bare %q), want %q", tt.in, n, n.Bare(), tt.want)
		}
	}
	bad := []struct{ in, says string }{
		{"", "room name is empty: use '#' and 1 to 32 characters a-z, 0-9, '_' or '-'"},
		{"#", "room name is empty"},
		{"#" + strings.Repeat("z", 33), "is longer than 32 characters (a-z, 0-9, '_' or '-')"},
		{"#team alpha", `room name "#team alpha" may hold only a-z, 0-9, '_' and '-' (1 to 32 characters)`},
		{"##team", "may hold only a-z"},
		{"#tëam", "may hold only a-z"},
		{"#te\u212Aam", "may hold only a-z"}, // the Kelvin sign lowers to 'k' in Unicode; not here
		{"#a.b", "may hold only a-z"},
		{"#a\x00", "may hold only a-z"},
	}
	for _, tt := range bad {
		n, err := ParseName(tt.in)
		if err == nil {
			t.Errorf("ParseName(%q) = %q, want an error", tt.in, n)
			continue
		}
		if !strings.Contains(err.Error(), tt.says) {
			t.Errorf("ParseName(%q): %q does not say %q", tt.in, err, tt.says)
		}
	}
	if !(Name{}).IsZero() || mustName(t, "x").IsZero() {
		t.Error("IsZero")
	}
}

// Pinned derivations, checked once against independent HKDF, Argon2id and
// HMAC implementations (Python's hmac and hashlib, and pyca/cryptography's
// Argon2id). Changing any of them splits
// every room in two.
func TestDerivationGolden(t *testing.T) {
	tests := []struct {
		name, secret, key, id, tag1, tag2 string
	}{
		{"#general", "", "b859585da840857ba949c1971510fc264b44d9fb2b1de61ab2915e1140ac17a6", "fe9114fd7672835c76b5702931a7d4b8", "24248bbf78cd7559dc316c21", "8491780e44e37403a191db7b"},
		{"#team", "hunter2", "0ac95bdf924f8f8ea39c94bda9cfd8f844e6fec55610e086e0724623901a509a", "9b030ce99a91a6c3c7106595412db7bc", "8753ba64bb997aa08cd7f6e4", "d4846b4a554f650fa410f1f2"},
		{"#team", "", "e9be11134a80cb9c521460d7e7cdc3b8515c3e4c272965f4847bd2c16392026f", "5cbce8d1dcb1dd958235114801a2a64d", "7b75e6eca6d5a4849d7ddfcc", "8cfa74fa3e1cbaeb57497fc3"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.secret, func(t *testing.T) {
			r := mustRoom(t, tt.name, tt.secret)
			if got := hex.EncodeToString(r.key[:]); got != tt.key {
				t.Errorf("key %s, want %s", got, tt.key)
			}
			if r.ID != tt.id {
				t.Errorf("ID %s, want %s", r.ID, tt.id)
			}
			if got := r.Tag(testPub(1)); got != tt.tag1 {
				t.Errorf("tag of key 1 %s, want %s", got, tt.tag1)
			}
			if got := r.Tag(testPub(2)); got != tt.tag2 {
				t.Errorf("tag of key 2 %s, want %s", got, tt.tag2)
			}
			if r.Private != (tt.secret != "") {
				t.Errorf("Private = %v", r.Private)
			}
		})
	}
}

func TestRoomIdentifiers(t *testing.T) {
	public := mustRoom(t, "#team", "")
	private := mustRoom(t, "#team", "hunter2")
	other := mustRoom(t, "#team", "hunter3")
	if mustRoom(t, "TEAM", "").ID != public.ID {
		t.Error("#team and TEAM are different rooms")
	}
	if public.ID == private.ID || private.ID == other.ID {
		t.Error("a secret does not change the room ID")
	}
	if mustRoom(t, "#teams", "").ID == public.ID {
		t.Error("two names give one ID")
	}
	if len(public.ID) != 32 || len(public.Tag(testPub(1))) != 24 {
		t.Errorf("lengths: ID %d, tag %d", len(public.ID), len(public.Tag(testPub(1))))
	}
	a, b := testPub(1), testPub(2)
	tagA := private.Tag(a)
	if tagA == private.Tag(b) {
		t.Error("two keys have one tag")
	}
	if tagA == public.Tag(a) || tagA == other.Tag(a) {
		t.Error("one key has one tag in two rooms")
	}
	if !private.IsMember(a, []string{"junk", tagA}) {
		t.Error("IsMember: the peer's own tag is not recognised")
	}
	// A non-member that copied A's tag into its own announce (signed by
	// B) is not a member: the tag is bound to A's key.
	if private.IsMember(b, []string{tagA}) {
		t.Error("IsMember: A's tag validates for key B")
	}
	if other.IsMember(a, []string{tagA}) || public.IsMember(a, []string{tagA}) {
		t.Error("IsMember: a tag of one room validates in another")
	}
	if private.IsMember(a, nil) || private.IsMember(ed25519.PublicKey("short"), []string{""}) {
		t.Error("IsMember without tags or with a bad key")
	}
	if private.Tag(ed25519.PublicKey("short")) != "" {
		t.Error("Tag of a bad key is not empty")
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Name{}, ""); err == nil {
		t.Error("New with the zero Name")
	}
	if _, err := New(mustName(t, "#x"), strings.Repeat("s", MaxSecretLen)); err != nil {
		t.Errorf("New with a secret of %d bytes: %v", MaxSecretLen, err)
	}
	_, err := New(mustName(t, "#x"), strings.Repeat("s", MaxSecretLen+1))
	if err == nil || !strings.Contains(err.Error(), "room #x: the secret is longer than 256 bytes") {
		t.Errorf("New with a secret of %d bytes: %v", MaxSecretLen+1, err)
	}
}

// A room rebuilt from its name, key and privacy, as the store keeps it,
// is the room New derived: same ID, same tags, same key.
func TestFromKeyRebuildsTheRoom(t *testing.T) {
	for _, tt := range []struct{ name, secret string }{
		{"#team", ""},
		{"#team", "hunter2"},
	} {
		t.Run(tt.name+" with secret "+strconv.Quote(tt.secret), func(t *testing.T) {
			r := mustRoom(t, tt.name, tt.secret)
			back := FromKey(r.Name, r.Key(), r.Private)
			if back.Name != r.Name || back.Private != r.Private || back.ID != r.ID || back.Key() != r.Key() {
				t.Errorf("FromKey = %s private %v ID %s, want %s private %v ID %s",
					back.Name, back.Private, back.ID, r.Name, r.Private, r.ID)
			}
			if back.Tag(testPub(1)) != r.Tag(testPub(1)) {
				t.Error("the rebuilt room gives another tag")
			}
		})
	}
	// The key, not the name, makes the room.
	pub, priv := mustRoom(t, "#team", ""), mustRoom(t, "#team", "hunter2")
	if FromKey(pub.Name, priv.Key(), false).ID != priv.ID {
		t.Error("FromKey's ID does not follow the key")
	}
	if pub.Key() == priv.Key() || pub.Key() == ([32]byte{}) {
		t.Error("Key is the same for two rooms, or zero")
	}
}

package trust

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// testKey returns the wire form of a deterministic public key.
func testKey(i byte) string {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = i
	return protocol.EncodePublicKey(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
}

var (
	keyA = testKey(1)
	keyB = testKey(2)
	t0   = time.Unix(1795739259, 0)
)

func TestDocExampleParses(t *testing.T) {
	doc := `# comment
"alice" 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w0= verified 1795739259
"bob smith" AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= known 1795739301
`
	pins, err := parseKnownPeers("known_peers", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Pin{
		"alice":     {Nickname: "alice", Key: "3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w0=", Verified: true, Since: time.Unix(1795739259, 0), FromDisk: true},
		"bob smith": {Nickname: "bob smith", Key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", Since: time.Unix(1795739301, 0), FromDisk: true},
	}
	if !reflect.DeepEqual(pins, want) {
		t.Fatalf("parse = %+v\nwant %+v", pins, want)
	}
}

func TestFormatIsExact(t *testing.T) {
	pins := map[string]Pin{
		"zoë":   {Nickname: "zoë", Key: keyB, Since: time.Unix(20, 0)},
		`a "b"`: {Nickname: `a "b"`, Key: keyA, Verified: true, Since: time.Unix(10, 0)},
	}
	want := fileHeader +
		`"a \"b\"" ` + keyA + " verified 10\n" +
		`"zoë" ` + keyB + " known 20\n"
	if got := string(formatKnownPeers(pins)); got != want {
		t.Fatalf("format =\n%s\nwant\n%s", got, want)
	}
}

func TestParseFormatRoundTrip(t *testing.T) {
	in := "\n  # a comment\n\"alice\"  " + keyA + "\tverified 1795739259  \r\n" +
		`"\u00e9\x41" ` + keyB + " known 0\n" +
		`"bob/../x" ` + keyB + " known -5"
	pins, err := parseKnownPeers("f", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 3 || pins["éA"].Key != keyB || !pins["alice"].Verified || pins["bob/../x"].Since.Unix() != -5 {
		t.Fatalf("parse = %+v", pins)
	}
	again, err := parseKnownPeers("f", formatKnownPeers(pins))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pins, again) {
		t.Fatalf("round trip changed the pins:\n%+v\n%+v", pins, again)
	}
}

func TestParseCanonicalisesKeys(t *testing.T) {
	// The last base64 character's two unused bits are ignored by the
	// decoder: "...h8=" and "...h9=" are the same key.
	raw, _ := base64.StdEncoding.DecodeString(keyA)
	canon := base64.StdEncoding.EncodeToString(raw)
	odd := canon[:42] + string(canon[42]+1) + "="
	if _, err := protocol.ParsePublicKey(odd); err != nil {
		t.Skipf("ParsePublicKey rejects non-canonical base64 now: %v", err)
	}
	pins, err := parseKnownPeers("f", []byte(`"a" `+odd+" known 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pins["a"].Key != canon {
		t.Fatalf("key = %q, want the canonical %q", pins["a"].Key, canon)
	}
	s := &Store{pins: pins}
	if got := s.State("a", canon); got != StateKnown {
		t.Fatalf("State with the canonical spelling = %v", got)
	}
	s.pins["a"] = Pin{Nickname: "a", Key: canon, FromDisk: true}
	if got := s.State("a", odd); got != StateKnown {
		t.Fatalf("State with another spelling of the same key = %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	long := `"a" ` + keyA + " known 1" + strings.Repeat(" ", MaxLineLen)
	var many strings.Builder
	for i := 0; i <= MaxPins; i++ {
		fmt.Fprintf(&many, "%q %s known 1\n", fmt.Sprint("n", i), keyA)
	}
	tests := []struct {
		name, in, want string
	}{
		{"an unquoted nickname", "# ok\n\nalice " + keyA + " known 1\n", `f:3: a pin starts with the nickname in double quotes; a pin is: "nickname" key known|verified unix-seconds`},
		{"an unterminated quote", `"alice ` + keyA + " known 1", "f:1: the nickname is not a complete Go-quoted string"},
		{"a bad escape", `"al\qice" ` + keyA + " known 1", "f:1: the nickname is not a complete Go-quoted string"},
		{"an invalid nickname", `" alice" ` + keyA + " known 1", `f:1: nickname " alice": Nickname cannot start or end with whitespace`},
		{"an empty nickname", `"" ` + keyA + " known 1", `f:1: nickname "": Nickname cannot be empty`},
		{"a nickname made of invalid UTF-8", `"\xff" ` + keyA + " known 1", `f:1: nickname "\xff": Nickname must be valid UTF-8`},
		{"a control character", `"a\x01" ` + keyA + " known 1", "Nickname cannot contain control characters"},
		{"no space after the nickname", `"alice"` + keyA + " known 1", "f:1: want a space after the nickname"},
		{"a missing field", `"alice" ` + keyA + " known", "f:1: want 3 fields after the nickname, got 2"},
		{"an extra field", `"alice" ` + keyA + " known 1 # pinned", "f:1: want 3 fields after the nickname, got 5"},
		{"a nickname alone", `"alice"`, "f:1: want a space after the nickname"},
		{"a bad key", `"alice" abc known 1`, `f:1: key "abc": not a base64 Ed25519 public key (44 characters)`},
		{"a key of 33 bytes", `"alice" ` + base64.StdEncoding.EncodeToString(make([]byte, 33)) + " known 1", "f:1: key"},
		{"a bad trust word", `"alice" ` + keyA + " trusted 1", `f:1: trust must be "known" or "verified", got "trusted"`},
		{"a trust word in capitals", `"alice" ` + keyA + " Known 1", `f:1: trust must be "known" or "verified", got "Known"`},
		{"a bad time", `"alice" ` + keyA + " known yesterday", `f:1: the time pinned must be an integer (Unix seconds), got "yesterday"`},
		{"a time too large", `"alice" ` + keyA + " known 99999999999999999999", "f:1: the time pinned must be an integer"},
		{"a duplicate nickname", `"alice" ` + keyA + " known 1\n# x\n" + `"alice" ` + keyB + " known 2\n", `f:3: "alice" is already pinned on line 1: one pin per nickname`},
		{"invalid UTF-8 in a comment", "# \xff\n", "f:1: line is not valid UTF-8"},
		{"a line over 4 KiB", "\n" + long, "f:2: line is longer than 4096 bytes"},
		{"too many pins", many.String(), fmt.Sprintf("f:%d: more than 4096 pins", MaxPins+1)},
		{"a file over 1 MiB", strings.Repeat("#\n", MaxFileSize/2+1), "f: file is larger than 1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseKnownPeers("f", []byte(tt.in))
			if err == nil {
				t.Fatal("parse succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %q spans lines", err)
			}
		})
	}
}

func TestOpenNamesTheFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), KnownPeersFile)
	if err := os.WriteFile(path, []byte(`"alice" `+keyA+" known 1\n\"bob\" x known 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), path+":2: key") {
		t.Fatalf("Open: err = %v, want %s:2: ...", err, path)
	}
}

func TestOpenRefusesADirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open of a directory: err = %v", err)
	}
}

func TestState(t *testing.T) {
	s := &Store{pins: map[string]Pin{
		"disk":     {Nickname: "disk", Key: keyA, FromDisk: true},
		"run":      {Nickname: "run", Key: keyA},
		"verified": {Nickname: "verified", Key: keyA, Verified: true, FromDisk: true},
		"verrun":   {Nickname: "verrun", Key: keyA, Verified: true},
	}}
	tests := []struct {
		name, nick, key string
		want            State
	}{
		{"no key and no pin is unencrypted", "nobody", "", StateUnencrypted},
		{"no key for a pinned nickname is a change", "disk", "", StateChanged},
		{"no key for a verified nickname is a change", "verified", "", StateChanged},
		{"a key for an unpinned nickname is new", "nobody", keyA, StateNew},
		{"the key pinned on disk is known", "disk", keyA, StateKnown},
		{"the key pinned during this run is still new", "run", keyA, StateNew},
		{"a verified key is verified", "verified", keyA, StateVerified},
		{"a key verified during this run is verified", "verrun", keyA, StateVerified},
		{"another key for a known nickname is a change", "disk", keyB, StateChanged},
		{"another key for a verified nickname is a change", "verified", keyB, StateChanged},
		{"another key for a nickname pinned this run is a change", "run", keyB, StateChanged},
		{"a malformed key for a pinned nickname is a change", "disk", "junk", StateChanged},
		{"nicknames are case sensitive", "Disk", keyA, StateNew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.State(tt.nick, tt.key); got != tt.want {
				t.Fatalf("State(%q, key) = %v, want %v", tt.nick, got, tt.want)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	want := map[State]string{
		StateUnencrypted: "unencrypted", StateNew: "new", StateKnown: "known",
		StateVerified: "verified", StateChanged: "KEY CHANGED", State(9): "State(9)",
	}
	for s, w := range want {
		if s.String() != w {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), s.String(), w)
		}
	}
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "profile", KnownPeersFile))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	r, err := Open(s.Path())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	return r
}

func TestOpenMissingFileIsEmptyAndCreatesNothing(t *testing.T) {
	s := openTemp(t)
	if len(s.Pins()) != 0 {
		t.Fatal("store not empty")
	}
	if _, err := os.Stat(filepath.Dir(s.Path())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open created the directory: %v", err)
	}
}

func TestPinFirstPinsOnce(t *testing.T) {
	s := openTemp(t)
	pinned, err := s.PinFirst("alice", keyA, t0.Add(300*time.Millisecond))
	if err != nil || !pinned {
		t.Fatalf("first PinFirst = %v, %v", pinned, err)
	}
	if got := s.State("alice", keyA); got != StateNew {
		t.Fatalf("State after pinning in this run = %v, want new", got)
	}
	pinned, err = s.PinFirst("alice", keyB, t0.Add(time.Hour))
	if err != nil || pinned {
		t.Fatalf("second PinFirst = %v, %v; want false", pinned, err)
	}
	p, ok := s.Lookup("alice")
	want := Pin{Nickname: "alice", Key: keyA, Since: t0}
	if !ok || p != want {
		t.Fatalf("Lookup = %+v, %v; want %+v", p, ok, want)
	}
	if got := s.State("alice", keyB); got != StateChanged {
		t.Fatalf("State with another key = %v", got)
	}

	for _, path := range []string{s.Path(), filepath.Dir(s.Path())} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]fs.FileMode{true: 0o700, false: 0o600}[fi.IsDir()]; fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}

	r := reopen(t, s)
	want.FromDisk = true
	if p, _ := r.Lookup("alice"); p != want {
		t.Fatalf("after reload: %+v, want %+v", p, want)
	}
	if got := r.State("alice", keyA); got != StateKnown {
		t.Fatalf("State after reload = %v, want known", got)
	}
}

func TestPinFirstRefusesBadInput(t *testing.T) {
	s := openTemp(t)
	if _, err := s.PinFirst("alice", "junk", t0); err == nil {
		t.Fatal("PinFirst with a bad key succeeded")
	}
	if _, err := s.PinFirst(" alice", keyA, t0); err == nil {
		t.Fatal("PinFirst with a bad nickname succeeded")
	}
	if _, err := s.PinFirst("alice", "", t0); err == nil {
		t.Fatal("PinFirst without a key succeeded")
	}
	if len(s.Pins()) != 0 {
		t.Fatalf("pins = %+v", s.Pins())
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a file was written: %v", err)
	}
}

func TestTrust(t *testing.T) {
	s := openTemp(t)
	if _, err := s.PinFirst("alice", keyA, t0); err != nil {
		t.Fatal(err)
	}
	r := reopen(t, s)

	// The same key: verified, keeps its time and its origin.
	if err := r.Trust("alice", keyA, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	want := Pin{Nickname: "alice", Key: keyA, Verified: true, Since: t0, FromDisk: true}
	if p, _ := r.Lookup("alice"); p != want {
		t.Fatalf("after Trust of the pinned key: %+v, want %+v", p, want)
	}
	if got := r.State("alice", keyA); got != StateVerified {
		t.Fatalf("State = %v", got)
	}

	// Another key replaces the pin.
	t1 := t0.Add(2 * time.Hour)
	if err := r.Trust("alice", keyB, t1); err != nil {
		t.Fatal(err)
	}
	want = Pin{Nickname: "alice", Key: keyB, Verified: true, Since: t1}
	if p, _ := r.Lookup("alice"); p != want {
		t.Fatalf("after Trust of a new key: %+v, want %+v", p, want)
	}
	if r.State("alice", keyA) != StateChanged || r.State("alice", keyB) != StateVerified {
		t.Fatal("the old key is still accepted")
	}
	// An unpinned nickname.
	if err := r.Trust("bob", keyA, t1); err != nil {
		t.Fatal(err)
	}

	rr := reopen(t, r)
	want.FromDisk = true
	if got := rr.Pins(); len(got) != 2 || got[0] != want || got[1].Nickname != "bob" || !got[1].Verified {
		t.Fatalf("after reload: %+v", got)
	}
	if err := rr.Trust("carol", "junk", t1); err == nil {
		t.Fatal("Trust with a bad key succeeded")
	}
}

func TestForget(t *testing.T) {
	s := openTemp(t)
	if _, err := s.PinFirst("alice", keyA, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PinFirst("bob", keyB, t0); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Forget("alice"); !ok || err != nil {
		t.Fatalf("Forget = %v, %v", ok, err)
	}
	if ok, err := s.Forget("alice"); ok || err != nil {
		t.Fatalf("second Forget = %v, %v; want false", ok, err)
	}
	if s.State("alice", keyB) != StateNew {
		t.Fatal("alice is still pinned")
	}
	r := reopen(t, s)
	if _, ok := r.Lookup("alice"); ok {
		t.Fatal("alice is pinned after reload")
	}
	if _, ok := r.Lookup("bob"); !ok {
		t.Fatal("bob is lost")
	}
	if pinned, err := r.PinFirst("alice", keyB, t0); !pinned || err != nil {
		t.Fatalf("PinFirst after Forget = %v, %v", pinned, err)
	}
}

func TestFailedWriteLeavesMemoryUnchanged(t *testing.T) {
	s := openTemp(t)
	if _, err := s.PinFirst("alice", keyA, t0); err != nil {
		t.Fatal(err)
	}
	before := s.Pins()

	// A directory in place of the file: the rename over it fails, for
	// root too (chmod would not stop root).
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Path(), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if pinned, err := s.PinFirst("bob", keyB, t0); err == nil || pinned {
		t.Fatalf("PinFirst = %v, %v; want an error", pinned, err)
	}
	if err := s.Trust("alice", keyB, t0); err == nil {
		t.Fatal("Trust succeeded")
	}
	if ok, err := s.Forget("alice"); err == nil || ok {
		t.Fatalf("Forget = %v, %v; want an error", ok, err)
	}
	if got := s.Pins(); !reflect.DeepEqual(got, before) {
		t.Fatalf("pins changed to %+v", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(s.Path()))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if fi, err := os.Stat(filepath.Join(s.Path(), "x")); err != nil || !fi.IsDir() {
		t.Fatalf("the directory in the way was changed: %v", err)
	}
}

func TestFailedWriteInReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can write into a read-only directory")
	}
	s := openTemp(t)
	if _, err := s.PinFirst("alice", keyA, t0); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(s.Path())
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if pinned, err := s.PinFirst("bob", keyB, t0); err == nil || pinned {
		t.Fatalf("PinFirst = %v, %v; want an error", pinned, err)
	}
	if _, ok := s.Lookup("bob"); ok {
		t.Fatal("bob is pinned in memory")
	}
}

func TestPinLimit(t *testing.T) {
	s := Memory()
	for i := range MaxPins {
		if _, err := s.PinFirst(fmt.Sprint("n", i), keyA, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PinFirst("one-more", keyA, t0); err == nil {
		t.Fatal("pin number 4097 was accepted")
	}
	if err := s.Trust("n0", keyB, t0); err != nil {
		t.Fatalf("replacing a pin at the limit: %v", err)
	}
	// The largest file the limits allow still parses.
	for n := range s.pins {
		delete(s.pins, n)
	}
	for i := range MaxPins {
		nick := strings.Repeat("\u00ad", 14) + fmt.Sprintf("%04d", i)
		s.pins[nick] = Pin{Nickname: nick, Key: keyA, Verified: true, Since: time.Unix(-1<<62, 0)}
	}
	data := formatKnownPeers(s.pins)
	if len(data) > MaxFileSize {
		t.Fatalf("a full store is %d bytes, over MaxFileSize", len(data))
	}
	if _, err := parseKnownPeers("f", data); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryStoreWritesNothing(t *testing.T) {
	s := Memory()
	if s.Path() != "" {
		t.Fatalf("Path = %q", s.Path())
	}
	if pinned, err := s.PinFirst("alice", keyA, t0); !pinned || err != nil {
		t.Fatalf("PinFirst = %v, %v", pinned, err)
	}
	if s.State("alice", keyA) != StateNew {
		t.Fatal("not pinned")
	}
}

func TestSafetyNumber(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() ed25519.PublicKey {
		var seed [32]byte
		for i := range seed {
			seed[i] = byte(rng.Uint32())
		}
		return ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	}
	a, b, c := key(), key(), key()
	ab := SafetyNumber(a, b)
	if ab != SafetyNumber(b, a) {
		t.Fatal("SafetyNumber depends on the order of the keys")
	}
	groups := strings.Split(ab, " ")
	if len(groups) != 12 {
		t.Fatalf("%q has %d groups, want 12", ab, len(groups))
	}
	for _, g := range groups {
		if len(g) != 5 || strings.Trim(g, "0123456789") != "" {
			t.Fatalf("%q: group %q is not 5 digits", ab, g)
		}
	}
	seen := map[string]bool{ab: true}
	for _, n := range []string{SafetyNumber(a, c), SafetyNumber(b, c), SafetyNumber(a, a)} {
		if seen[n] {
			t.Fatalf("two key pairs share the safety number %q", n)
		}
		seen[n] = true
	}
	if SafetyNumber(a[:31], b) != "" {
		t.Fatal("a short key gave a number")
	}
	// Pinned (and checked with Python's hashlib): the derivation is part
	// of what two versions must agree on.
	zero := make(ed25519.PublicKey, 32)
	one := make(ed25519.PublicKey, 32)
	one[31] = 1
	const want = "01615 76418 34844 01983 54816 21717 13595 33773 75945 95928 77169 56162"
	if got := SafetyNumber(one, zero); got != want {
		t.Fatalf("SafetyNumber(one, zero) = %q, want %q", got, want)
	}
}

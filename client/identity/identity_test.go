package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"pgregory.net/rapid"
)

func TestDataDir(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"XDG_DATA_HOME wins", map[string]string{"XDG_DATA_HOME": "/x/data", "HOME": "/home/a"}, "/x/data/parlance", ""},
		{"HOME without XDG_DATA_HOME", map[string]string{"HOME": "/home/a"}, "/home/a/.local/share/parlance", ""},
		{"a relative XDG_DATA_HOME is ignored", map[string]string{"XDG_DATA_HOME": "data", "HOME": "/home/a"}, "/home/a/.local/share/parlance", ""},
		{"neither is set", map[string]string{}, "", "neither XDG_DATA_HOME nor HOME is set"},
		{"a relative HOME is refused", map[string]string{"HOME": "home"}, "", "not an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DataDir(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DataDir: err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DataDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestEscapeNickname(t *testing.T) {
	tests := []struct{ nick, want string }{
		{"alice", "alice"},
		{"Bob_the-2nd", "Bob_the-2nd"},
		{".", "%2E"},
		{"..", "%2E%2E"},
		{"a/b", "a%2Fb"},
		{"../etc", "%2E%2E%2Fetc"},
		{"50%", "50%25"},
		{"bob smith", "bob%20smith"},
		{"é", "%C3%A9"},
		{`a\b`, "a%5Cb"},
		{"", "%"},
	}
	for _, tt := range tests {
		if got := EscapeNickname(tt.nick); got != tt.want {
			t.Errorf("EscapeNickname(%q) = %q, want %q", tt.nick, got, tt.want)
		}
	}
}

// nicknames generates valid nicknames, biased towards the bytes that
// need escaping.
func nicknames() *rapid.Generator[string] {
	r := rapid.OneOf(
		rapid.SampledFrom([]rune{'.', '/', '%', ' ', '\\', '-', '_', 'a', 'A', '0', 'é', '€', '😀', ':', '\x7f'}),
		rapid.Rune(),
	)
	return rapid.Custom(func(t *rapid.T) string {
		s := string(rapid.SliceOfN(r, 1, 32).Draw(t, "runes"))
		for len(s) > 32 {
			s = s[:len(s)-1]
		}
		if s == "" {
			s = "."
		}
		return strings.ToValidUTF8(s, "")
	}).Filter(func(s string) bool { return s != "" })
}

func TestEscapeNicknameIsASafeInjectivePathElement(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nicks := rapid.SliceOfNDistinct(nicknames(), 1, 50, func(s string) string { return s }).Draw(t, "nicks")
		seen := map[string]string{}
		for _, n := range nicks {
			e := EscapeNickname(n)
			if e == "" || e == "." || e == ".." || strings.ContainsAny(e, `/\`) {
				t.Fatalf("EscapeNickname(%q) = %q: not a safe path element", n, e)
			}
			if filepath.Base(e) != e || filepath.Clean(e) != e {
				t.Fatalf("EscapeNickname(%q) = %q: not a single clean path element", n, e)
			}
			if len(e) > 255 {
				t.Fatalf("EscapeNickname(%q) has %d bytes", n, len(e))
			}
			if other, ok := seen[e]; ok {
				t.Fatalf("EscapeNickname(%q) = EscapeNickname(%q) = %q", n, other, e)
			}
			seen[e] = n
			if d := ProfileDir("/data", n); filepath.Dir(d) != "/data" {
				t.Fatalf("ProfileDir(/data, %q) = %q: outside /data", n, d)
			}
		}
	})
}

// seeded is a deterministic key source for tests.
func seeded(t *testing.T) *rand.ChaCha8 {
	t.Helper()
	seed := [32]byte{byte(len(t.Name()))}
	copy(seed[1:], t.Name())
	t.Logf("key seed %x", seed)
	return rand.NewChaCha8(seed)
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles", "alice", KeyFile)

	key, created, err := LoadOrCreate(path, seeded(t))
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created = %v, err = %v; want a new key", created, err)
	}
	if len(key) != ed25519.PrivateKeySize {
		t.Fatalf("key has %d bytes", len(key))
	}
	for _, d := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("directory %s has mode %04o, want 0700", d, fi.Mode().Perm())
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file has mode %04o, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("profile directory holds %d entries, want only the key file: %v", len(entries), entries)
	}

	loaded, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !key.Equal(loaded) {
		t.Fatal("Load returned another key than the one created")
	}
	again, created, err := LoadOrCreate(path, seeded(t))
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created = %v, err = %v; want the existing key", created, err)
	}
	if !key.Equal(again) {
		t.Fatal("second LoadOrCreate returned another key")
	}
}

func TestLoadOrCreateWithNilRandUsesCryptoRand(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	key, created, err := LoadOrCreate(path, nil)
	if err != nil || !created || len(key) != ed25519.PrivateKeySize {
		t.Fatalf("LoadOrCreate(nil rng) = %d-byte key, %v, %v", len(key), created, err)
	}
}

func TestLoadOrCreateKeepsAWrongFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	junk := []byte("not a key\n")
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path, seeded(t)); err == nil {
		t.Fatal("LoadOrCreate over a corrupt file succeeded")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, junk) {
		t.Fatalf("LoadOrCreate changed the corrupt file to %q", got)
	}
}

func TestWriteNewNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	if err := os.WriteFile(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeNew(path, []byte("second")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("writeNew over an existing file: err = %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first" {
		t.Fatalf("file now holds %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("a temporary file was left behind: %v", entries)
	}
}

func TestLoadRefusesWidePermissions(t *testing.T) {
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o606, 0o610, 0o601, 0o777} {
		t.Run(fmt.Sprintf("mode %04o is refused", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), KeyFile)
			if _, _, err := LoadOrCreate(path, seeded(t)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if !errors.Is(err, ErrPermissions) {
				t.Fatalf("Load of a %04o file: err = %v, want ErrPermissions", mode, err)
			}
			msg := err.Error()
			for _, want := range []string{path, "chmod 600 " + path, fmt.Sprintf("has mode %04o", mode)} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans lines", msg)
			}
			if _, created, err := LoadOrCreate(path, seeded(t)); created || !errors.Is(err, ErrPermissions) {
				t.Errorf("LoadOrCreate: created = %v, err = %v; want ErrPermissions", created, err)
			}
		})
	}
}

func TestLoadAcceptsOwnerOnlyModes(t *testing.T) {
	for _, mode := range []fs.FileMode{0o600, 0o400, 0o700} {
		path := filepath.Join(t.TempDir(), KeyFile)
		key, _, err := LoadOrCreate(path, seeded(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if got, err := Load(path); err != nil || !key.Equal(got) {
			t.Errorf("Load of a %04o file: %v", mode, err)
		}
	}
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestLoadRefusesBadFiles(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(seeded(t))
	good, err := formatKeyFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), seeded(t))
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	encrypted := pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der})

	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{"an empty file", nil, "is not a PEM file"},
		{"text", []byte("hello\n"), "is not a PEM file"},
		{"text before the block", append([]byte("junk\n"), good...), "is not a PEM file"},
		{"trailing garbage", append(append([]byte{}, good...), "junk"...), "has data after the PEM block"},
		{"a second block", append(append([]byte{}, good...), good...), "has data after the PEM block"},
		{"a broken block before a good one", append([]byte("-----BEGIN PRIVATE KEY-----\n!!\n"), good...), "cannot be read"},
		{"a truncated block", good[:len(good)-10], "not a valid PEM file"},
		{"another PEM type", pemOf("OPENSSH PRIVATE KEY", der), `type "OPENSSH PRIVATE KEY", want "PRIVATE KEY"`},
		{"a public key", pemOf("PUBLIC KEY", der), `type "PUBLIC KEY"`},
		{"PEM headers", encrypted, "headers"},
		{"not DER", pemOf(pemType, []byte("not der")), "does not hold a PKCS #8 private key"},
		{"data after the DER", pemOf(pemType, append(append([]byte{}, der...), 0, 0)), "has data after the PKCS #8 key"},
		{"an ECDSA key", pemOf(pemType, ecDER), "holds an ECDSA key, want Ed25519"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), KeyFile)
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, path) || strings.Contains(msg, "\n") {
				t.Fatalf("Load: err = %q; want one line naming the file and saying %q", msg, tt.want)
			}
		})
	}
}

func TestLoadRefusesNonRegularAndLargeFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	large := filepath.Join(dir, "large")
	if err := os.WriteFile(large, bytes.Repeat([]byte("#"), MaxKeyFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"a FIFO", fifo, "not a regular file"},
		{"a directory", sub, "not a regular file"},
		{"a file over 64 KiB", large, "larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.path) {
				t.Fatalf("Load: err = %v, want one naming the file and saying %q", err, tt.want)
			}
			if _, created, err := LoadOrCreate(tt.path, seeded(t)); err == nil || created {
				t.Fatalf("LoadOrCreate: created = %v, err = %v", created, err)
			}
		})
	}
}

func TestLoadMissingFileIsNotExist(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file: err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadAcceptsOpenSSLKey(t *testing.T) {
	// From `openssl genpkey -algorithm ed25519`: RFC 8410's example key.
	const openssl = "-----BEGIN PRIVATE KEY-----\r\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\r\n-----END PRIVATE KEY-----\r\n"
	key, err := parseKeyFile([]byte(openssl))
	if err != nil {
		t.Fatalf("parseKeyFile: %v", err)
	}
	if got := key.Seed(); got[0] != 0xd4 || got[31] != 0x42 {
		t.Fatalf("seed = %x", got)
	}
}

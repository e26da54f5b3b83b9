// Package identity owns a chat profile's long-term Ed25519 identity key
// on disk: where a profile lives (DataDir, ProfileDir), and the key file
// itself, created on first start (LoadOrCreate) and read on every later
// one (Load).
//
// The key file is a PEM block of type "PRIVATE KEY" holding the key in
// PKCS #8, as written by x509.MarshalPKCS8PrivateKey and by
// `openssl genpkey -algorithm ed25519`. It is created with mode 0600 in a
// directory created with mode 0700, written to a temporary file that is
// then linked into place, so a crash never leaves half a key and an
// existing key is never overwritten. Like ssh, Load refuses a key file
// that anyone but its owner may read or write.
package identity

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/parlance-chat/parlance/client/internal/privfile"
)

// KeyFile is the name of the identity key file in a profile directory.
const KeyFile = "identity"

// MaxKeyFileSize is the largest key file Load reads. A PEM Ed25519 key
// is about 120 bytes.
const MaxKeyFileSize = 64 << 10

const pemType = "PRIVATE KEY"

// ErrPermissions is matched (errors.Is) by the error Load returns for a
// key file that its group or others may access.
var ErrPermissions = errors.New("identity: key file permissions are too open")

// DataDir returns the directory that holds all profiles:
// $XDG_DATA_HOME/parlance, else $HOME/.local/share/parlance. As the XDG
// base directory specification asks, a relative XDG_DATA_HOME is ignored.
// getenv is os.Getenv outside tests.
func DataDir(getenv func(string) string) (string, error) {
	if x := getenv("XDG_DATA_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "parlance"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("identity: cannot find the data directory: neither XDG_DATA_HOME nor HOME is set")
	}
	if !filepath.IsAbs(home) {
		return "", fmt.Errorf("identity: cannot find the data directory: HOME (%q) is not an absolute path and XDG_DATA_HOME is not set", home)
	}
	return filepath.Join(home, ".local", "share", "parlance"), nil
}

// EscapeNickname turns a nickname into a single path element: ASCII
// letters, digits, '-' and '_' stay as they are, every other byte becomes
// %XX (uppercase hex). The result never contains a separator and is never
// "." or "..", and distinct nicknames give distinct results (the
// encoding can be undone). The empty string, not a valid nickname, gives
// "%", which no nickname gives. A nickname of 32 bytes gives at most 96.
//
// On a case-insensitive file system (the macOS and Windows defaults)
// "Alice" and "alice" name the same directory.
func EscapeNickname(nick string) string {
	if nick == "" {
		return "%"
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(nick))
	for i := 0; i < len(nick); i++ {
		c := nick[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b = append(b, c)
		default:
			b = append(b, '%', hex[c>>4], hex[c&0xF])
		}
	}
	return string(b)
}

// ProfileDir is the directory of one profile: dataDir/EscapeNickname(nickname).
func ProfileDir(dataDir, nickname string) string {
	return filepath.Join(dataDir, EscapeNickname(nickname))
}

// permError is the error for a key file with group or other permission
// bits; it matches ErrPermissions.
type permError struct {
	path string
	mode fs.FileMode
}

func (e *permError) Error() string {
	return fmt.Sprintf("identity file %s has mode %04o: it must be readable by you alone; run: chmod 600 %s",
		e.path, e.mode.Perm(), e.path)
}

func (e *permError) Is(target error) bool { return target == ErrPermissions }

// Load reads the identity key at path. It refuses a file that is not a
// regular file, whose permissions have any group or other bit
// (ErrPermissions), that is larger than MaxKeyFileSize, or that is not
// exactly one PEM "PRIVATE KEY" block with a PKCS #8 Ed25519 key. A
// missing file gives an error that matches fs.ErrNotExist.
func Load(path string) (ed25519.PrivateKey, error) {
	// Stat before opening: opening a FIFO would block.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	if err := checkFileInfo(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	if !os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("identity file %s changed while it was being read", path)
	}
	if err := checkFileInfo(path, ofi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("identity file %s is larger than %d KiB: it is not a key file", path, MaxKeyFileSize>>10)
	}
	key, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %v", path, err)
	}
	return key, nil
}

func checkFileInfo(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("identity file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &permError{path: path, mode: fi.Mode()}
	}
	if fi.Size() > MaxKeyFileSize {
		return fmt.Errorf("identity file %s is larger than %d KiB: it is not a key file", path, MaxKeyFileSize>>10)
	}
	return nil
}

// LoadOrCreate loads the identity key at path, or, when there is no file
// there, makes a new key from rng (nil means crypto/rand) and writes it:
// parent directories with mode 0700, the file with mode 0600. created
// reports whether the key is new. It never overwrites a file: if another
// process creates the key at the same moment, the key it wrote is loaded.
func LoadOrCreate(path string, rng io.Reader) (key ed25519.PrivateKey, created bool, err error) {
	key, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	_, key, err = ed25519.GenerateKey(rng) // nil rng: crypto/rand
	if err != nil {
		return nil, false, fmt.Errorf("identity: make a key: %w", err)
	}
	data, err := formatKeyFile(key)
	if err != nil {
		return nil, false, err
	}
	switch err := writeNew(path, data); {
	case errors.Is(err, fs.ErrExist):
		key, err = Load(path)
		return key, false, err
	case err != nil:
		return nil, false, err
	}
	return key, true, nil
}

// writeNew writes data to a new file at path with mode 0600; it fails
// with fs.ErrExist if path exists.
func writeNew(path string, data []byte) error {
	if err := privfile.Write(path, data, false); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// formatKeyFile is the key file's content for key.
func formatKeyFile(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// parseKeyFile parses a key file's content. Its errors are phrases to
// follow the file's name.
func parseKeyFile(data []byte) (ed25519.PrivateKey, error) {
	// pem.Decode skips any text before a block and any block it cannot
	// read; the file must be one block and nothing else.
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, errors.New("is not a PEM file (it must start with -----BEGIN PRIVATE KEY-----)")
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, errors.New("is not a valid PEM file")
	}
	if bytes.Count(trimmed[:len(trimmed)-len(rest)], []byte("-----BEGIN ")) != 1 {
		return nil, errors.New("starts with a PEM block that cannot be read")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("has data after the PEM block")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("holds a PEM block of type %q, want %q", block.Type, pemType)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("has PEM headers (an encrypted key?): it must be an unencrypted PKCS #8 key")
	}
	// x509.ParsePKCS8PrivateKey ignores data after the DER structure.
	if rest, err := asn1.Unmarshal(block.Bytes, &asn1.RawValue{}); err != nil {
		return nil, errors.New("does not hold a PKCS #8 private key")
	} else if len(rest) != 0 {
		return nil, errors.New("has data after the PKCS #8 key inside the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("does not hold a PKCS #8 private key")
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return nil, errors.New("holds an RSA key, want Ed25519")
	case *ecdsa.PrivateKey:
		return nil, errors.New("holds an ECDSA key, want Ed25519")
	case *ecdh.PrivateKey:
		return nil, errors.New("holds an X25519 key, want Ed25519")
	default:
		return nil, fmt.Errorf("holds a %T key, want Ed25519", k)
	}
}

// Package trust pins peers' identity keys to their nicknames on first
// use, as ssh's known_hosts does for hosts, and tells the chat which of
// the states a peer is in: unencrypted, new, known, verified, or KEY
// CHANGED. It also derives the safety number two people compare out of
// band before they mark each other verified (SafetyNumber).
//
// A Store is the known-peers file of one profile (KnownPeersFile in the
// profile directory), read once by Open and rewritten as a whole on every
// change: to a temporary file in the same directory, then renamed over
// the old one, with mode 0600 in a directory created with mode 0700. The
// store in memory changes only when the write succeeded. A Store has no
// locks: the chat event loop owns it and calls it from one goroutine.
//
// # File format
//
// UTF-8 text. Blank lines and lines whose first non-space character is
// '#' are ignored (and not kept when the file is rewritten). Every other
// line pins one nickname and has four fields separated by spaces:
//
//   - the nickname as a Go-quoted string (strconv.Quote), a valid
//     nickname (protocol.ValidateNickname);
//   - the identity key in protocol wire form (protocol.EncodePublicKey:
//     standard base64 of the 32-byte Ed25519 public key);
//   - "known" (pinned on first use) or "verified" (the user compared the
//     safety number or the fingerprint and trusted the key);
//   - when the key was pinned, in Unix seconds.
//
// For example:
//
//	# comment
//	"alice" 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w0= verified 1795739259
//	"bob smith" AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= known 1795739301
//
// A nickname has at most one pin. A file has at most MaxPins pins and
// MaxFileSize bytes, and no line longer than MaxLineLen bytes. Open
// refuses a file that breaks any rule with an error naming the file and
// the line (FILE:LINE: ...).
package trust

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/parlance-chat/parlance/client/internal/privfile"
	"github.com/parlance-chat/parlance/protocol"
)

// KnownPeersFile is the name of the known-peers file in a profile
// directory.
const KnownPeersFile = "known_peers"

// State is what the store says about a peer's nickname and key.
type State uint8

const (
	// StateUnencrypted: the peer has no key and its nickname is not
	// pinned (an original client).
	StateUnencrypted State = iota
	// StateNew: the nickname was not pinned before this run.
	StateNew
	// StateKnown: the key matches a pin read from the file.
	StateKnown
	// StateVerified: the key matches a pin the user verified.
	StateVerified
	// StateChanged: the nickname is pinned to another key, or the peer
	// shows no key at all. Someone may be impersonating the peer.
	StateChanged
)

func (s State) String() string {
	switch s {
	case StateUnencrypted:
		return "unencrypted"
	case StateNew:
		return "new"
	case StateKnown:
		return "known"
	case StateVerified:
		return "verified"
	case StateChanged:
		return "KEY CHANGED"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Pin binds a nickname to an identity key in wire form.
type Pin struct {
	Nickname string
	Key      string
	Verified bool
	// Since is when the key was pinned, to the second.
	Since time.Time
	// FromDisk: the pin was read from the file when the store was
	// opened, not made during this run.
	FromDisk bool
}

// Store is the set of pins of one profile. Its zero value is not usable:
// use Open or Memory.
type Store struct {
	path string // "" for a store in memory only
	pins map[string]Pin
}

// Open reads the known-peers file at path. A missing file is an empty
// store; the file is created on the first change.
func Open(path string) (*Store, error) {
	s := &Store{path: path, pins: map[string]Pin{}}
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	pins, err := parseKnownPeers(path, data)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	s.pins = pins
	return s, nil
}

// Memory returns an empty store that lives in memory only: its changes
// are never written (Path is "").
func Memory() *Store {
	return &Store{pins: map[string]Pin{}}
}

func readFile(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO would block.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("trust: %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("trust: read %s: %w", path, err)
	}
	return data, nil
}

// Path returns the file the store writes, "" for a store in memory.
func (s *Store) Path() string { return s.path }

// Lookup returns the pin of nick.
func (s *Store) Lookup(nick string) (Pin, bool) {
	p, ok := s.pins[nick]
	return p, ok
}

// Pins returns every pin, sorted by nickname.
func (s *Store) Pins() []Pin {
	out := make([]Pin, 0, len(s.pins))
	for _, p := range s.pins {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Nickname < out[j].Nickname })
	return out
}

// State says what a peer that calls itself nick and shows key (wire
// form; "" for none) is:
//
//   - no key: StateChanged if nick is pinned (the key was stripped, or
//     this is an impostor), else StateUnencrypted;
//   - nick not pinned: StateNew;
//   - nick pinned to key: StateVerified if the pin is verified, else
//     StateKnown if the pin was read from the file, else StateNew (it was
//     pinned during this run);
//   - nick pinned to another key: StateChanged.
func (s *Store) State(nick, key string) State {
	p, pinned := s.pins[nick]
	switch {
	case key == "" && pinned:
		return StateChanged
	case key == "":
		return StateUnencrypted
	case !pinned:
		return StateNew
	case !sameKey(p.Key, key):
		return StateChanged
	case p.Verified:
		return StateVerified
	case p.FromDisk:
		return StateKnown
	default:
		return StateNew
	}
}

// sameKey compares a pinned (canonical) key with one in wire form.
func sameKey(pinned, key string) bool {
	if c, err := canonicalKey(key); err == nil {
		key = c
	}
	return pinned == key
}

// PinFirst pins key to nick if nick has no pin (trust on first use) and
// writes the file. pinned is false, and nothing changes, if nick already
// has a pin, whatever its key.
func (s *Store) PinFirst(nick, key string, now time.Time) (pinned bool, err error) {
	if _, ok := s.pins[nick]; ok {
		return false, nil
	}
	p, err := newPin(nick, key, now)
	if err != nil {
		return false, err
	}
	if err := s.commit(p.Nickname, &p); err != nil {
		return false, err
	}
	return true, nil
}

// Trust accepts key for nick, replacing any pin, marks it verified and
// writes the file. A pin of the same key keeps its time.
func (s *Store) Trust(nick, key string, now time.Time) error {
	p, err := newPin(nick, key, now)
	if err != nil {
		return err
	}
	if old, ok := s.pins[nick]; ok && old.Key == p.Key {
		p = old
	}
	p.Verified = true
	return s.commit(nick, &p)
}

// Forget removes the pin of nick and writes the file; false if there was
// none.
func (s *Store) Forget(nick string) (bool, error) {
	if _, ok := s.pins[nick]; !ok {
		return false, nil
	}
	if err := s.commit(nick, nil); err != nil {
		return false, err
	}
	return true, nil
}

func newPin(nick, key string, now time.Time) (Pin, error) {
	if err := validNickname(nick); err != nil {
		return Pin{}, err
	}
	k, err := canonicalKey(key)
	if err != nil {
		return Pin{}, fmt.Errorf("trust: key for %q: %v", nick, err)
	}
	return Pin{Nickname: nick, Key: k, Since: time.Unix(now.Unix(), 0)}, nil
}

// commit sets (p != nil) or deletes the pin of nick, writes the file, and
// leaves the store as it was if that failed.
func (s *Store) commit(nick string, p *Pin) error {
	old, had := s.pins[nick]
	if p != nil && !had && len(s.pins) >= MaxPins {
		return fmt.Errorf("trust: cannot pin %q: the store already holds %d pins, the most it can", nick, MaxPins)
	}
	if p != nil {
		s.pins[nick] = *p
	} else {
		delete(s.pins, nick)
	}
	if s.path == "" {
		return nil
	}
	if err := writeAtomic(s.path, formatKnownPeers(s.pins)); err != nil {
		if had {
			s.pins[nick] = old
		} else {
			delete(s.pins, nick)
		}
		return err
	}
	return nil
}

// writeAtomic replaces the file at path with data, mode 0600, whole or
// not at all.
func writeAtomic(path string, data []byte) error {
	if err := privfile.Write(path, data, true); err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	return nil
}

func validNickname(nick string) error {
	if err := protocol.ValidateNickname(nick); err != nil {
		return fmt.Errorf("trust: nickname %q: %v", nick, err)
	}
	return nil
}

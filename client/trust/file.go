package trust

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parlance-chat/parlance/protocol"
)

// Limits of a known-peers file. A pin's line is at most about 210 bytes
// (a 32-byte nickname quoted as \x escapes is 130), so MaxPins pins always
// fit in MaxFileSize.
const (
	MaxPins     = 4096
	MaxFileSize = 1 << 20
	MaxLineLen  = 4 << 10
)

const (
	wordKnown    = "known"
	wordVerified = "verified"
)

const lineSyntax = `a pin is: "nickname" key known|verified unix-seconds, as in: "alice" 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w0= known 1795739259`

const fileHeader = `# Parlance known peers: one pinned identity key per nickname.
# "nickname" key known|verified unix-seconds-when-pinned
# Written by parlance; comments here are not kept.
`

// parseKnownPeers parses a known-peers file; name prefixes its errors
// (name:line: ...). The pins it returns have FromDisk set.
func parseKnownPeers(name string, data []byte) (map[string]Pin, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: file is larger than %d MiB", name, MaxFileSize>>20)
	}
	pins := make(map[string]Pin)
	lineOf := make(map[string]int)
	text := string(data)
	for n := 1; text != ""; n++ {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		if len(line) > MaxLineLen {
			return nil, fmt.Errorf("%s:%d: line is longer than %d bytes", name, n, MaxLineLen)
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("%s:%d: line is not valid UTF-8", name, n)
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		p, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		if first, ok := lineOf[p.Nickname]; ok {
			return nil, fmt.Errorf("%s:%d: %s is already pinned on line %d: one pin per nickname", name, n, strconv.Quote(p.Nickname), first)
		}
		if len(pins) == MaxPins {
			return nil, fmt.Errorf("%s:%d: more than %d pins", name, n, MaxPins)
		}
		lineOf[p.Nickname] = n
		pins[p.Nickname] = p
	}
	return pins, nil
}

// parseLine parses one pin; line has no surrounding space.
func parseLine(line string) (Pin, error) {
	if line[0] != '"' {
		return Pin{}, errors.New("a pin starts with the nickname in double quotes; " + lineSyntax)
	}
	quoted, err := strconv.QuotedPrefix(line)
	if err != nil {
		return Pin{}, errors.New("the nickname is not a complete Go-quoted string; " + lineSyntax)
	}
	nick, err := strconv.Unquote(quoted)
	if err != nil {
		return Pin{}, errors.New("the nickname is not a valid Go-quoted string; " + lineSyntax)
	}
	if err := protocol.ValidateNickname(nick); err != nil {
		return Pin{}, fmt.Errorf("nickname %s: %v", quoted, err)
	}
	rest := line[len(quoted):]
	if rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return Pin{}, errors.New("want a space after the nickname; " + lineSyntax)
	}
	f := strings.Fields(rest)
	if len(f) != 3 {
		return Pin{}, fmt.Errorf("want 3 fields after the nickname, got %d; %s", len(f), lineSyntax)
	}
	key, err := canonicalKey(f[0])
	if err != nil {
		return Pin{}, fmt.Errorf("key %q: %v", truncate(f[0], 60), err)
	}
	var verified bool
	switch f[1] {
	case wordKnown:
	case wordVerified:
		verified = true
	default:
		return Pin{}, fmt.Errorf("trust must be %q or %q, got %q", wordKnown, wordVerified, truncate(f[1], 20))
	}
	sec, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Pin{}, fmt.Errorf("the time pinned must be an integer (Unix seconds), got %q", truncate(f[2], 30))
	}
	return Pin{Nickname: nick, Key: key, Verified: verified, Since: time.Unix(sec, 0), FromDisk: true}, nil
}

// formatKnownPeers is the file for pins: a header comment, then one line
// per pin, sorted by nickname.
func formatKnownPeers(pins map[string]Pin) []byte {
	nicks := make([]string, 0, len(pins))
	for n := range pins {
		nicks = append(nicks, n)
	}
	sort.Strings(nicks)
	b := make([]byte, 0, len(fileHeader)+len(pins)*100)
	b = append(b, fileHeader...)
	for _, n := range nicks {
		p := pins[n]
		b = strconv.AppendQuote(b, p.Nickname)
		b = append(b, ' ')
		b = append(b, p.Key...)
		if p.Verified {
			b = append(b, " "+wordVerified+" "...)
		} else {
			b = append(b, " "+wordKnown+" "...)
		}
		b = strconv.AppendInt(b, p.Since.Unix(), 10)
		b = append(b, '\n')
	}
	return b
}

// canonicalKey checks a key in wire form and returns it re-encoded: the
// base64 decoder ignores the two unused bits of the last character, so
// four spellings decode to each key.
func canonicalKey(key string) (string, error) {
	k, err := protocol.ParsePublicKey(key)
	if err != nil {
		return "", err
	}
	return protocol.EncodePublicKey(k), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

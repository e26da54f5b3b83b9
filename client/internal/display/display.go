// Package display makes network input safe to print on a terminal and
// formats the chat's lines.
//
// Text from peers may hold anything: ESC and CSI sequences that recolour,
// move the cursor or retitle the window, C1 controls (a single byte 0x9b is
// a CSI on some terminals), a carriage return that overwrites the visible
// line, or bidirectional overrides that make text read differently than it
// is. Sanitize turns every such character into a visible escape, so what
// reaches the terminal is only printable text.
package display

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sanitize returns s with every character that could control a terminal
// or reorder text replaced by a visible escape: C0 controls and DEL as
// \x1b, \r, \n, \t and the like, C1 controls as \u009b, Unicode format
// characters (bidi overrides and isolates, zero-width characters) and line
// and paragraph separators as \u202e, and invalid UTF-8 bytes as \xff.
// A backslash is kept as is.
func Sanitize(s string) string {
	if isClean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// unsafe reports runes other than ASCII controls that must not reach a
// terminal as they are.
func unsafe(r rune) bool {
	return (r >= 0x80 && r <= 0x9f) || // C1 controls
		(unicode.Is(unicode.Cf, r) && r != 0x200d) || // format (except the emoji joiner): bidi embeddings, overrides, isolates, marks, ZW*, BOM
		r == 0x2028 || r == 0x2029 || // line and paragraph separators
		unicode.Is(unicode.Co, r) // private use
}

func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// MessageLine formats a received message as the original does,
// "[HH:MM:SS] alice: hello bob", with the time in loc and the nickname and
// text sanitised.
func MessageLine(t time.Time, loc *time.Location, from, text string) string {
	return MarkedMessageLine(t, loc, "", from, text)
}

// MarkedMessageLine is MessageLine with a mark (such as "(plain)") before
// the sender, so the line keeps its "nick: text" shape:
// "[12:00:01] (plain) bob: hi". An empty mark gives MessageLine's line.
func MarkedMessageLine(t time.Time, loc *time.Location, mark, from, text string) string {
	if mark == "" {
		return fmt.Sprintf("[%s] %s: %s", t.In(loc).Format("15:04:05"), Sanitize(from), Sanitize(text))
	}
	return fmt.Sprintf("[%s] %s %s: %s", t.In(loc).Format("15:04:05"), Sanitize(mark), Sanitize(from), Sanitize(text))
}

package display

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"pgregory.net/rapid"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain ASCII is kept", "hello bob", "hello bob"},
		{"UTF-8 text is kept", "héllo 世界 👋", "héllo 世界 👋"},
		{"emoji joiner is kept", "👨\u200d👩", "👨\u200d👩"},
		{"ESC and a CSI colour sequence", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"OSC window title", "\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"carriage return cannot overwrite the line", "ok\rEVIL", `ok\rEVIL`},
		{"newline and tab", "a\nb\tc", `a\nb\tc`},
		{"NUL and DEL", "a\x00b\x7f", `a\x00b\x7f`},
		{"C1 CSI as a rune", "x\u009b31m", `x\u009b31m`},
		{"C1 NEL", "x\u0085y", `x\u0085y`},
		{"bidi override", "abc\u202edcba", `abc\u202edcba`},
		{"bidi isolate", "\u2066x\u2069", `\u2066x\u2069`},
		{"zero-width space", "a\u200bb", `a\u200bb`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid UTF-8 byte", "a\xffb", `a\xffb`},
		{"backslash kept", `C:\path`, `C:\path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sanitize(tt.in); got != tt.want {
				t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// Whatever goes in, what comes out is valid UTF-8 with no control or
// format character (the emoji joiner aside).
func TestSanitizeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := rapid.OneOf(rapid.String(), rapid.StringOf(rapid.RuneFrom(nil, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)),
			rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) })).Draw(t, "in")
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q: %q", in, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || (unicode.Is(unicode.Cf, r) && r != 0x200d) || r == 0x2028 || r == 0x2029 {
				t.Fatalf("Sanitize(%q) = %q keeps %U", in, out, r)
			}
		}
		if Sanitize(out) != out && !strings.Contains(in, "\u200d") {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, Sanitize(out))
		}
	})
}

func TestMessageLine(t *testing.T) {
	loc := time.FixedZone("X", 2*3600)
	at := time.Date(2026, 1, 2, 10, 4, 5, 0, time.UTC)
	got := MessageLine(at, loc, "ali\x1bce", "hi\x1b[2J")
	if want := `[12:04:05] ali\x1bce: hi\x1b[2J`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

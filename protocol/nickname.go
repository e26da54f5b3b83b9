package protocol

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNicknameLen is the longest nickname in bytes, as in the original.
const MaxNicknameLen = 32

// ValidateNickname applies the original's nickname rules: 1 to 32 bytes, not
// only whitespace, no leading or trailing whitespace, no newline, no control
// characters. Nicknames are not unique. The error texts are the ones users
// see.
func ValidateNickname(nick string) error {
	switch {
	case nick == "":
		return errors.New("Nickname cannot be empty")
	case len(nick) > MaxNicknameLen:
		return errors.New("Nickname cannot be longer than 32 bytes")
	case !utf8.ValidString(nick):
		return errors.New("Nickname must be valid UTF-8")
	case strings.TrimSpace(nick) == "":
		return errors.New("Nickname cannot be only whitespace")
	case strings.TrimSpace(nick) != nick:
		return errors.New("Nickname cannot start or end with whitespace")
	case strings.ContainsAny(nick, "\n\r"):
		return errors.New("Nickname cannot contain newlines")
	case strings.IndexFunc(nick, unicode.IsControl) >= 0:
		return errors.New("Nickname cannot contain control characters")
	}
	return nil
}

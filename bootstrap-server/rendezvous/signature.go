package rendezvous

import (
	"errors"
	"fmt"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// SignatureWindow bounds how far the ts of a signed register may be from
// the server's clock, in either direction. The signature covers ts, so
// the window limits how long a captured registration can be replayed
// (from another connection it would list the key at the replayer's
// address), while it allows the clock skew of ordinary machines: seconds
// with NTP, minutes without.
const SignatureWindow = 10 * time.Minute

// checkRegister checks a register's identity fields. For a register
// without a key it returns ok with key "": the original's behaviour. For
// a signed one it returns the key to list, or, when the ts is outside
// SignatureWindow of now or the signature does not verify, ok false with
// the error kind and the text that follows protocol.ErrTextInvalidPrefix.
// It verifies a signature (tens of microseconds), so callers do not hold
// Server.mu.
func checkRegister(m *protocol.Register, now time.Time) (key string, ok bool, kind, why string) {
	if !m.Signed() {
		return "", true, "", ""
	}
	// In milliseconds, as on the wire: no time.Time arithmetic to
	// saturate with an absurd ts.
	if d, w := now.UnixMilli()-m.TS, SignatureWindow.Milliseconds(); d > w || d < -w {
		return "", false, errKindStaleSignature, fmt.Sprintf(ErrTextStaleSignature, SignatureWindow)
	}
	if err := m.Verify(); err != nil {
		if !errors.Is(err, protocol.ErrBadSignature) {
			// The decoder has checked the shape: this is a bug.
			return "", false, errKindInternal, "register: " + err.Error()
		}
		return "", false, errKindBadSignature, ErrTextBadSignature
	}
	return m.Key, true, "", ""
}

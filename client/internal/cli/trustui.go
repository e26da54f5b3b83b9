package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/internal/display"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// messageMark is the mark in front of a received message's sender, so the
// line keeps its "nick: text" shape: "(plain)" for a message that came
// unencrypted (anyone can write it), "(KEY CHANGED)" for one whose key is
// not the one pinned for its nickname, "(invalid name)" for a sender name
// that is no valid nickname.
func messageMark(m chat.Message) string {
	var marks []string
	switch {
	case !m.Encrypted:
		marks = append(marks, "plain")
	case m.Trust == trust.StateChanged:
		marks = append(marks, "KEY CHANGED")
	}
	if m.InvalidFrom {
		marks = append(marks, "invalid name")
	}
	if len(marks) == 0 {
		return ""
	}
	return "(" + strings.Join(marks, ", ") + ")"
}

// plainNote is said once per peer, before the outcome of the first message
// sent to it unencrypted.
func (ui *chatUI) plainNote(res chat.SendResult, err error) string {
	if err != nil || res.Encrypted {
		return ""
	}
	sel := registry.Selector(res.Peer)
	ui.mu.Lock()
	defer ui.mu.Unlock()
	if ui.plainTold[sel] {
		return ""
	}
	ui.plainTold[sel] = true
	return fmt.Sprintf("Note: %s is an original client without encryption: what you send it can be read on the network, and its messages are marked (plain).", display.Sanitize(sel))
}

func (ui *chatUI) whoami() string {
	return fmt.Sprintf(`You are %s
  fingerprint  %s
  mode         %s
  port         %d
  data dir     %s
  identity     %s`,
		display.Sanitize(ui.node.Nickname()), ui.node.Fingerprint(), ui.mode, ui.node.Port(),
		display.Sanitize(ui.prof.dir), display.Sanitize(ui.prof.identityFile))
}

func verifyText(v chat.Verification, err error) string {
	if err != nil {
		return peerCommandError(err)
	}
	name := display.Sanitize(v.Peer.Nickname)
	var b strings.Builder
	fmt.Fprintf(&b, "Compare these with %s over a channel you trust (in person, by phone):\n", name)
	fmt.Fprintf(&b, "  %-14s %s\n", name+":", v.Peer.Fingerprint)
	fmt.Fprintf(&b, "  %-14s %s\n", "you:", v.Own)
	fmt.Fprintf(&b, "  safety number  %s\n", v.SafetyNumber)
	switch {
	case v.Pinned == "":
		fmt.Fprintf(&b, "%s's key is not pinned yet. If they match, type /trust %s", name, display.Sanitize(registry.Selector(v.Peer.Peer)))
	case v.Pinned != v.Peer.Fingerprint:
		fmt.Fprintf(&b, "KEY CHANGED: %s was pinned to %s.\nIf the new one matches, type /trust %s#%s", name, v.Pinned, name, v.Peer.Fingerprint[:7])
	case v.PinnedVerified:
		fmt.Fprintf(&b, "%s is already verified.", name)
	default:
		fmt.Fprintf(&b, "If they match, type /trust %s to mark %s verified.", name, name)
	}
	return b.String()
}

func trustText(st chat.PeerStatus, err error) string {
	if err != nil {
		return peerCommandError(err)
	}
	return fmt.Sprintf("%s (%s) is now verified.", display.Sanitize(st.Nickname), st.Fingerprint)
}

func forgetText(name string, ok bool, err error) string {
	switch {
	case err != nil:
		return "Not forgotten: " + display.Sanitize(err.Error())
	case !ok:
		return fmt.Sprintf("No key is pinned for %s.", display.Sanitize(name))
	default:
		return fmt.Sprintf("Forgot the key pinned for %s; the next session pins a key again.", display.Sanitize(name))
	}
}

func peerCommandError(err error) string {
	var amb *registry.AmbiguousError
	switch {
	case errors.As(err, &amb):
		sel := make([]string, len(amb.Candidates))
		for i, p := range amb.Candidates {
			sel[i] = display.Sanitize(p.Nickname + "#" + fpOrInstance(p))
		}
		return fmt.Sprintf("%d peers are called %s: %s. Pick one.", len(sel), display.Sanitize(amb.Name), strings.Join(sel, ", "))
	case errors.Is(err, registry.ErrUnknownPeer):
		return "No such peer. /peers lists the peers found."
	}
	return display.Sanitize(strings.TrimPrefix(err.Error(), "chat: "))
}

func fpOrInstance(p registry.Peer) string {
	if fp := protocol.KeyFingerprint(p.PubKey); fp != "" {
		return fp[:7]
	}
	return p.Instance
}

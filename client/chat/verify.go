package chat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// MaxClockSkew bounds how far the signing time of an announce may be from
// this node's clock. A captured announce replayed later than this is
// refused even by a node that never saw a newer one; within it, a replay
// is refused because the node keeps the newest signing time per key.
const MaxClockSkew = 10 * time.Minute

// errReplay marks an announce that is not newer than one already seen
// from its key: a duplicate datagram, or a replay. Logged quietly.
var errReplay = errors.New("not newer than the last announce signed by its key (a duplicate or a replay)")

// checkAnnounce decides whether an announce may change the registry.
//
// An unsigned announce is an original peer's, unless it claims the
// instance of a peer that signs: then someone stripped the key, and it is
// refused. A signed announce that only refreshes what is known (same
// instance, key, nickname, port, caps and rooms) is taken without checking
// the signature: a forged refresh can only keep a peer listed a little
// longer, and checking each of them would cost a signature verification
// per peer per announce interval. Anything else it would change (a new
// peer, a new address, nickname, caps, rooms, key or instance) needs a
// valid signature and a
// signing time newer than the last seen from that key and within
// MaxClockSkew of ours, and a new address must not be a second one for a
// run (key and instance) already listed elsewhere.
func (ls *loopState) checkAnnounce(now time.Time, o registry.Observation, m *protocol.Announce) error {
	old, known := ls.reg.Get(o.Key())
	if !m.Signed() {
		if o.Instance == "" {
			return nil // an original peer's
		}
		// Instance ids are random per run: an unsigned announce that
		// names the instance of a peer that signs, wherever it comes
		// from, had its key stripped.
		for _, p := range ls.reg.List() {
			if p.Instance == o.Instance && p.PubKey != "" {
				return fmt.Errorf("unsigned announce for %s, which signs its announces (key stripped?)", registry.Selector(p))
			}
		}
		return nil
	}
	if m.TS <= ls.lastSigned[m.Key] {
		return errReplay
	}
	if known && old.Instance == o.Instance && old.PubKey != o.PubKey {
		return fmt.Errorf("announce for %s with a key other than its own", registry.Selector(old))
	}
	if known && old.Instance == o.Instance && old.PubKey == o.PubKey && old.Nickname == o.Nickname &&
		old.Addr == o.Addr && slices.Equal(old.Caps, o.Caps) && slices.Equal(old.Rooms, o.Rooms) {
		return nil // a refresh; a change of rooms is not one, or anyone could forge tags into it
	}
	if !known {
		// A run of a peer (its instance) listens on one address: the same
		// key and instance announced from another address is a copy of
		// its announce sent from elsewhere, which its signature (not
		// covering the source address) cannot tell. A peer that really
		// moved is taken once its old entry has expired.
		for _, p := range ls.reg.List() {
			if p.Source == registry.SourceLAN && p.Instance == o.Instance && p.PubKey == o.PubKey {
				return fmt.Errorf("announce of %s from %s: that peer is at %s (a replay from another address?)", p.Nickname, o.Addr, p.Addr)
			}
		}
	}
	if d := m.Time().Sub(now); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("signed %v from our clock, more than %v", d.Round(time.Second), MaxClockSkew)
	}
	if err := m.Verify(); err != nil {
		return err
	}
	if len(ls.lastSigned) >= 2*registry.DefaultMaxPeers {
		clear(ls.lastSigned)
	}
	ls.lastSigned[m.Key] = m.TS
	return nil
}

// checkGoodbye refuses a goodbye for a peer that signs unless the goodbye
// is signed by that peer's key: otherwise anyone could make a peer vanish.
func (ls *loopState) checkGoodbye(src netip.Addr, m *protocol.Goodbye) error {
	if m.Instance == "" {
		return nil // an original peer's: it has no key
	}
	for _, p := range ls.reg.List() {
		if p.Source != registry.SourceLAN || p.Addr.Addr() != src || p.Instance != m.Instance || p.PubKey == "" {
			continue
		}
		if m.Key != p.PubKey {
			return fmt.Errorf("goodbye for %s is not signed by its key", registry.Selector(p))
		}
		if err := m.Verify(); err != nil {
			return fmt.Errorf("goodbye for %s: %w", registry.Selector(p), err)
		}
	}
	return nil
}

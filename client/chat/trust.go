package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// PeerStatus is a peer as /peers shows it: the registry's entry, the
// trust state of its key and the key's fingerprint ("" without a key).
type PeerStatus struct {
	registry.Peer
	Trust       trust.State
	Fingerprint string
	// Path is how the last session to the peer went: PathDirect,
	// PathRelayed, or "" when there was none.
	Path string
}

// PeerStatuses returns the known peers with their trust states, ordered
// as Peers. It returns nil once the node is closed.
func (n *Node) PeerStatuses() []PeerStatus {
	var list []PeerStatus
	_ = n.call(context.Background(), func(ls *loopState) {
		for _, p := range ls.reg.List() {
			list = append(list, ls.status(p))
		}
	})
	n.mu.Lock()
	for i := range list {
		list[i].Path = n.paths[list[i].Key]
	}
	n.mu.Unlock()
	return list
}

func (ls *loopState) status(p registry.Peer) PeerStatus {
	return PeerStatus{Peer: p, Trust: ls.trust.State(p.Nickname, sessionKey(p)), Fingerprint: protocol.KeyFingerprint(p.PubKey)}
}

// sessionKey is the key a session with p must prove: its announced key if
// it can run a session, else "" (it is treated as a peer without a key).
func sessionKey(p registry.Peer) string {
	if encrypts(p) {
		return p.PubKey
	}
	return ""
}

// resolveTrusted finds the peer a user means by name (see
// registry.Resolve) and refuses one that must not get the message: a peer
// whose key is not the one pinned for its nickname, a peer without a key
// whose nickname is pinned to one (a downgrade), and, with
// RequireEncryption, any peer without a key. Among several peers sharing
// a pinned nickname, the one with the pinned key is the one meant.
func (ls *loopState) resolveTrusted(name string) (registry.Peer, trust.State, error) {
	p, err := ls.reg.Resolve(name)
	var amb *registry.AmbiguousError
	if errors.As(err, &amb) {
		if same, ok := oneIdentity(amb.Candidates); ok {
			// One key behind every candidate: one identity, seen at
			// several addresses, as a peer that crashed and came back
			// on another port is until its old entry expires. The
			// newest entry is the one that runs.
			p, err = same, nil
		}
	}
	if errors.As(err, &amb) {
		var pinned []registry.Peer
		for _, c := range amb.Candidates {
			if pin, ok := ls.trust.Lookup(c.Nickname); ok && sessionKey(c) == pin.Key {
				pinned = append(pinned, c)
			}
		}
		switch len(pinned) {
		case 0:
			return registry.Peer{}, 0, err
		case 1:
			p, err = pinned[0], nil
		default:
			return registry.Peer{}, 0, &registry.AmbiguousError{Name: amb.Name, Candidates: pinned}
		}
	}
	if err != nil {
		return registry.Peer{}, 0, err
	}
	key := sessionKey(p)
	state := ls.trust.State(p.Nickname, key)
	pin, pinned := ls.trust.Lookup(p.Nickname)
	switch {
	case pinned && key != "" && pin.Key != key:
		return p, state, fmt.Errorf("%w: %s is pinned to key %s, but this peer has key %s; compare with /verify %s, accept with /trust %s#%s",
			ErrKeyChanged, p.Nickname, shortFP(pin.Key), shortFP(key), p.Nickname, p.Nickname, shortFP(key))
	case pinned && key == "":
		return p, state, fmt.Errorf("%w: %s (key %s) now announces none, as an attacker stripping it would make it; not sending it plaintext",
			ErrDowngrade, registry.Selector(p), shortFP(pin.Key))
	case key == "" && ls.n.cfg.RequireEncryption:
		return p, state, fmt.Errorf("%w: %s has no key (an original client), and encryption is required", ErrUnencrypted, registry.Selector(p))
	}
	return p, state, nil
}

// oneIdentity reports whether every candidate proves the same key, and
// returns the one seen last.
func oneIdentity(cands []registry.Peer) (registry.Peer, bool) {
	if len(cands) == 0 || sessionKey(cands[0]) == "" {
		return registry.Peer{}, false
	}
	newest := cands[0]
	for _, c := range cands[1:] {
		if sessionKey(c) != sessionKey(newest) {
			return registry.Peer{}, false
		}
		if c.LastSeen.After(newest.LastSeen) {
			newest = c
		}
	}
	return newest, true
}

func shortFP(key string) string {
	fp := protocol.KeyFingerprint(key)
	if fp == "" {
		return "(none)"
	}
	return fp[:7]
}

// pinFirst pins nickname to key if the nickname has no pin yet: trust on
// first use, called after a successful session. The user is told.
func (n *Node) pinFirst(nickname, key string) {
	_ = n.call(context.Background(), func(ls *loopState) {
		pinned, err := ls.trust.PinFirst(nickname, key, time.Now())
		switch {
		case err != nil:
			n.log.Error("known-peers file not written", "err", err)
			n.emit(Event{Kind: EventSecurity, Time: time.Now(), Err: err, Text: "could not save the key of " + nickname + ": " + err.Error()})
		case pinned:
			n.log.Info("key pinned", "peer", nickname, "fingerprint", protocol.KeyFingerprint(key))
		}
	})
}

// Errors of Trust and Verify.
var ErrNoKey = errors.New("chat: peer has no key")

// Verification is what /verify shows: both fingerprints and the safety
// number of the two keys.
type Verification struct {
	Peer           PeerStatus
	Pinned         string // the pinned key's fingerprint, "" if none
	Own            string // this node's fingerprint
	SafetyNumber   string
	PinnedVerified bool
}

// Verify returns what a user compares out of band with the peer called
// name (a nickname or selector).
func (n *Node) Verify(name string) (Verification, error) {
	var v Verification
	var err error
	if cerr := n.call(context.Background(), func(ls *loopState) {
		var p registry.Peer
		if p, err = ls.resolveForTrust(name); err != nil {
			return
		}
		v.Peer = ls.status(p)
		v.Own = n.Fingerprint()
		if pin, ok := ls.trust.Lookup(p.Nickname); ok {
			v.Pinned, v.PinnedVerified = protocol.KeyFingerprint(pin.Key), pin.Verified
		}
		own, _ := protocol.ParsePublicKey(n.pubKey)
		theirs, _ := protocol.ParsePublicKey(p.PubKey)
		v.SafetyNumber = trust.SafetyNumber(own, theirs)
	}); cerr != nil {
		return v, cerr
	}
	return v, err
}

// Trust accepts the key of the peer called name for its nickname and
// marks it verified. When the key differs from the pinned one, name must
// select the peer by its fingerprint (alice#K3F9ABC), so that a new key is
// never accepted by a bare nickname.
func (n *Node) Trust(name string) (PeerStatus, error) {
	var st PeerStatus
	var err error
	if cerr := n.call(context.Background(), func(ls *loopState) {
		var p registry.Peer
		if p, err = ls.resolveForTrust(name); err != nil {
			return
		}
		if pin, ok := ls.trust.Lookup(p.Nickname); ok && pin.Key != p.PubKey && !selectsByFingerprint(name, p) {
			err = fmt.Errorf("%w: %s is pinned to key %s; to accept key %s instead, type /trust %s#%s",
				ErrKeyChanged, p.Nickname, shortFP(pin.Key), shortFP(p.PubKey), p.Nickname, shortFP(p.PubKey))
			return
		}
		if err = ls.trust.Trust(p.Nickname, p.PubKey, time.Now()); err != nil {
			return
		}
		st = ls.status(p)
	}); cerr != nil {
		return st, cerr
	}
	return st, err
}

// Forget removes the pin of nickname; it reports whether there was one.
func (n *Node) Forget(nickname string) (bool, error) {
	var ok bool
	var err error
	if cerr := n.call(context.Background(), func(ls *loopState) { ok, err = ls.trust.Forget(nickname) }); cerr != nil {
		return false, cerr
	}
	return ok, err
}

// resolveForTrust finds a peer with a key by name. When a nickname is
// shared, the candidates that are not the pinned key are the ones a user
// wants to look at, so an ambiguity among them is reported as is.
func (ls *loopState) resolveForTrust(name string) (registry.Peer, error) {
	p, err := ls.reg.Resolve(name)
	if err != nil {
		return p, err
	}
	if sessionKey(p) == "" {
		return p, fmt.Errorf("%w: %s is an original client or announces no key", ErrNoKey, registry.Selector(p))
	}
	return p, nil
}

// selectsByFingerprint reports whether name picks p by a fingerprint
// prefix (nick#FP...), not only by nickname, address or instance.
func selectsByFingerprint(name string, p registry.Peer) bool {
	i := strings.LastIndexByte(name, '#')
	if i < 0 {
		return false
	}
	prefix, ok := protocol.NormalizeFingerprint(name[i+1:])
	if !ok {
		return false
	}
	fp, _ := protocol.NormalizeFingerprint(protocol.KeyFingerprint(p.PubKey))
	return len(prefix) >= 4 && strings.HasPrefix(fp, prefix)
}

// Package registry is the peer registry of a Parlance node as a pure state
// machine: it never reads the clock or touches the network. The caller feeds
// it what it heard (announces, goodbyes, bootstrap server lists) together
// with the current time, and asks it to expire peers at a time of its
// choosing.
//
// # Identity
//
// A peer is keyed by where it can be reached, never by nickname: a LAN peer
// by the announce's source IP and tcp_port ("lan:ip:port"). Two peers named
// bob are two entries. A process holds its TCP port exclusively, so an
// announce from a known address with a new instance id means that peer
// restarted: the entry is replaced (a Restarted change). The registry
// ignores announces that carry its own instance id, so a node never lists
// itself, even when another peer shares its nickname.
//
// A peer learnt from a bootstrap server is keyed by its instance id
// ("inst:<instance>") when it has one, and by the server's peer_id
// ("id:<peer_id>") otherwise (original clients send no instance). A peer_id
// names a registration, not a process: a restarted server hands every
// client a new one. Keying by instance keeps such a peer one entry across
// the restart; seeing it with a new peer_id (or address) updates the entry
// (an Updated change), it does not leave and join again. RemoveID removes a
// bootstrap peer by the peer_id the server's peer_left names.
//
// # Expiry
//
// LAN peers expire Timeout (default 15 s) after their last announce; a
// goodbye removes one at once. Bootstrap peers do not time out here: the
// server expires them, and the caller mirrors its lists with Sync and
// RemoveID.
//
// # Bound
//
// The registry holds at most MaxPeers entries (default 4,096). At the bound
// a new peer is refused with ErrFull while known peers keep being refreshed,
// so an announce flood from forged addresses cannot grow memory or push out
// peers already known; room comes back as entries expire or leave.
package registry

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// Defaults for Config.
const (
	DefaultTimeout  = 15 * time.Second
	DefaultMaxPeers = 4096
)

// Errors returned by the registry.
var (
	ErrFull        = errors.New("registry: peer limit reached")
	ErrUnknownPeer = errors.New("registry: unknown peer")
	ErrSelf        = errors.New("registry: own announce")
)

// Source says how a peer was found.
type Source uint8

const (
	// SourceLAN: heard by multicast on the local network.
	SourceLAN Source = iota + 1
	// SourceBootstrap: listed by a bootstrap server.
	SourceBootstrap
)

func (s Source) String() string {
	switch s {
	case SourceLAN:
		return "lan"
	case SourceBootstrap:
		return "bootstrap"
	default:
		return fmt.Sprintf("source(%d)", s)
	}
}

// Key identifies a registry entry.
type Key string

// Peer is one entry of the registry. Values returned by the registry are
// copies; changing them changes nothing.
type Peer struct {
	Key      Key
	Nickname string
	// Addr is where the peer accepts direct messages.
	Addr     netip.AddrPort
	Instance string
	Caps     []string
	// PubKey is the identity key the peer announced (protocol wire form,
	// signature checked by the caller); empty for original peers.
	PubKey string
	// Addrs are other addresses the peer says it accepts messages on (a
	// bootstrap peer's own interface addresses, for peers behind the
	// same NAT); nil for LAN peers.
	Addrs []string
	// Rooms are the peer's room membership tags (protocol wire form,
	// signed with PubKey; see client/room); nil when it announces none.
	Rooms  []string
	Source Source
	// ID is the bootstrap server's peer_id; empty for LAN peers.
	ID        string
	FirstSeen time.Time
	LastSeen  time.Time
}

// Observation is what was heard of a peer.
type Observation struct {
	Source   Source
	Addr     netip.AddrPort
	Nickname string
	Instance string
	Caps     []string
	// PubKey is the announced identity key; empty for original peers.
	PubKey string
	// Addrs are the peer's other addresses (see Peer.Addrs).
	Addrs []string
	// Rooms are the peer's room membership tags (see Peer.Rooms).
	Rooms []string
	// ID is the bootstrap peer_id; required for SourceBootstrap.
	ID string
}

// Key returns the key of the entry the observation refers to: for a
// bootstrap peer its instance id if it has one, else its peer_id; for a LAN
// peer its address.
func (o Observation) Key() Key {
	if o.Source == SourceBootstrap {
		if o.Instance != "" {
			return Key("inst:" + o.Instance)
		}
		return Key("id:" + o.ID)
	}
	return Key("lan:" + o.Addr.String())
}

// ChangeKind says what an operation did to the registry.
type ChangeKind uint8

const (
	// Refreshed: a known peer was seen again, nothing else changed.
	Refreshed ChangeKind = iota
	// Joined: a new peer.
	Joined
	// Updated: a known peer changed nickname, capabilities, rooms,
	// address or (bootstrap) peer_id.
	Updated
	// Restarted: the peer at a known address is a new instance.
	Restarted
	// Left: the peer said goodbye or was removed.
	Left
	// Expired: the peer timed out.
	Expired
)

func (k ChangeKind) String() string {
	return [...]string{"refreshed", "joined", "updated", "restarted", "left", "expired"}[k]
}

// Change reports one effect on one peer. For Restarted, Old is the entry
// that was replaced; for Updated, the entry as it was before.
type Change struct {
	Kind ChangeKind
	Peer Peer
	Old  Peer
}

// Config configures a Registry.
type Config struct {
	// Self is this node's instance id; announces carrying it are ignored.
	Self string
	// Timeout after which a silent LAN peer expires. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxPeers bounds the number of entries. Zero means DefaultMaxPeers.
	MaxPeers int
}

// Registry is the set of known peers. It is not safe for concurrent use: a
// node owns it from one goroutine.
type Registry struct {
	cfg   Config
	peers map[Key]*Peer
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = DefaultMaxPeers
	}
	return &Registry{cfg: cfg, peers: make(map[Key]*Peer)}
}

// Timeout returns the LAN expiry timeout in force.
func (r *Registry) Timeout() time.Duration { return r.cfg.Timeout }

// Len returns the number of peers.
func (r *Registry) Len() int { return len(r.peers) }

// Observe records that a peer was heard at now.
func (r *Registry) Observe(now time.Time, o Observation) (Change, error) {
	if o.Instance != "" && o.Instance == r.cfg.Self {
		return Change{}, ErrSelf
	}
	if o.Source == SourceBootstrap && o.ID == "" {
		return Change{}, errors.New("registry: bootstrap observation without peer id")
	}
	if !o.Addr.IsValid() {
		return Change{}, errors.New("registry: observation without address")
	}
	key := o.Key()
	p, ok := r.peers[key]
	if !ok {
		if len(r.peers) >= r.cfg.MaxPeers {
			return Change{}, fmt.Errorf("%w (%d peers); %s at %s ignored", ErrFull, r.cfg.MaxPeers, o.Nickname, o.Addr)
		}
		p = newPeer(key, now, o)
		r.peers[key] = p
		return Change{Kind: Joined, Peer: p.clone()}, nil
	}
	if p.Instance != o.Instance {
		old := p.clone()
		*p = *newPeer(key, now, o)
		return Change{Kind: Restarted, Peer: p.clone(), Old: old}, nil
	}
	kind := Refreshed
	var old Peer
	if p.Nickname != o.Nickname || !slices.Equal(p.Caps, o.Caps) || p.Addr != o.Addr || p.ID != o.ID || p.PubKey != o.PubKey ||
		!slices.Equal(p.Addrs, o.Addrs) || !slices.Equal(p.Rooms, o.Rooms) {
		kind, old = Updated, p.clone()
		p.Nickname, p.Caps, p.Addr, p.ID, p.PubKey = o.Nickname, slices.Clone(o.Caps), o.Addr, o.ID, o.PubKey
		p.Addrs, p.Rooms = slices.Clone(o.Addrs), slices.Clone(o.Rooms)
	}
	if now.After(p.LastSeen) {
		p.LastSeen = now
	}
	return Change{Kind: kind, Peer: p.clone(), Old: old}, nil
}

func newPeer(key Key, now time.Time, o Observation) *Peer {
	return &Peer{
		Key: key, Nickname: o.Nickname, Addr: o.Addr, Instance: o.Instance,
		Caps: slices.Clone(o.Caps), PubKey: o.PubKey, Addrs: slices.Clone(o.Addrs), Rooms: slices.Clone(o.Rooms), Source: o.Source, ID: o.ID,
		FirstSeen: now, LastSeen: now,
	}
}

// Goodbye removes the LAN peers a goodbye from src refers to: the one with
// the goodbye's instance id, or, from an original peer without instance,
// every peer at that IP with that nickname and no instance.
func (r *Registry) Goodbye(src netip.Addr, nickname, instance string) []Change {
	if instance != "" && instance == r.cfg.Self {
		return nil
	}
	var gone []Change
	for _, key := range r.sortedKeys() {
		p := r.peers[key]
		if p.Source != SourceLAN || p.Addr.Addr() != src || p.Instance != instance {
			continue
		}
		if instance == "" && p.Nickname != nickname {
			continue
		}
		delete(r.peers, key)
		gone = append(gone, Change{Kind: Left, Peer: p.clone()})
	}
	return gone
}

// Remove deletes the entry with key k.
func (r *Registry) Remove(k Key) (Change, bool) {
	p, ok := r.peers[k]
	if !ok {
		return Change{}, false
	}
	delete(r.peers, k)
	return Change{Kind: Left, Peer: p.clone()}, true
}

// RemoveID deletes the bootstrap peer the server calls id, as a peer_left
// asks. Should several entries carry id (a stale one from before a server
// restart that reused it), the one seen last goes.
func (r *Registry) RemoveID(id string) (Change, bool) {
	var found *Peer
	for _, key := range r.sortedKeys() {
		p := r.peers[key]
		if p.Source == SourceBootstrap && p.ID == id && id != "" && (found == nil || p.LastSeen.After(found.LastSeen)) {
			found = p
		}
	}
	if found == nil {
		return Change{}, false
	}
	return r.Remove(found.Key)
}

// RemoveSource deletes every peer found through src, for example when the
// bootstrap server's list is about to be replaced.
func (r *Registry) RemoveSource(src Source) []Change {
	var gone []Change
	for _, key := range r.sortedKeys() {
		if p := r.peers[key]; p.Source == src {
			delete(r.peers, key)
			gone = append(gone, Change{Kind: Left, Peer: p.clone()})
		}
	}
	return gone
}

// Sync makes the bootstrap peers equal to list, as of now: peers missing
// from list (by key: instance id, else peer_id) leave, the others are
// observed, so a known instance under a new peer_id is Updated. It returns
// the changes in a stable order, Refreshed ones omitted.
func (r *Registry) Sync(now time.Time, list []Observation) []Change {
	keep := make(map[Key]bool, len(list))
	for _, o := range list {
		if o.Source == SourceBootstrap {
			keep[o.Key()] = true
		}
	}
	var changes []Change
	for _, key := range r.sortedKeys() {
		if p := r.peers[key]; p.Source == SourceBootstrap && !keep[key] {
			delete(r.peers, key)
			changes = append(changes, Change{Kind: Left, Peer: p.clone()})
		}
	}
	for _, o := range list {
		if o.Source != SourceBootstrap {
			continue
		}
		c, err := r.Observe(now, o)
		if err == nil && c.Kind != Refreshed {
			changes = append(changes, c)
		}
	}
	return changes
}

// Expire removes the LAN peers not heard for Timeout or longer as of now.
func (r *Registry) Expire(now time.Time) []Change {
	var gone []Change
	for _, key := range r.sortedKeys() {
		p := r.peers[key]
		if p.Source == SourceLAN && now.Sub(p.LastSeen) >= r.cfg.Timeout {
			delete(r.peers, key)
			gone = append(gone, Change{Kind: Expired, Peer: p.clone()})
		}
	}
	return gone
}

// NextExpiry returns when the next LAN peer will expire, and false when no
// LAN peer is known.
func (r *Registry) NextExpiry() (time.Time, bool) {
	var next time.Time
	found := false
	for _, p := range r.peers {
		if p.Source != SourceLAN {
			continue
		}
		if t := p.LastSeen.Add(r.cfg.Timeout); !found || t.Before(next) {
			next, found = t, true
		}
	}
	return next, found
}

// Get returns the peer with key k.
func (r *Registry) Get(k Key) (Peer, bool) {
	p, ok := r.peers[k]
	if !ok {
		return Peer{}, false
	}
	return p.clone(), true
}

// List returns every peer, ordered by nickname, then address, then key.
func (r *Registry) List() []Peer {
	list := make([]Peer, 0, len(r.peers))
	for _, p := range r.peers {
		list = append(list, p.clone())
	}
	slices.SortFunc(list, comparePeers)
	return list
}

func comparePeers(a, b Peer) int {
	return cmp.Or(
		strings.Compare(a.Nickname, b.Nickname),
		a.Addr.Compare(b.Addr),
		strings.Compare(string(a.Key), string(b.Key)),
	)
}

// AmbiguousError is returned by Resolve when a name matches several peers.
type AmbiguousError struct {
	Name       string
	Candidates []Peer
}

func (e *AmbiguousError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers are called %s:", len(e.Candidates), e.Name)
	for _, p := range e.Candidates {
		fmt.Fprintf(&b, " %s", Selector(p))
	}
	return b.String()
}

// Selector returns the name that picks p out of peers with the same
// nickname: nickname@ip:port.
func Selector(p Peer) string {
	return p.Nickname + "@" + p.Addr.String()
}

// Resolve finds the one peer a user means by name. name is a nickname, or
// a nickname with a suffix that tells same-named peers apart:
// "bob@10.0.0.2:41135" (address), "bob@10.0.0.2" (IP, if that is enough) or
// "bob#8c1d" (a prefix of the instance id or of the fingerprint of the
// peer's identity key, as protocol.Fingerprint writes it, in any case and
// with or without dashes). A name matching no peer gives
// ErrUnknownPeer; one matching several gives *AmbiguousError listing them.
func (r *Registry) Resolve(name string) (Peer, error) {
	match := func(p *Peer) bool { return p.Nickname == name }
	if _, ok := r.byNickname(name); !ok {
		if nick, addr, found := strings.Cut(name, "@"); found && nick != "" {
			if ap, err := netip.ParseAddrPort(addr); err == nil {
				match = func(p *Peer) bool { return p.Nickname == nick && p.Addr == ap }
			} else if ip, err := netip.ParseAddr(addr); err == nil {
				match = func(p *Peer) bool { return p.Nickname == nick && p.Addr.Addr() == ip }
			}
		} else if i := strings.LastIndexByte(name, '#'); i > 0 && i < len(name)-1 {
			nick, prefix := name[:i], name[i+1:]
			fpPrefix, fpOK := protocol.NormalizeFingerprint(prefix)
			match = func(p *Peer) bool {
				if p.Nickname != nick {
					return false
				}
				if p.Instance != "" && strings.HasPrefix(p.Instance, prefix) {
					return true
				}
				if !fpOK || p.PubKey == "" {
					return false
				}
				fp, _ := protocol.NormalizeFingerprint(protocol.KeyFingerprint(p.PubKey))
				return strings.HasPrefix(fp, fpPrefix)
			}
		}
	}
	var found []Peer
	for _, p := range r.peers {
		if match(p) {
			found = append(found, p.clone())
		}
	}
	switch len(found) {
	case 0:
		return Peer{}, fmt.Errorf("%w: %s", ErrUnknownPeer, name)
	case 1:
		return found[0], nil
	default:
		slices.SortFunc(found, comparePeers)
		return Peer{}, &AmbiguousError{Name: name, Candidates: found}
	}
}

// byNickname reports whether some peer is called exactly nick.
func (r *Registry) byNickname(nick string) (Peer, bool) {
	for _, p := range r.peers {
		if p.Nickname == nick {
			return p.clone(), true
		}
	}
	return Peer{}, false
}

func (r *Registry) sortedKeys() []Key {
	keys := make([]Key, 0, len(r.peers))
	for k := range r.peers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (p *Peer) clone() Peer {
	c := *p
	c.Caps = slices.Clone(p.Caps)
	c.Addrs = slices.Clone(p.Addrs)
	c.Rooms = slices.Clone(p.Rooms)
	return c
}

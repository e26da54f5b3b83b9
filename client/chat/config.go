package chat

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/client/room"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
)

// Mode says how a node finds peers.
type Mode string

const (
	// ModeLocal finds peers on the LAN by UDP multicast. The default.
	ModeLocal Mode = "local"
	// ModeInternet finds peers through a bootstrap server; no multicast
	// socket is opened.
	ModeInternet Mode = "internet"
)

// Defaults for Config.
const (
	DefaultAnnounceInterval   = 5 * time.Second
	DefaultTimeout            = 15 * time.Second
	DefaultDialTimeout        = 5 * time.Second
	DefaultWriteTimeout       = 5 * time.Second
	DefaultAckTimeout         = 5 * time.Second
	DefaultIdleTimeout        = 30 * time.Second
	DefaultReceiveIdleTimeout = 2 * time.Minute
	DefaultBootstrapServer    = "ws://localhost:8080"
)

// Discovery timing that is not configurable: the protocol's, not the
// user's.
const (
	// QueryAnswerMin and QueryAnswerMax bound the random delay before a
	// node answers a query (or a peer new to it) with an announce, so
	// that peers answering one query do not all send at once. The spread
	// within the bounds grows with the number of peers known.
	QueryAnswerMin = 20 * time.Millisecond
	QueryAnswerMax = 120 * time.Millisecond
	// AnnounceJitter is the relative jitter of the steady announce
	// interval: each interval is drawn from [0.9, 1.1] × AnnounceInterval.
	AnnounceJitter = 0.1
)

// StartupBurst lists when, after start, a node announces; it queries at
// the first only. The later announces cover lost first datagrams: a peer
// that had not heard the node answers them as it answers a query.
func StartupBurst() []time.Duration {
	return []time.Duration{0, 300 * time.Millisecond, 1200 * time.Millisecond}
}

// Caps are the capabilities this node advertises.
func Caps() []string {
	return []string{protocol.CapQuery, protocol.CapGoodbye, protocol.CapAck, protocol.CapNoise, protocol.CapRooms}
}

// Config configures a node. Network, Nickname and either Rand or Seed
// matter; every other field has a default.
type Config struct {
	// Network provides every socket. Required: a nil Network is an error,
	// never a silent fallback to real sockets.
	Network Network
	// Nickname is shown to peers; see protocol.ValidateNickname.
	Nickname string
	// Mode is ModeLocal (default) or ModeInternet.
	Mode Mode
	// Interface is the multicast interface; nil means the system's choice.
	Interface *net.Interface

	// AnnounceInterval between steady-state announces (default 5 s).
	AnnounceInterval time.Duration
	// Timeout after which a silent LAN peer is dropped (default 15 s).
	Timeout time.Duration
	// DialTimeout bounds connecting to a peer (default 5 s).
	DialTimeout time.Duration
	// WriteTimeout bounds writing one message (default 5 s).
	WriteTimeout time.Duration
	// AckTimeout bounds waiting for a peer's ack (default 5 s).
	AckTimeout time.Duration
	// IdleTimeout closes a kept-open connection to a peer after this long
	// unused (default 30 s).
	IdleTimeout time.Duration
	// ReceiveIdleTimeout closes an incoming connection silent this long
	// (default 2 min).
	ReceiveIdleTimeout time.Duration

	// BootstrapServers are the WebSocket URLs (ws:// or wss://) of the
	// bootstrap servers of internet mode (default: DefaultBootstrapServer
	// alone). The node uses one at a time, from the first, and moves to
	// the next when it cannot connect or loses the one it uses
	// (client/internal/rendezvous says exactly when); it stays the same
	// node across the switch, with its identity and its queue.
	BootstrapServers []string
	// Namespace is the optional bootstrap namespace (internet mode).
	Namespace string
	// HeartbeatInterval and PeerTimeout are the internet-mode timings of
	// the original's [discovery] section.
	HeartbeatInterval time.Duration
	PeerTimeout       time.Duration

	// Identity is the node's long-term identity key: it signs announces
	// and registrations and authenticates every session. Nil means a
	// fresh key for this run only (tests, embedding); the parlance
	// program passes the profile's key (client/identity).
	Identity ed25519.PrivateKey
	// Trust is the known-peers store that pins nicknames to keys. Nil
	// means a store in memory only, empty at start. The node's event
	// loop owns it: nobody else may use it while the node runs.
	Trust *trust.Store
	// RequireEncryption refuses to send to or accept messages from peers
	// without a key (original clients).
	RequireEncryption bool
	// Store keeps every message sent and received, and the offline
	// queue (client/store). Nil means a store in memory, lost at Close.
	// The caller keeps ownership of a store it passes: it closes it
	// after the node's Close.
	Store *store.Store
	// MessageTTL is how long a message to an unreachable peer waits in
	// the queue before it expires (default 7 days).
	MessageTTL time.Duration

	// RoomRate and RoomBurst bound each author's live messages per room
	// (messages a second, and a burst; defaults DefaultRoomRate and
	// DefaultRoomBurst): past them a member's messages are held back
	// and the user told, and our own posts are refused (ErrRoomRate).
	RoomRate  int
	RoomBurst int
	// RoomHistoryMessages and RoomHistoryAge bound the history a member
	// serves to one that joins late or comes back (defaults 500 messages
	// and 7 days: room.DefaultHistoryMessages, room.DefaultHistoryAge).
	RoomHistoryMessages int
	RoomHistoryAge      time.Duration

	// CryptoRand feeds the identity key made when Identity is nil and
	// the session keys. Nil means crypto/rand; only a simulation passes a
	// seeded reader, so that its runs replay.
	CryptoRand io.Reader

	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Rand is the node's only source of randomness (instance id, message
	// ids, jitter). It is used from the node's event loop only. If nil, a
	// generator is seeded from Seed, or from crypto/rand when Seed is 0.
	Rand *rand.Rand
	// Seed seeds the generator when Rand is nil.
	Seed uint64
}

// Errors of Start and Send. Branch on them with errors.Is.
var (
	ErrNoNetwork = errors.New("chat: Config.Network is required")
	ErrClosed    = errors.New("chat: node closed")
	ErrRefused   = errors.New("chat: connection refused")
	ErrTimeout   = errors.New("chat: timed out")
	ErrTooLong   = errors.New("chat: message too long")
	ErrBroken    = errors.New("chat: connection lost")
	// ErrKeyChanged: the peer's key is not the one pinned for its
	// nickname; nothing is sent until the user trusts the new key.
	ErrKeyChanged = errors.New("chat: key changed")
	// ErrDowngrade: the peer announces no key, but its nickname is pinned
	// to one: plaintext to it is refused.
	ErrDowngrade = errors.New("chat: peer announces no key, but its nickname is pinned to one")
	// ErrUnencrypted: RequireEncryption is set and the peer has no key.
	ErrUnencrypted = errors.New("chat: peer cannot encrypt")
	// ErrKeyMismatch: the peer's handshake proved a key other than the
	// one it announced.
	ErrKeyMismatch = errors.New("chat: peer proved another key than it announced")
)

func (c Config) withDefaults() (Config, error) {
	if c.Network == nil {
		return c, ErrNoNetwork
	}
	if err := protocol.ValidateNickname(c.Nickname); err != nil {
		return c, fmt.Errorf("chat: nickname: %w", err)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeLocal
	case ModeLocal, ModeInternet:
	default:
		return c, fmt.Errorf("chat: mode must be %q or %q, got %q", ModeLocal, ModeInternet, c.Mode)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AnnounceInterval, DefaultAnnounceInterval)
	def(&c.Timeout, DefaultTimeout)
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.AckTimeout, DefaultAckTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.ReceiveIdleTimeout, DefaultReceiveIdleTimeout)
	def(&c.MessageTTL, DefaultMessageTTL)
	if c.MessageTTL <= 2*c.AckTimeout {
		// A message is not written within AckTimeout of its expiry, so
		// that it is never in flight when it is reported expired.
		return c, fmt.Errorf("chat: MessageTTL (%v) must be more than twice AckTimeout (%v)", c.MessageTTL, c.AckTimeout)
	}
	if c.RoomRate <= 0 {
		c.RoomRate = DefaultRoomRate
	}
	if c.RoomBurst <= 0 {
		c.RoomBurst = DefaultRoomBurst
	}
	if c.RoomHistoryMessages <= 0 {
		c.RoomHistoryMessages = room.DefaultHistoryMessages
	}
	def(&c.RoomHistoryAge, room.DefaultHistoryAge)
	def(&c.HeartbeatInterval, 10*time.Second)
	def(&c.PeerTimeout, 30*time.Second)
	if len(c.BootstrapServers) == 0 {
		c.BootstrapServers = []string{DefaultBootstrapServer}
	}
	c.BootstrapServers = slices.Clone(c.BootstrapServers)
	if c.Mode == ModeInternet {
		for _, s := range c.BootstrapServers {
			if u, err := url.Parse(s); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
				return c, fmt.Errorf("chat: bootstrap server %q must be a ws:// or wss:// URL with a host", s)
			}
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.CryptoRand == nil {
		c.CryptoRand = crand.Reader
	}
	if c.Identity == nil {
		_, priv, err := ed25519.GenerateKey(c.CryptoRand)
		if err != nil {
			return c, fmt.Errorf("chat: make an identity key: %w", err)
		}
		c.Identity = priv
	} else if len(c.Identity) != ed25519.PrivateKeySize {
		return c, fmt.Errorf("chat: identity key has %d bytes, want %d", len(c.Identity), ed25519.PrivateKeySize)
	}
	if c.Trust == nil {
		c.Trust = trust.Memory()
	}
	if c.Rand == nil {
		seed := c.Seed
		if seed == 0 {
			var b [8]byte
			_, _ = crand.Read(b[:])
			seed = binary.LittleEndian.Uint64(b[:])
		}
		c.Rand = rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	}
	return c, nil
}

package chat

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

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
	return []string{protocol.CapQuery, protocol.CapGoodbye, protocol.CapAck}
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

	// BootstrapServer is the WebSocket URL used in internet mode.
	BootstrapServer string
	// Namespace is the optional bootstrap namespace (internet mode).
	Namespace string
	// HeartbeatInterval and PeerTimeout are the internet-mode timings of
	// the original's [discovery] section.
	HeartbeatInterval time.Duration
	PeerTimeout       time.Duration

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
	def(&c.HeartbeatInterval, 10*time.Second)
	def(&c.PeerTimeout, 30*time.Second)
	if c.BootstrapServer == "" {
		c.BootstrapServer = DefaultBootstrapServer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
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

package rendezvous

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config. The timing ones are the original server's.
const (
	DefaultExpiry          = 30 * time.Second
	DefaultSweep           = 10 * time.Second
	DefaultPingInterval    = 20 * time.Second
	DefaultReadTimeout     = 60 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMaxFrame        = protocol.MaxClientFrameSize
	DefaultMaxPeers        = 50_000
	DefaultMaxConnsPerIP   = 256
	DefaultMsgRatePerIP    = 50
	DefaultMsgBurstPerIP   = 100
	DefaultMaxQueueBytes   = 2 * protocol.MaxServerFrameSize
	DefaultListCacheMaxAge = time.Second
	DefaultShutdownGrace   = 2 * time.Second

	DefaultRelayStreamsPerPeer = 8
	DefaultRelayPeerRate       = 1 << 20  // bytes per second
	DefaultRelayTotalRate      = 64 << 20 // bytes per second
	DefaultRelayIdleTimeout    = 2 * time.Minute
	DefaultRelayAcceptTimeout  = 10 * time.Second
	DefaultRelayMaxFrame       = protocol.MaxRelayFrameSize
	DefaultRelayWindow         = 256 << 10
)

// Config configures a Server. Every field is optional; the zero value of a
// field means its default. Nothing in the package reads a global: the
// logger, the random source and the metrics registry are handed in here.
type Config struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Rand is the source of peer ids (random UUIDv4s); nil means
	// crypto/rand. Tests pass a seeded reader (for example a
	// math/rand/v2 ChaCha8) so that runs replay exactly.
	Rand io.Reader
	// Registerer receives the server's metrics. Nil means a private
	// registry, never the global default one.
	Registerer prometheus.Registerer
	// Gatherer is what GET /metrics serves. Nil means the private
	// registry, or Registerer when it is also a Gatherer (as a
	// *prometheus.Registry is); otherwise /metrics answers 404.
	Gatherer prometheus.Gatherer

	// MaxFrame bounds one frame from a client; a longer one is answered
	// with an "Invalid message format" error and the connection is
	// closed. Default protocol.MaxClientFrameSize.
	MaxFrame int
	// MaxPeers bounds the registered peers over all namespaces; a register
	// beyond it is answered with an error (see ErrTextServerFull).
	MaxPeers int
	// MaxConnsPerIP bounds the simultaneous connections from one IP
	// address. Negative means no limit.
	MaxConnsPerIP int
	// MsgRatePerIP and MsgBurstPerIP bound the messages per second from
	// one IP address (a token bucket shared by its connections). A
	// negative rate means no limit.
	MsgRatePerIP  float64
	MsgBurstPerIP int
	// MaxQueueBytes bounds what may wait to be written to one connection;
	// a client that reads slower than that is dropped. Frames shared by
	// many connections (peer lists) count fully for each.
	MaxQueueBytes int

	// GoroutinePerConn has Serve wait for every connection on a
	// goroutine of its own, in Go's netpoller. By default, on Linux, a
	// plain TCP listener's connections wait in the server's own event
	// loop instead (loop_linux.go), which costs no goroutine per idle
	// connection; elsewhere, and for TLS, there is no loop.
	GoroutinePerConn bool
	// EventLoops is how many event loops share a listener's connections.
	// 0 means one per four Ps (GOMAXPROCS), at least one: a loop takes
	// about 80 us of one core per register and 15 us per heartbeat (on
	// the machine BENCHMARKS.md was measured on), and every loop more is
	// one more goroutine to wake per burst of reports.
	EventLoops int

	// Expiry removes a peer this long after its register or last
	// heartbeat; Sweep is how often expiry is checked.
	Expiry time.Duration
	Sweep  time.Duration
	// PingInterval: a connection silent this long gets a ping.
	// ReadTimeout: a connection silent this long (no message, no pong) is
	// closed. The sweep checks both, so a silent connection ends between
	// ReadTimeout and ReadTimeout+Sweep after its last message (a relay
	// stream and a closing connection have timeouts of their own).
	// WriteTimeout bounds one write.
	PingInterval time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// ListCacheMaxAge bounds how stale the last_seen values of a cached
	// peer_list may be. Membership changes invalidate the cache at once.
	ListCacheMaxAge time.Duration
	// ShutdownGrace bounds how long Close waits for close frames to go
	// out before it cuts the remaining connections.
	ShutdownGrace time.Duration

	// NoRelay turns the relay off: the server does not list
	// protocol.CapRelay and hands out no relay tokens, so every
	// relay_connect is refused.
	NoRelay bool
	// RelayStreamsPerPeer bounds the relayed streams (pending or open) a
	// registration takes part in, as either end. Negative: no limit.
	RelayStreamsPerPeer int
	// RelayPeerRate bounds, in bytes per second, what one registration
	// sends and receives through the relay, over all its streams;
	// RelayTotalRate bounds all relayed bytes. A stream over a rate is
	// slowed down (TCP backpressure reaches the sender), not refused.
	// Negative: no limit.
	RelayPeerRate  int
	RelayTotalRate int
	// RelayIdleTimeout ends an open relayed stream that forwarded no
	// frame in either direction for this long. RelayAcceptTimeout ends
	// a stream the target has not accepted within it.
	RelayIdleTimeout   time.Duration
	RelayAcceptTimeout time.Duration
	// RelayMaxFrame bounds the payload of one binary frame of a relayed
	// stream. Clients write at most protocol.MaxRelayFrameSize, the
	// default: a lower bound cuts off their streams.
	RelayMaxFrame int
	// RelayWindow bounds, in bytes, what this server holds for one
	// direction of a stream with a peer on another server of the
	// cluster: the sending server sends no more until it is written to
	// the WebSocket here (credit-based flow control, xrelay.go). At
	// least twice RelayMaxFrame; servers of a cluster should share both.
	RelayWindow int

	// TrustForwardedFor takes the client address from the last entry of
	// X-Forwarded-For (set it only behind a reverse proxy that sets it).
	TrustForwardedFor bool

	// Cluster, when set, makes this server one of several that serve as
	// one, through NATS (cluster.go). Nil: a server on its own, which
	// starts nothing for a cluster.
	Cluster *ClusterConfig
}

// ClusterConfig joins a Server to a cluster of bootstrap servers. See the
// package doc of internal/cluster for the design and its bounds.
type ClusterConfig struct {
	// NATS lists NATS server URLs (nats://host:4222); any one will do,
	// the client learns the rest of a NATS cluster from it.
	NATS []string
	// Name names this server's NATS connection and its beats, for
	// operators (default "parlance-bootstrap-<server id>").
	Name string
	// Prefix starts every subject the cluster uses (default
	// "parlance.bootstrap"); several clusters can share one NATS with
	// different prefixes.
	Prefix string
	// Options are added to the NATS connection's options (credentials,
	// TLS, or nats.InProcessServer in tests).
	Options []nats.Option
	// Beat is the liveness interval (default 1 s); a server not heard
	// from for MissedBeats beats (default 3) is taken for dead and its
	// peers dropped everywhere else.
	Beat        time.Duration
	MissedBeats int
}

func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&c.Expiry, DefaultExpiry)
	setDur(&c.Sweep, DefaultSweep)
	setDur(&c.PingInterval, DefaultPingInterval)
	setDur(&c.ReadTimeout, DefaultReadTimeout)
	setDur(&c.WriteTimeout, DefaultWriteTimeout)
	setDur(&c.ListCacheMaxAge, DefaultListCacheMaxAge)
	setDur(&c.ShutdownGrace, DefaultShutdownGrace)
	setDur(&c.RelayIdleTimeout, DefaultRelayIdleTimeout)
	setDur(&c.RelayAcceptTimeout, DefaultRelayAcceptTimeout)
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&c.RelayStreamsPerPeer, DefaultRelayStreamsPerPeer)
	setInt(&c.RelayPeerRate, DefaultRelayPeerRate)
	setInt(&c.RelayTotalRate, DefaultRelayTotalRate)
	setInt(&c.RelayMaxFrame, DefaultRelayMaxFrame)
	setInt(&c.RelayWindow, max(DefaultRelayWindow, 2*c.RelayMaxFrame))
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.MsgRatePerIP == 0 {
		c.MsgRatePerIP = DefaultMsgRatePerIP
	}
	if c.MsgBurstPerIP == 0 {
		c.MsgBurstPerIP = DefaultMsgBurstPerIP
	}
	if c.MaxQueueBytes == 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	for name, d := range map[string]time.Duration{
		"Expiry": c.Expiry, "Sweep": c.Sweep, "PingInterval": c.PingInterval,
		"ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout,
		"ListCacheMaxAge": c.ListCacheMaxAge, "ShutdownGrace": c.ShutdownGrace,
		"RelayIdleTimeout": c.RelayIdleTimeout, "RelayAcceptTimeout": c.RelayAcceptTimeout,
	} {
		if d < 0 {
			return c, fmt.Errorf("rendezvous: config: %s must not be negative, got %v", name, d)
		}
	}
	switch {
	case c.MaxFrame < 64:
		return c, fmt.Errorf("rendezvous: config: MaxFrame must be at least 64 bytes, got %d", c.MaxFrame)
	case c.MaxPeers < 0:
		return c, fmt.Errorf("rendezvous: config: MaxPeers must not be negative, got %d", c.MaxPeers)
	case c.EventLoops < 0:
		return c, fmt.Errorf("rendezvous: config: EventLoops must not be negative, got %d", c.EventLoops)
	case c.MaxQueueBytes < 0:
		return c, fmt.Errorf("rendezvous: config: MaxQueueBytes must not be negative, got %d", c.MaxQueueBytes)
	case c.MsgRatePerIP > 0 && c.MsgBurstPerIP < 1:
		return c, fmt.Errorf("rendezvous: config: MsgBurstPerIP must be at least 1, got %d", c.MsgBurstPerIP)
	case c.RelayMaxFrame < 1024:
		return c, fmt.Errorf("rendezvous: config: RelayMaxFrame must be at least 1024 bytes, got %d", c.RelayMaxFrame)
	case c.RelayWindow < 2*c.RelayMaxFrame:
		return c, fmt.Errorf("rendezvous: config: RelayWindow must be at least twice RelayMaxFrame (%d bytes), got %d", 2*c.RelayMaxFrame, c.RelayWindow)
	case c.Cluster != nil && len(c.Cluster.NATS) == 0 && len(c.Cluster.Options) == 0:
		return c, fmt.Errorf("rendezvous: config: Cluster needs at least one NATS URL")
	case c.Cluster != nil && (c.Cluster.Beat < 0 || c.Cluster.MissedBeats < 0):
		return c, fmt.Errorf("rendezvous: config: Cluster.Beat and Cluster.MissedBeats must not be negative")
	case c.PingInterval >= c.ReadTimeout:
		return c, fmt.Errorf("rendezvous: config: PingInterval (%v) must be shorter than ReadTimeout (%v)", c.PingInterval, c.ReadTimeout)
	}
	return c, nil
}

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults for Config.
const (
	DefaultPrefix          = "parlance.bootstrap"
	DefaultBeat            = time.Second
	DefaultMissedBeats     = 3
	DefaultSnapshotTimeout = 5 * time.Second
	// DefaultRejoinGrace covers the spread of the servers' reconnects
	// when NATS comes back (each retries every 0.5-1 s).
	DefaultRejoinGrace = 2 * time.Second
	// DefaultMaxOutbox bounds the joins and leaves waiting to be
	// published; beyond it they are dropped, which the others see as a
	// gap in the sequence and repair with a snapshot.
	DefaultMaxOutbox = 1 << 16
	// inboxSize is the channel the NATS reader delivers to; should the
	// loop fall that far behind, NATS drops messages (a slow consumer),
	// repaired the same way.
	inboxSize = 1 << 16
	// maxPart bounds the encoded peers of one snapshot part (NATS's
	// default max_payload is 1 MiB).
	maxPart = 256 << 10
)

// Config configures a Node.
type Config struct {
	// URLs are the NATS servers (nats://host:port), any of which will do.
	URLs []string
	// Name is the NATS connection's name (seen in NATS's monitoring) and
	// the name in this server's beats; default "parlance-bootstrap-<ID>".
	Name string
	// ID is this server's id: random, new for each process.
	ID string
	// Prefix starts every subject; default DefaultPrefix. Servers of one
	// cluster must share it.
	Prefix string
	// Options are added to the NATS connection's (credentials, TLS, or
	// nats.InProcessServer in tests); they come last and so win.
	Options []nats.Option
	// Beat is the liveness interval (DefaultBeat); a server silent for
	// MissedBeats of them is taken for dead.
	Beat        time.Duration
	MissedBeats int
	// Hold: a server cut off from NATS keeps the others' peers this long.
	Hold time.Duration
	// Relay, when set, receives the relayed-stream messages addressed to
	// this server (relay.go); nil: this server relays no stream to or
	// from another.
	Relay RelayHandler
	// Logger; nil discards.
	Logger *slog.Logger
}

// Host is the server a Node serves: it holds the peers, local and
// remote. The Node calls it from its one goroutine; the host calls the
// Node's Join and Leave under its own lock.
type Host interface {
	// Local returns this server's peers and, read under the same lock
	// that Join and Leave are called under, Node.Seq: the snapshot is
	// exactly the state after that sequence number.
	Local() (seq uint64, peers []Entry)
	// LocalCount returns the number of this server's peers, for beats.
	LocalCount() int
	// Apply carries out an action of the State (Join, Leave, Replace,
	// Drop); Request never reaches it.
	Apply(a Action)
	// Connected reports the connection to NATS going up or down.
	Connected(up bool)
	// Heard reports a message from server, sent on its connection gen
	// (its generation), at time at: the liveness its peers are listed
	// with. A generation newer than the last is a server that
	// reconnected to NATS, and ended its relayed streams meanwhile.
	Heard(server string, gen uint64, at time.Time)
	// Count counts a cluster message by direction ("in", "out") and type,
	// and what went wrong ("dropped", "malformed", ...).
	Count(what, typ string)
}

// Node is one server's membership in the cluster: its NATS connection,
// the liveness beat, the publishing of its own joins and leaves, and the
// State fed with the others'. New starts it; Close stops it.
type Node struct {
	cfg  Config
	host Host
	log  *slog.Logger
	nc   *nats.Conn
	bus  string
	own  string // P.srv.<ID>

	in     chan *nats.Msg
	conn   chan bool // connection went up (true) or down
	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	seq      uint64
	outbox   []*Msg
	up       bool // connected: events are queued, not dropped
	closed   bool
	maxQueue int
	relayOut []relayOut // relay control messages to publish (QueueRelay)

	// relayMu makes Close wait for a relay handler under way; after
	// it, none runs.
	relayMu     sync.RWMutex
	relayClosed bool

	gen atomic.Uint64 // written by the loop only

	// The loop's own.
	st       *State
	nextBeat time.Time
}

// New connects to NATS (in the background: an unreachable NATS is
// retried for ever, and the server serves its own clients meanwhile) and
// starts the node's goroutine.
func New(cfg Config, host Host) (*Node, error) {
	if len(cfg.URLs) == 0 && len(cfg.Options) == 0 {
		return nil, errors.New("cluster: no NATS URL")
	}
	if cfg.ID == "" {
		return nil, errors.New("cluster: no server id")
	}
	if cfg.Name == "" {
		cfg.Name = "parlance-bootstrap-" + cfg.ID
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Beat <= 0 {
		cfg.Beat = DefaultBeat
	}
	if cfg.MissedBeats <= 0 {
		cfg.MissedBeats = DefaultMissedBeats
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg: cfg, host: host, log: cfg.Logger,
		bus:      cfg.Prefix + "." + subjBus,
		own:      cfg.Prefix + "." + subjSrv + "." + cfg.ID,
		in:       make(chan *nats.Msg, inboxSize),
		conn:     make(chan bool, 16),
		wake:     make(chan struct{}, 1),
		maxQueue: DefaultMaxOutbox,
		st: NewState(cfg.ID, Timing{
			DeadAfter:       time.Duration(cfg.MissedBeats) * cfg.Beat,
			SnapshotTimeout: DefaultSnapshotTimeout,
			Hold:            cfg.Hold,
			RejoinGrace:     DefaultRejoinGrace,
			MaxBuffered:     DefaultMaxOutbox,
		}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	notify := func(up bool) func(*nats.Conn) {
		return func(*nats.Conn) {
			select {
			case n.conn <- up:
			case <-ctx.Done():
			}
		}
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.NoEcho(), // a server never hears itself
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(500*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		// While disconnected a publish fails at once instead of being
		// kept: a stale join sent late would be worse than the gap,
		// which a snapshot repairs.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(cfg.Beat * 2),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(notify(true)),
		nats.ReconnectHandler(notify(true)),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("cluster: disconnected from NATS", "err", err)
			notify(false)(nil)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.log.Warn("cluster: NATS error", "err", err)
			if errors.Is(err, nats.ErrSlowConsumer) {
				host.Count("dropped", "slow_consumer")
			}
		}),
	}
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	n.nc = nc
	for _, subj := range []string{n.bus, n.own} {
		if _, err := nc.ChanSubscribe(subj, n.in); err != nil {
			cancel()
			nc.Close()
			return nil, fmt.Errorf("cluster: subscribe %s: %w", subj, err)
		}
	}
	if err := n.subscribeRelay(); err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	if nc.IsConnected() {
		// The connect handler is not called for a connection made at
		// once.
		n.conn <- true
	}
	n.wg.Go(func() { n.loop(ctx) })
	return n, nil
}

// Close stops the node and closes its NATS connection, saying nothing
// of its peers: the others drop them once its beats stop (DeadAfter),
// by when its clients have had time to register with another server.
// Relay messages already queued (the ends of this server's streams) go
// out first, and no relay handler runs once Close returns.
func (n *Node) Close() {
	n.mu.Lock()
	n.closed, n.outbox = true, nil // Join and Leave drop from now on
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	n.flushRelay()
	n.relayMu.Lock()
	n.relayClosed = true
	n.relayMu.Unlock()
	n.nc.Close() // flushes what is buffered
}

// ConnectedURL returns the URL of the NATS server connected to, "" when
// none.
func (n *Node) ConnectedURL() string { return n.nc.ConnectedUrl() }

// ID returns the server's id.
func (n *Node) ID() string { return n.cfg.ID }

// Seq returns the sequence number of the last join or leave queued. The
// host reads it under the lock it queues them under (see Host.Local).
func (n *Node) Seq() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seq
}

// Join queues the publication of a local peer's (new or changed) entry.
// It never blocks.
func (n *Node) Join(ns string, entry []byte) {
	n.queue(&Msg{Type: TypeJoin, NS: ns, Peer: json.RawMessage(entry)})
}

// Leave queues the publication of the end of a local registration.
func (n *Node) Leave(ns, id string) {
	n.queue(&Msg{Type: TypeLeave, NS: ns, ID: id})
}

func (n *Node) queue(m *Msg) {
	n.mu.Lock()
	n.seq++
	m.Seq = n.seq
	if !n.up || n.closed || len(n.outbox) >= n.maxQueue {
		// Dropped: the gap in the sequence tells the others.
		n.mu.Unlock()
		n.host.Count("dropped", m.Type)
		return
	}
	n.outbox = append(n.outbox, m)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// take returns the queued messages and the sequence number that covers
// them and every one dropped before.
func (n *Node) take() ([]*Msg, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.outbox
	n.outbox = nil
	return out, n.seq
}

func (n *Node) loop(ctx context.Context) {
	t := time.NewTicker(n.cfg.Beat / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-n.in:
			n.receive(m)
		case up := <-n.conn:
			n.connection(up)
		case <-n.wake:
			n.flush()
		case now := <-t.C:
			n.do(n.st.Tick(now))
			if !now.Before(n.nextBeat) {
				n.beat(TypeBeat)
			}
		}
	}
}

func (n *Node) connection(up bool) {
	now := time.Now()
	n.mu.Lock()
	was := n.up
	n.up = up
	if !up {
		n.outbox, n.relayOut = nil, nil
	}
	n.mu.Unlock()
	if up == was {
		return
	}
	n.host.Connected(up)
	if !up {
		n.st.Disconnected(now)
		return
	}
	gen := n.gen.Add(1)
	n.log.Info("cluster: connected to NATS", "server", n.cfg.ID, "generation", gen, "url", n.nc.ConnectedUrlRedacted())
	n.beat(TypeHello)
	n.do(n.st.Connected(now))
}

// flush publishes what is queued, in order.
func (n *Node) flush() uint64 {
	out, seq := n.take()
	for _, m := range out {
		n.publish(n.bus, m)
	}
	n.flushRelay()
	return seq
}

// beat publishes a beat or hello, after every queued event so that its
// sequence number is never ahead of what the others can have received.
func (n *Node) beat(typ string) {
	seq := n.flush()
	n.nextBeat = time.Now().Add(n.cfg.Beat)
	n.mu.Lock()
	up := n.up
	n.mu.Unlock()
	if !up {
		return
	}
	count := 0
	if typ == TypeBeat {
		count = n.host.LocalCount()
	}
	n.publish(n.bus, &Msg{Type: typ, Seq: seq, Peers: count, Name: n.cfg.Name})
}

func (n *Node) publish(subj string, m *Msg) {
	m.Server, m.Gen = n.cfg.ID, n.gen.Load()
	b, err := Encode(m)
	if err == nil {
		err = n.nc.Publish(subj, b)
	}
	if err != nil {
		n.host.Count("dropped", m.Type)
		n.log.Debug("cluster: publish failed", "type", m.Type, "err", err)
		return
	}
	n.host.Count("out", m.Type)
}

func (n *Node) receive(nm *nats.Msg) {
	m, err := Decode(nm.Data)
	if err != nil {
		n.host.Count("malformed", "")
		n.log.Warn("cluster: malformed message", "subject", nm.Subject, "err", err)
		return
	}
	if m.Server == n.cfg.ID {
		// NoEcho keeps our own messages away: this is another server
		// with our id, which 64 random bits make all but impossible.
		n.host.Count("malformed", "own_id")
		n.log.Error("cluster: another server uses this server's id", "server", m.Server, "name", m.Name)
		return
	}
	n.host.Count("in", m.Type)
	now := time.Now()
	switch m.Type {
	case TypeSnapReq:
		n.serveSnapshot(m)
	case TypeSnap:
		n.do(n.st.Snapshot(now, m))
		n.host.Heard(m.Server, m.Gen, now)
	default:
		n.do(n.st.Message(now, m))
		n.host.Heard(m.Server, m.Gen, now)
		if m.Type == TypeHello {
			// Answer at once: the newcomer learns of us from this beat
			// and asks for our snapshot.
			n.beat(TypeBeat)
		}
	}
}

func (n *Node) do(acts []Action) {
	for _, a := range acts {
		if a.Kind == Request {
			n.log.Debug("cluster: asking for a snapshot", "server", a.Server, "req", a.Req)
			n.publish(n.cfg.Prefix+"."+subjSrv+"."+a.Server, &Msg{Type: TypeSnapReq, Req: a.Req})
			continue
		}
		if a.Kind == Drop {
			n.log.Info("cluster: dropping a server's peers", "server", a.Server, "reason", a.Reason)
		}
		n.host.Apply(a)
	}
}

// serveSnapshot answers a snapshot request in parts of at most maxPart
// bytes of entries.
func (n *Node) serveSnapshot(req *Msg) {
	n.flush() // the snapshot covers them; send them first anyway
	seq, peers := n.host.Local()
	to := n.cfg.Prefix + "." + subjSrv + "." + req.Server
	var parts [][]WireEntry
	var cur []WireEntry
	size := 0
	for _, p := range peers {
		raw := p.Raw
		if raw == nil {
			b, err := json.Marshal(p.Info)
			if err != nil {
				continue
			}
			raw = b
		}
		if size+len(raw) > maxPart && len(cur) > 0 {
			parts = append(parts, cur)
			cur, size = nil, 0
		}
		cur = append(cur, WireEntry{NS: p.NS, Peer: raw})
		size += len(raw) + len(p.NS) + 16
	}
	parts = append(parts, cur)
	for i, part := range parts {
		n.publish(to, &Msg{Type: TypeSnap, Seq: seq, Req: req.Req, Part: i, Parts: len(parts), Snap: part})
	}
}

package chat

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// Node is a running Parlance node. Its methods are safe for concurrent use.
type Node struct {
	cfg      Config
	log      *slog.Logger
	instance string
	port     uint16
	pubKey   string         // the identity key in wire form
	local    *session.Local // our side of every session

	ln net.Listener
	pc net.PacketConn // nil in internet mode

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the node
	events *eventQueue

	calls     chan loopCall // run on the event loop
	datagrams chan datagram
	loopDone  chan struct{}

	rv rendezvous.Config // internet mode: the bootstrap client's config, for relayed streams

	// roomTags are our room membership tags, sorted (see setRoomTags);
	// nil or empty: none. The slice stored is never changed.
	roomTags atomic.Pointer[[]string]
	// reregister asks the bootstrap client for a fresh register (buffer
	// 1, sent without blocking); nil in local mode.
	reregister chan struct{}
	// announced is the signing time of our last announce, Unix ms (see
	// announceTime).
	announced atomic.Int64

	mu          sync.Mutex // guards the fields below; never held across I/O
	closed      bool
	relayServer string                  // internet mode: the server we are registered with, which relays our streams
	relayToken  string                  // internet mode: from relayServer's registered answer
	publicAddr  string                  // internet mode: where the server saw us
	portChanged bool                    // internet mode: our NAT does not keep ports: no hole punching
	paths       map[registry.Key]string // the path of the last session to each peer
	conns       map[net.Conn]struct{}   // every open TCP conn, to close on shutdown
	pool        map[string]*peerConn    // kept-open conns to ack-capable peers
	outboxes    map[string]*outbox      // by identity key

	store       *store.Store
	ownStore    bool          // opened by Start (in memory): closed by Close
	lastStored  atomic.Int64  // when a message was last stored (Unix ns); 0: indexed since
	outstanding chan struct{} // a slot per Post waiting for its outcome

	// stateVer counts the event loop's changes of the registry and the
	// trust store; resolved is Post's last resolution and the stateVer it
	// was made at. While stateVer holds, a stream of Posts to one name
	// skips the trip to the event loop, which cost each Post two
	// goroutine switches.
	stateVer atomic.Uint64
	resolved atomic.Pointer[resolution]

	rooms *rooms // the joined rooms (rooms.go)

	idMu    sync.Mutex
	idStart uint64 // drawn at Start: the low bits of the run's first id
	lastID  uint64 // the last message id handed out (see nextMessageID)
}

type datagram struct {
	src netip.Addr
	msg protocol.Datagram
}

// Start starts a node: it listens for direct messages on an ephemeral TCP
// port and, in local mode, joins the discovery group and announces itself.
// The node runs until Close (or until ctx is done, after which Close still
// has to be called to wait for it).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger,
		instance:    fmt.Sprintf("%016x", cfg.Rand.Uint64()),
		idStart:     cfg.Rand.Uint64N(1 << 19),
		events:      newEventQueue(),
		calls:       make(chan loopCall),
		datagrams:   make(chan datagram, 64),
		loopDone:    make(chan struct{}),
		conns:       make(map[net.Conn]struct{}),
		pool:        make(map[string]*peerConn),
		paths:       make(map[registry.Key]string),
		outboxes:    make(map[string]*outbox),
		store:       cfg.Store,
		outstanding: make(chan struct{}, MaxOutstanding),
	}
	if n.store == nil {
		st, err := store.OpenMemory(store.Options{})
		if err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
		n.store, n.ownStore = st, true
	}
	started := false
	defer func() {
		if !started && n.ownStore {
			n.store.Close()
		}
	}()
	if err := n.restoreQueue(ctx); err != nil {
		return nil, fmt.Errorf("chat: read the queue: %w", err)
	}
	n.pubKey = protocol.EncodePublicKey(cfg.Identity.Public().(ed25519.PublicKey))
	n.rooms = newRooms(n)
	if err := n.rooms.load(ctx); err != nil {
		return nil, fmt.Errorf("chat: read the joined rooms: %w", err)
	}
	n.log = n.log.With("node", cfg.Nickname, "instance", n.instance)
	if n.local, err = session.NewLocal(cfg.Identity, cfg.Nickname, n.instance, cfg.CryptoRand); err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}

	ln, err := cfg.Network.Listen(ctx, "tcp", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("chat: listen for messages: %w", err)
	}
	tcpAddr, ok := ln.Addr().(*net.TCPAddr)
	if !ok || tcpAddr.Port <= 0 || tcpAddr.Port > 65535 {
		ln.Close()
		return nil, fmt.Errorf("chat: listener address %v is not a TCP address", ln.Addr())
	}
	n.ln, n.port = ln, uint16(tcpAddr.Port)

	if cfg.Mode == ModeLocal {
		pc, err := cfg.Network.ListenMulticastUDP(ctx, "udp4", cfg.Interface, GroupAddr())
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("chat: join discovery group %v: %w", GroupAddr(), err)
		}
		n.pc = pc
	}

	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if cfg.Mode == ModeInternet {
		n.reregister = make(chan struct{}, 1)
	}
	ls := newLoopState(n, time.Now())
	n.spawn(func() { n.events.run(n.ctx) })
	n.spawn(func() { n.acceptLoop() })
	if n.pc != nil {
		n.spawn(func() { n.readDatagrams() })
	}
	if cfg.Mode == ModeInternet {
		if err := n.startInternet(ls); err != nil {
			n.cancel()
			n.shutdownSockets()
			n.wg.Wait()
			return nil, err
		}
	}
	n.spawn(func() { n.loop(ls) })
	n.spawn(n.expireLoop)
	n.spawn(n.rooms.run)
	started = true
	// A canceled parent stops the node as Close does.
	n.spawn(func() {
		select {
		case <-ctx.Done():
			n.cancel()
		case <-n.ctx.Done():
		}
	})
	n.log.Info("node started", "tcp_port", n.port, "mode", string(cfg.Mode))
	return n, nil
}

func (n *Node) spawn(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Instance returns this run's instance id (16 hex digits).
func (n *Node) Instance() string { return n.instance }

// Nickname returns the node's nickname.
func (n *Node) Nickname() string { return n.cfg.Nickname }

// PublicKey returns the node's identity key in protocol wire form.
func (n *Node) PublicKey() string { return n.pubKey }

// Fingerprint returns the fingerprint of the node's identity key.
func (n *Node) Fingerprint() string { return protocol.KeyFingerprint(n.pubKey) }

// Port returns the TCP port the node accepts messages on.
func (n *Node) Port() uint16 { return n.port }

// Events returns the node's events, in order. The channel is closed when
// the node stops. Events are queued (up to 8,192) while nobody reads;
// past that, received messages wait to be read (and are not acknowledged
// until then), while other events are dropped.
func (n *Node) Events() <-chan Event { return n.events.out }

// Peers returns the known peers, ordered by nickname then address. It
// returns nil once the node is closed.
func (n *Node) Peers() []registry.Peer {
	var list []registry.Peer
	_ = n.call(context.Background(), func(ls *loopState) { list = ls.reg.List() })
	return list
}

// Close says goodbye to the peers, closes every socket and waits for every
// goroutine of the node. It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	n.stopIdleTimers()
	n.settleAll()
	if n.ownStore {
		n.ownStore = false
		if err := n.store.Close(); err != nil {
			return fmt.Errorf("chat: close the store: %w", err)
		}
	}
	return nil
}

// call runs f on the event loop and waits for it.
func (n *Node) call(ctx context.Context, f func(*loopState)) error {
	return n.callLoop(ctx, f, false)
}

// read is call for an f that changes neither the registry nor the trust
// store, so that it does not invalidate Post's cached resolution.
func (n *Node) read(ctx context.Context, f func(*loopState)) error {
	return n.callLoop(ctx, f, true)
}

// loopCall is a function for the event loop; read says it changes nothing
// Post's resolution depends on.
type loopCall struct {
	f    func(*loopState)
	read bool
}

func (n *Node) callLoop(ctx context.Context, f func(*loopState), read bool) error {
	done := make(chan struct{})
	select {
	case n.calls <- loopCall{func(ls *loopState) { f(ls); close(done) }, read}:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopDone:
		return ErrClosed
	}
	<-done
	return nil
}

func (n *Node) emit(ev Event) {
	if dropped := n.events.emit(ev); dropped > 0 && dropped&(dropped-1) == 0 {
		n.log.Warn("events dropped: nobody reads Events()", "dropped", dropped)
	}
}

// trackConn registers c to be closed at shutdown; false if the node is
// already closed (c is then closed).
func (n *Node) trackConn(c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c.Close()
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Node) untrackConn(c net.Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	c.Close()
}

// shutdownSockets closes the listener, the discovery socket and every
// connection, which unblocks every goroutine waiting in I/O.
func (n *Node) shutdownSockets() {
	n.mu.Lock()
	n.closed = true
	conns := make([]net.Conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	n.ln.Close()
	if n.pc != nil {
		n.pc.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// readDatagrams decodes discovery datagrams and hands them to the loop.
func (n *Node) readDatagrams() {
	buf := make([]byte, protocol.MaxDatagramSize+1)
	for {
		k, addr, err := n.pc.ReadFrom(buf)
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("discovery read failed", "err", err)
			continue
		}
		src, ok := udpSource(addr)
		if !ok {
			n.log.Debug("datagram from a non-UDP address ignored", "addr", addr)
			continue
		}
		msg, err := protocol.DecodeDatagram(buf[:k])
		if err != nil {
			n.log.Debug("datagram ignored", "from", src, "err", err)
			continue
		}
		select {
		case n.datagrams <- datagram{src: src, msg: msg}:
		case <-n.ctx.Done():
			return
		}
	}
}

func udpSource(a net.Addr) (netip.Addr, bool) {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return ap.Addr().Unmap(), ap.Addr().IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// loopState is owned by the event loop goroutine.
type loopState struct {
	n     *Node
	rnd   *rand.Rand
	reg   *registry.Registry
	trust *trust.Store
	boot  time.Time

	// lastSigned is the newest signing time seen per identity key, so a
	// replayed announce (from anywhere) cannot move a peer. Bounded like
	// the registry: cleared when it grows past twice its bound.
	lastSigned map[string]int64

	burst      []time.Duration // remaining start-up burst offsets
	nextSteady time.Time       // next steady-state announce
	answerAt   time.Time       // pending answer to a query; zero if none
	expiryAt   time.Time       // next registry expiry; zero if none

	updates *updateQueue // rendezvous updates; nil in local mode

	// Internet mode, see BootstrapGrace.
	registered  bool                  // registered with the server before
	graceNext   bool                  // the next Snapshot is the first after registering again
	unconfirmed map[registry.Key]bool // bootstrap peers the server has not listed since
	graceAt     time.Time             // when unconfirmed peers are dropped; zero if none
}

func newLoopState(n *Node, now time.Time) *loopState {
	return &loopState{
		n:          n,
		rnd:        n.cfg.Rand,
		reg:        registry.New(registry.Config{Self: n.instance, Timeout: n.cfg.Timeout}),
		trust:      n.cfg.Trust,
		boot:       now,
		lastSigned: make(map[string]int64),
	}
}

func (ls *loopState) jitter(d time.Duration) time.Duration {
	f := 1 - AnnounceJitter + 2*AnnounceJitter*ls.rnd.Float64()
	return time.Duration(float64(d) * f)
}

// answerSpreadPeers is how many known peers it takes for answers to be
// spread over the whole QueryAnswerMin-QueryAnswerMax window.
const answerSpreadPeers = 16

// answerDelay draws the delay before answering a query or a new peer:
// QueryAnswerMin plus a random spread. The spread keeps the peers that
// answer one query from all sending at once, so it grows with the number
// of peers this node knows (each of them answers too), up to the whole
// window; on a small LAN the answer comes within a few milliseconds of
// QueryAnswerMin, so two peers see each other well under 100 ms.
func (ls *loopState) answerDelay() time.Duration {
	spread := (QueryAnswerMax - QueryAnswerMin) * time.Duration(min(ls.reg.Len()+1, answerSpreadPeers)) / answerSpreadPeers
	return QueryAnswerMin + time.Duration(ls.rnd.Int64N(int64(spread)+1))
}

func (n *Node) loop(ls *loopState) {
	defer close(n.loopDone)
	defer n.shutdownSockets()
	local := n.pc != nil
	if local {
		ls.burst = StartupBurst()
		ls.nextSteady = ls.boot.Add(ls.burst[len(ls.burst)-1]).Add(ls.jitter(n.cfg.AnnounceInterval))
		defer n.sendGoodbye()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if local {
			ls.fire(now)
		} else {
			ls.expireUnconfirmed(now)
		}
		if next, ok := ls.next(); ok {
			timer.Reset(next.Sub(now))
		} else {
			timer.Stop()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-timer.C:
		case d := <-n.datagrams:
			ls.handleDatagram(time.Now(), d)
			n.stateVer.Add(1)
		case c := <-n.calls:
			c.f(ls)
			if !c.read {
				n.stateVer.Add(1)
			}
		case <-ls.updateSignal():
			for _, up := range ls.updates.drain() {
				ls.applyUpdate(time.Now(), up)
			}
			n.stateVer.Add(1)
		}
	}
}

// updateSignal is nil (never ready) in local mode.
func (ls *loopState) updateSignal() <-chan struct{} {
	if ls.updates == nil {
		return nil
	}
	return ls.updates.signal
}

// fire does every discovery action due at now.
func (ls *loopState) fire(now time.Time) {
	n := ls.n
	if len(ls.burst) > 0 && !now.Before(ls.boot.Add(ls.burst[0])) {
		first := len(ls.burst) == len(StartupBurst())
		// Skip burst slots already passed (a stalled loop sends once).
		for len(ls.burst) > 0 && !now.Before(ls.boot.Add(ls.burst[0])) {
			ls.burst = ls.burst[1:]
		}
		n.sendAnnounce("startup")
		if first {
			// One query per start-up: an original peer logs a warning
			// for each. Should it be lost, the later announces still
			// bring answers, since peers answer a peer new to them.
			n.sendDatagram(&protocol.Query{Instance: n.instance})
		}
		ls.answerAt = time.Time{} // this announce answers pending queries
	}
	if !now.Before(ls.nextSteady) {
		n.sendAnnounce("interval")
		ls.nextSteady = now.Add(ls.jitter(n.cfg.AnnounceInterval))
	}
	if !ls.answerAt.IsZero() && !now.Before(ls.answerAt) {
		n.sendAnnounce("answer")
		ls.answerAt = time.Time{}
	}
	if !ls.expiryAt.IsZero() && !now.Before(ls.expiryAt) {
		for _, c := range ls.reg.Expire(now) {
			ls.report(now, c)
		}
		// NextExpiry scans every peer, so it runs only here, when the
		// earliest expiry is due, not on every datagram.
		ls.expiryAt = time.Time{}
		if t, ok := ls.reg.NextExpiry(); ok {
			ls.expiryAt = t
		}
	}
}

// next returns the earliest pending timer.
func (ls *loopState) next() (time.Time, bool) {
	var ts []time.Time
	if ls.n.pc != nil {
		ts = append(ts, ls.nextSteady)
		if len(ls.burst) > 0 {
			ts = append(ts, ls.boot.Add(ls.burst[0]))
		}
	}
	for _, t := range []time.Time{ls.answerAt, ls.expiryAt, ls.graceAt} {
		if !t.IsZero() {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return time.Time{}, false
	}
	return slices.MinFunc(ts, time.Time.Compare), true
}

// scheduleAnswer arranges an announce after a random 20-120 ms, unless one
// is pending already.
func (ls *loopState) scheduleAnswer(now time.Time) {
	if ls.answerAt.IsZero() {
		ls.answerAt = now.Add(ls.answerDelay())
	}
}

func (ls *loopState) handleDatagram(now time.Time, d datagram) {
	n := ls.n
	switch m := d.msg.(type) {
	case *protocol.Announce:
		o := registry.Observation{
			Source: registry.SourceLAN, Addr: netip.AddrPortFrom(d.src, m.TCPPort),
			Nickname: m.Nickname, Instance: m.Instance, Caps: m.Caps, PubKey: m.Key,
		}
		if m.Signed() {
			// A tag means something only against the key that signed
			// it (room.IsMember): an unsigned announce has none.
			o.Rooms = m.Rooms
		}
		if m.Instance == n.instance {
			return
		}
		if err := ls.checkAnnounce(now, o, m); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, errReplay) {
				level = slog.LevelDebug
			}
			n.log.Log(n.ctx, level, "announce ignored", "from", d.src, "peer", m.Nickname, "err", err)
			return
		}
		c, err := ls.reg.Observe(now, o)
		switch {
		case errors.Is(err, registry.ErrSelf):
			return
		case err != nil:
			n.log.Warn("announce ignored", "from", d.src, "err", err)
			return
		}
		ls.report(now, c)
		if c.Kind == registry.Joined || c.Kind == registry.Restarted {
			// A peer new to us may not know us either (an original peer
			// cannot ask; our query to it may have been lost): tell it
			// now rather than at our next interval.
			ls.scheduleAnswer(now)
			if ls.expiryAt.IsZero() {
				ls.expiryAt = now.Add(ls.reg.Timeout())
			}
		}
	case *protocol.Goodbye:
		if err := ls.checkGoodbye(d.src, m); err != nil {
			n.log.Warn("goodbye ignored", "from", d.src, "peer", m.Nickname, "err", err)
			return
		}
		for _, c := range ls.reg.Goodbye(d.src, m.Nickname, m.Instance) {
			ls.report(now, c)
		}
	case *protocol.Query:
		if m.Instance == n.instance {
			return
		}
		ls.scheduleAnswer(now)
	}
	// ls.expiryAt stays a lower bound of the earliest expiry: refreshes
	// and goodbyes only move expiries later, and a new peer expires after
	// every known one. fire recomputes it when it is due.
}

// report turns a registry change into a log line and an event.
func (ls *loopState) report(now time.Time, c registry.Change) {
	n := ls.n
	n.stateVer.Add(1) // also for the expiries the loop does between events
	p := c.Peer
	switch c.Kind {
	case registry.Joined:
		n.log.Info("peer joined", "peer", p.Nickname, "addr", p.Addr, "source", p.Source.String())
		n.emit(Event{Kind: EventPeerJoined, Time: now, Peer: p})
	case registry.Restarted:
		n.log.Info("peer restarted", "peer", p.Nickname, "addr", p.Addr)
		n.emit(Event{Kind: EventPeerRestarted, Time: now, Peer: p, Old: c.Old})
	case registry.Updated:
		n.log.Info("peer updated", "peer", p.Nickname, "addr", p.Addr)
		n.emit(Event{Kind: EventPeerUpdated, Time: now, Peer: p})
	case registry.Left:
		n.log.Info("peer left", "peer", p.Nickname, "addr", p.Addr)
		n.emit(Event{Kind: EventPeerLeft, Time: now, Peer: p})
	case registry.Expired:
		n.log.Info("peer expired", "peer", p.Nickname, "addr", p.Addr)
		n.emit(Event{Kind: EventPeerExpired, Time: now, Peer: p})
	}
	ls.observeRoomPeer(c)
	switch c.Kind {
	case registry.Joined, registry.Restarted, registry.Updated:
		ls.warnKeyChange(now, c)
		// Messages queued for the peer's key can go now.
		n.kickKey(sessionKey(p))
	}
}

// warnKeyChange tells the user, once per change, when a peer shows up
// with a key other than the one pinned for its nickname, or with none.
func (ls *loopState) warnKeyChange(now time.Time, c registry.Change) {
	p := c.Peer
	if c.Kind == registry.Updated && c.Old.PubKey == p.PubKey && c.Old.Nickname == p.Nickname {
		return
	}
	if ls.trust.State(p.Nickname, sessionKey(p)) != trust.StateChanged {
		return
	}
	pin, _ := ls.trust.Lookup(p.Nickname)
	text := fmt.Sprintf("KEY CHANGED: %s has key %s, but %s is pinned to key %s. Nothing is sent to it; compare with /verify %s",
		registry.Selector(p), shortFP(sessionKey(p)), p.Nickname, shortFP(pin.Key), p.Nickname)
	if sessionKey(p) == "" {
		text = fmt.Sprintf("KEY CHANGED: %s announces no key, but %s is pinned to key %s (an attacker stripping keys looks like this). Nothing is sent to it in plaintext",
			registry.Selector(p), p.Nickname, shortFP(pin.Key))
	}
	ls.n.log.Warn("key changed", "peer", p.Nickname, "addr", p.Addr)
	ls.n.emit(Event{Kind: EventSecurity, Time: now, Peer: p, Text: text})
}

// sendAnnounce announces us. It runs on the event loop and, for a change
// of rooms, on the goroutine that made it (setRoomTags).
func (n *Node) sendAnnounce(why string) {
	n.log.Debug("announce", "why", why)
	// The signing time first, the tags after: of two announces, the one
	// signed later then carries the newer tags, and it is the one
	// receivers keep (they refuse one not newer than the last).
	at := n.announceTime()
	a := &protocol.Announce{Nickname: n.cfg.Nickname, TCPPort: n.port, Instance: n.instance, Caps: Caps(), Rooms: n.currentRoomTags()}
	a.Sign(n.cfg.Identity, at)
	n.sendDatagram(a)
}

// announceTime returns the signing time for our next announce: now, or a
// millisecond after the last one when now is not later. Receivers refuse
// an announce whose signing time is not newer than the last they took
// from its key (a replay), so two announces within one millisecond (a
// room joined, then another) must not share it.
func (n *Node) announceTime() time.Time {
	for {
		last := n.announced.Load()
		ms := max(time.Now().UnixMilli(), last+1)
		if n.announced.CompareAndSwap(last, ms) {
			return time.UnixMilli(ms)
		}
	}
}

// currentRoomTags returns our room membership tags, nil when there are
// none. Safe for concurrent use (rendezvous calls it from its own
// goroutine); callers must not change the slice.
func (n *Node) currentRoomTags() []string {
	if p := n.roomTags.Load(); p != nil && len(*p) > 0 {
		return *p
	}
	return nil
}

// setRoomTags makes tags our room membership tags, as announces and
// registrations carry them: a sorted copy without duplicates, without
// anything that is not a tag, and at most protocol.MaxRoomTags of them
// (the rest are dropped with a warning: peers would refuse more). If
// they changed, peers hear of it at once: in local mode an announce goes
// out now, in internet mode the bootstrap client registers again on its
// connection. Safe for concurrent use.
func (n *Node) setRoomTags(tags []string) {
	next := make([]string, 0, len(tags))
	for _, t := range tags {
		if protocol.ValidRoomTag(t) {
			next = append(next, t)
		} else {
			n.log.Warn("not a room tag; left out of announces", "tag", t)
		}
	}
	slices.Sort(next)
	next = slices.Compact(next)
	if len(next) > protocol.MaxRoomTags {
		n.log.Warn("more room tags than announces carry; the last are left out", "tags", len(next), "max", protocol.MaxRoomTags)
		next = next[:protocol.MaxRoomTags:protocol.MaxRoomTags]
	}
	old := n.roomTags.Swap(&next)
	if old != nil && slices.Equal(*old, next) || old == nil && len(next) == 0 {
		return
	}
	if n.pc != nil && n.ctx != nil && n.ctx.Err() == nil {
		// (Before Start has the socket, the start-up burst carries them.)
		n.sendAnnounce("rooms")
	}
	if n.reregister != nil {
		select {
		case n.reregister <- struct{}{}:
		default: // one is pending: the register it sends reads the tags then
		}
	}
}

func (n *Node) sendGoodbye() {
	g := &protocol.Goodbye{Nickname: n.cfg.Nickname, Instance: n.instance}
	g.Sign(n.cfg.Identity, time.Now())
	n.sendDatagram(g)
}

func (n *Node) sendDatagram(d protocol.Datagram) {
	b, err := protocol.EncodeDatagram(d)
	if err != nil {
		n.log.Error("encode datagram", "err", err)
		return
	}
	if _, err := n.pc.WriteTo(b, GroupAddr()); err != nil {
		n.log.Warn("discovery send failed", "err", err)
	}
}

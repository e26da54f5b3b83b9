package chat

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// BootstrapGrace is how long, after registering again with the bootstrap
// server, a peer missing from the server's first list stays listed
// (unconfirmed) before it is dropped.
//
// A server that restarts comes back empty, and every client lost it at the
// same moment: each registers again on its own reconnect schedule, so the
// first list a client gets lacks the others that have not reconnected yet,
// not because they left. They come back within ReconnectWithin (an attempt
// under way may hang for the 10 s handshake timeout, then the backoff waits
// at most 30 s; after a long outage every client is at that maximum, so 5 s
// would not cover them), and a pushed peer_joined (or the next poll) shows
// them. The 5 s on top cover their handshake and registration round trips
// on a slow link. A peer that really left while the server was away is
// therefore dropped at most this late; one that leaves once the server is
// back is dropped at once by its peer_left. A switch to the next server of
// BootstrapServers is held the same way: the others that lost the same
// server arrive there within rendezvous.FailoverWithin of their loss.
const BootstrapGrace = rendezvous.ReconnectWithin + 5*time.Second

// updateQueue carries rendezvous updates to the event loop. OnUpdate must
// not block, so it appends under a short lock and signals.
type updateQueue struct {
	mu     sync.Mutex
	q      []rendezvous.Update
	signal chan struct{}
}

func (u *updateQueue) push(up rendezvous.Update) {
	u.mu.Lock()
	u.q = append(u.q, up)
	u.mu.Unlock()
	select {
	case u.signal <- struct{}{}:
	default:
	}
}

func (u *updateQueue) drain() []rendezvous.Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	q := u.q
	u.q = nil
	return q
}

// startInternet starts the bootstrap-server client in a goroutine owned by
// the node. Its updates reach the event loop, which mirrors the server's
// peers into the registry with SourceBootstrap.
func (n *Node) startInternet(ls *loopState) error {
	uq := &updateQueue{signal: make(chan struct{}, 1)}
	ls.updates = uq
	cfg := rendezvous.Config{
		URLs:              n.cfg.BootstrapServers,
		Nickname:          n.cfg.Nickname,
		TCPPort:           n.port,
		Instance:          n.instance,
		Caps:              n.internetCaps(),
		Relay:             true,
		OnRelayIncoming:   n.relayIncoming,
		Namespace:         n.cfg.Namespace,
		Identity:          n.cfg.Identity,
		Rooms:             n.currentRoomTags,
		Reregister:        n.reregister,
		Addrs:             n.ownAddrs(),
		Dial:              n.cfg.Network.DialContext,
		Rand:              rand.New(rand.NewPCG(ls.rnd.Uint64(), ls.rnd.Uint64())),
		Logger:            n.log.With("component", "rendezvous"),
		OnUpdate:          uq.push,
		HeartbeatInterval: n.cfg.HeartbeatInterval,
	}
	n.rv = cfg
	ready := make(chan error, 1)
	n.spawn(func() {
		err := rendezvous.Run(n.ctx, cfg)
		if err != nil {
			select {
			case ready <- err:
			default:
			}
			n.log.Error("bootstrap client stopped", "err", err)
			n.emit(Event{Kind: EventStatus, Time: time.Now(), Err: err, Text: "internet mode stopped: " + err.Error()})
		}
	})
	// Run returns at once only for an invalid config; report that from Start.
	select {
	case err := <-ready:
		return fmt.Errorf("chat: internet mode: %w", err)
	default:
		return nil
	}
}

// internetCaps are the capabilities registered in internet mode: Caps,
// the relay, and hole punching where the Network can dial from the
// listener's port.
func (n *Node) internetCaps() []string {
	caps := append(Caps(), protocol.CapRelay)
	if n.canPunch() {
		caps = append(caps, protocol.CapPunch)
	}
	return caps
}

// portKept reports whether the port the server observed is the local
// port of the connection: a NAT on the way kept it. Unknown (a server
// that does not say) counts as kept.
func portKept(observed, local string) bool {
	o, err1 := netip.ParseAddrPort(observed)
	l, err2 := netip.ParseAddrPort(local)
	return err1 != nil || err2 != nil || o.Port() == l.Port()
}

// ownAddrs lists this node's message listener on each of its unicast
// addresses (loopback and link-local left out), at most
// protocol.MaxAddrs, for the registration: a peer behind the same NAT
// reaches one of them when the public address leads nowhere. A Network
// that cannot say its addresses gives none.
func (n *Node) ownAddrs() []string {
	an, ok := n.cfg.Network.(interface{ Addrs() []netip.Addr })
	if !ok {
		return nil
	}
	var out []string
	for _, ip := range an.Addrs() {
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() || len(out) == protocol.MaxAddrs {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, n.port).String())
	}
	return out
}

// applyUpdate mirrors one rendezvous update into the registry.
func (ls *loopState) applyUpdate(now time.Time, up rendezvous.Update) {
	n := ls.n
	switch up.Kind {
	case rendezvous.Registered:
		// The first list after registering again may predate the
		// other clients' own return (see BootstrapGrace).
		ls.graceNext = ls.registered
		ls.registered = true
		kept := portKept(up.Observed, up.Local)
		n.mu.Lock()
		n.relayServer, n.relayToken, n.publicAddr, n.portChanged = up.Server, up.RelayToken, up.PublicAddr, !kept
		n.mu.Unlock()
		if !kept {
			n.log.Info("our NAT changes ports (symmetric?): no hole punching, the relay carries conversations with NATed peers", "observed", up.Observed, "local", up.Local)
		}
		n.emit(Event{Kind: EventStatus, Time: now, Text: fmt.Sprintf("registered with %s as %s", up.Server, up.PublicAddr)})
	case rendezvous.Disconnected:
		// The reason is part of the text: without it a user whose
		// wss:// server has a certificate they do not trust sees only
		// retries, never why.
		text := fmt.Sprintf("lost the bootstrap server %s; retrying in %v", up.Server, up.RetryIn.Round(time.Millisecond))
		if up.Next != up.Server {
			text = fmt.Sprintf("lost the bootstrap server %s; trying %s in %v", up.Server, up.Next, up.RetryIn.Round(time.Millisecond))
		}
		if up.Err != nil {
			text += " (" + up.Err.Error() + ")"
		}
		n.emit(Event{Kind: EventStatus, Time: now, Err: up.Err, Text: text})
	case rendezvous.Snapshot:
		obs := make([]registry.Observation, 0, len(up.Peers))
		for _, p := range up.Peers {
			if o, ok := ls.bootstrapObservation(p); ok {
				obs = append(obs, o)
			}
		}
		if ls.graceNext {
			ls.graceNext = false
			ls.holdMissing(now, obs)
			return
		}
		for _, c := range ls.reg.Sync(now, obs) {
			ls.report(now, c)
		}
		// The registry now mirrors the list: every unconfirmed peer is
		// either in it or gone.
		ls.unconfirmed, ls.graceAt = nil, time.Time{}
	case rendezvous.Joined:
		for _, p := range up.Peers {
			o, ok := ls.bootstrapObservation(p)
			if !ok {
				continue
			}
			c, err := ls.reg.Observe(now, o)
			if err != nil {
				n.log.Debug("bootstrap peer ignored", "peer", p.Nickname, "err", err)
				continue
			}
			ls.confirm(c.Peer.Key)
			ls.report(now, c)
		}
	case rendezvous.Left:
		if c, ok := ls.reg.RemoveID(up.PeerID); ok {
			ls.confirm(c.Peer.Key)
			ls.report(now, c)
		}
	}
}

// holdMissing applies the first list after registering again: the peers
// in it are observed, the bootstrap peers missing from it become
// unconfirmed until BootstrapGrace from now rather than leaving at once.
// Peers without an instance id (original clients) are keyed by peer_id,
// which a restarted server changes, so their entry cannot be confirmed
// again: they leave at once, as before, and come back under the new id.
func (ls *loopState) holdMissing(now time.Time, obs []registry.Observation) {
	listed := make(map[registry.Key]bool, len(obs))
	for _, o := range obs {
		listed[o.Key()] = true
	}
	for _, p := range ls.reg.List() {
		if p.Source != registry.SourceBootstrap || listed[p.Key] {
			continue
		}
		if p.Instance == "" {
			if c, ok := ls.reg.Remove(p.Key); ok {
				ls.report(now, c)
			}
			continue
		}
		if ls.unconfirmed == nil {
			ls.unconfirmed = make(map[registry.Key]bool)
		}
		ls.unconfirmed[p.Key] = true
	}
	for _, o := range obs {
		c, err := ls.reg.Observe(now, o)
		if err != nil {
			ls.n.log.Debug("bootstrap peer ignored", "peer", o.Nickname, "err", err)
			continue
		}
		ls.confirm(c.Peer.Key)
		if c.Kind != registry.Refreshed {
			ls.report(now, c)
		}
	}
	if len(ls.unconfirmed) > 0 {
		ls.graceAt = now.Add(BootstrapGrace)
		ls.n.log.Info("bootstrap peers unconfirmed after registering again", "peers", len(ls.unconfirmed), "grace", BootstrapGrace)
	} else {
		ls.graceAt = time.Time{}
	}
}

// confirm marks a bootstrap peer as shown again by the server.
func (ls *loopState) confirm(k registry.Key) {
	delete(ls.unconfirmed, k)
	if len(ls.unconfirmed) == 0 {
		ls.unconfirmed, ls.graceAt = nil, time.Time{}
	}
}

// expireUnconfirmed drops the bootstrap peers still unconfirmed when the
// grace period is over.
func (ls *loopState) expireUnconfirmed(now time.Time) {
	if ls.graceAt.IsZero() || now.Before(ls.graceAt) {
		return
	}
	keys := make([]registry.Key, 0, len(ls.unconfirmed))
	for k := range ls.unconfirmed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if c, ok := ls.reg.Remove(k); ok {
			ls.report(now, c)
		}
	}
	ls.unconfirmed, ls.graceAt = nil, time.Time{}
}

func (ls *loopState) bootstrapObservation(p protocol.PeerInfo) (registry.Observation, bool) {
	ap, err := netip.ParseAddrPort(p.PublicAddr)
	if err != nil || p.PeerID == "" {
		ls.n.log.Debug("bootstrap peer without usable address ignored", "peer", p.Nickname, "public_addr", p.PublicAddr)
		return registry.Observation{}, false
	}
	o := registry.Observation{
		Source: registry.SourceBootstrap, ID: p.PeerID,
		Addr:     netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()),
		Nickname: p.Nickname, Instance: p.Instance, Caps: p.Caps, PubKey: p.Key, Addrs: p.Addrs,
	}
	if p.Key != "" {
		// Tags only with the key they are checked against (our server
		// lists none without one anyway).
		o.Rooms = p.Rooms
	}
	return o, true
}

package chat

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

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
		URL:               n.cfg.BootstrapServer,
		Nickname:          n.cfg.Nickname,
		TCPPort:           n.port,
		Instance:          n.instance,
		Caps:              Caps(),
		Namespace:         n.cfg.Namespace,
		Dial:              n.cfg.Network.DialContext,
		Rand:              rand.New(rand.NewPCG(ls.rnd.Uint64(), ls.rnd.Uint64())),
		Logger:            n.log.With("component", "rendezvous"),
		OnUpdate:          uq.push,
		HeartbeatInterval: n.cfg.HeartbeatInterval,
	}
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

// applyUpdate mirrors one rendezvous update into the registry.
func (ls *loopState) applyUpdate(now time.Time, up rendezvous.Update) {
	n := ls.n
	switch up.Kind {
	case rendezvous.Registered:
		n.emit(Event{Kind: EventStatus, Time: now, Text: fmt.Sprintf("registered with %s as %s", n.cfg.BootstrapServer, up.PublicAddr)})
	case rendezvous.Disconnected:
		// The reason is part of the text: without it a user whose
		// wss:// server has a certificate they do not trust sees only
		// retries, never why.
		text := fmt.Sprintf("lost the bootstrap server %s; retrying in %v", n.cfg.BootstrapServer, up.RetryIn.Round(time.Millisecond))
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
		for _, c := range ls.reg.Sync(now, obs) {
			ls.report(now, c)
		}
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
			ls.report(now, c)
		}
	case rendezvous.Left:
		if c, ok := ls.reg.RemoveID(up.PeerID); ok {
			ls.report(now, c)
		}
	}
}

func (ls *loopState) bootstrapObservation(p protocol.PeerInfo) (registry.Observation, bool) {
	ap, err := netip.ParseAddrPort(p.PublicAddr)
	if err != nil || p.PeerID == "" {
		ls.n.log.Debug("bootstrap peer without usable address ignored", "peer", p.Nickname, "public_addr", p.PublicAddr)
		return registry.Observation{}, false
	}
	return registry.Observation{
		Source: registry.SourceBootstrap, ID: p.PeerID,
		Addr:     netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()),
		Nickname: p.Nickname, Instance: p.Instance, Caps: p.Caps,
	}, true
}

package rendezvous

// Cluster mode: the Server as the host of an internal/cluster Node (the
// design and its bounds are that package's doc). Remote peers live in the
// namespaces next to local ones, as peers with remote set and no conn, so
// list_peers and the pushed peer_joined / peer_left treat both alike.
// Every change to them happens under Server.mu, from the Node's one
// goroutine; the Server publishes its own peers' joins and leaves by
// queueing them on the Node, also under Server.mu, which never blocks.

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/internal/cluster"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// remoteServer is another server of the cluster, as far as its peers go.
// Guarded by Server.mu.
type remoteServer struct {
	id    string
	peers map[string]*peer // by peer_id
	// seen is when it was last heard from (Unix seconds): the last_seen
	// its peers are listed with. Heartbeats stay with the server that
	// holds the connection; its beat vouches for all its peers (it
	// expires the silent ones itself).
	seen int64
}

type clusterMetrics struct {
	degraded    prometheus.Gauge
	servers     prometheus.Gauge
	remotePeers prometheus.Gauge
	messages    *prometheus.CounterVec
	snapshots   prometheus.Counter
	serversLost *prometheus.CounterVec
	idConflicts prometheus.Counter

	relayBytes      *prometheus.CounterVec // by dir: out (to NATS), in (from NATS, written)
	relayBuffered   prometheus.Gauge
	relayCreditWait prometheus.Counter
	relayWaits      prometheus.Counter
}

func newClusterMetrics(reg prometheus.Registerer) (*clusterMetrics, error) {
	const ns, sub = "parlance", "bootstrap"
	m := &clusterMetrics{
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_degraded", Help: "1 while this server is not connected to NATS (serving its own clients only), else 0."}),
		servers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_servers", Help: "Other servers of the cluster that hold peers listed here."}),
		remotePeers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_remote_peers", Help: "Peers listed here that are registered with another server."}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_messages_total", Help: "Cluster messages by what happened (in, out, dropped, malformed) and type."}, []string{"what", "type"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_snapshots_applied_total", Help: "Snapshots of another server's peers applied (a new server, a reconnect, a gap)."}),
		serversLost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_servers_lost_total", Help: "Servers whose peers were dropped, by reason: silent (missed beats) or nats_down (this server cut off too long)."}, []string{"reason"}),
		idConflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_peer_id_conflicts_total", Help: "Remote peers refused or dropped because another peer has their peer_id."}),
		relayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_relay_bytes_total", Help: "Payload bytes of relayed streams with peers on other servers, by direction: out (sent over NATS) or in (received over NATS and written)."}, []string{"dir"}),
		relayBuffered: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_relay_buffered_bytes", Help: "Bytes received from other servers for relayed streams and not yet written (at most the window per stream)."}),
		relayCreditWait: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_relay_credit_wait_seconds_total", Help: "Time relayed frames waited for the receiving server's window (a slow reader on the other side)."}),
		relayWaits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cluster_relay_credit_waits_total", Help: "Relayed frames that had to wait for the receiving server's window."}),
	}
	m.relayBytes.WithLabelValues("out")
	m.relayBytes.WithLabelValues("in")
	for _, c := range []prometheus.Collector{m.degraded, m.servers, m.remotePeers, m.messages, m.snapshots, m.serversLost, m.idConflicts,
		m.relayBytes, m.relayBuffered, m.relayCreditWait, m.relayWaits} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.degraded.Set(1)
	return m, nil
}

// newServerID returns 16 random hex digits.
func newServerID(r io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("rendezvous: read random server id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func (s *Server) startCluster(reg prometheus.Registerer) error {
	cc := s.cfg.Cluster
	cm, err := newClusterMetrics(reg)
	if err != nil {
		return fmt.Errorf("rendezvous: register cluster metrics: %w", err)
	}
	id, err := newServerID(s.cfg.Rand)
	if err != nil {
		return err
	}
	s.cm, s.remotes, s.clusterDown = cm, map[string]*remoteServer{}, time.Now()
	s.xgens = map[string]uint64{}
	node, err := cluster.New(cluster.Config{
		URLs: cc.NATS, Name: cc.Name, ID: id, Prefix: cc.Prefix, Options: cc.Options,
		Beat: cc.Beat, MissedBeats: cc.MissedBeats, Hold: s.cfg.Expiry, Logger: s.log,
		// Even with NoRelay: a stream asked for is then refused at
		// once (Peer does not accept relayed streams), not timed out.
		Relay: s.relayMsg,
	}, clusterHost{s})
	if err != nil {
		return fmt.Errorf("rendezvous: %w", err)
	}
	s.mu.Lock()
	s.cluster = node
	s.mu.Unlock()
	s.log.Info("cluster mode", "server", id, "nats", cc.NATS)
	return nil
}

// clusterHost is the Server as a cluster.Host (unexported methods would
// not do, and exported ones on Server would be its API).
type clusterHost struct{ s *Server }

func (h clusterHost) Local() (uint64, []cluster.Entry) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var seq uint64
	if s.cluster != nil {
		seq = s.cluster.Seq()
	}
	peers := make([]cluster.Entry, 0, s.npeers)
	for _, name := range slices.Sorted(maps.Keys(s.namespaces)) {
		for _, p := range s.namespaces[name].peers {
			if p.remote == nil {
				peers = append(peers, cluster.Entry{NS: name, Raw: slices.Clone(p.entry)})
			}
		}
	}
	return seq, peers
}

func (h clusterHost) LocalCount() int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.s.npeers
}

func (h clusterHost) Connected(up bool) {
	s := h.s
	s.mu.Lock()
	s.clusterUp = up
	if !up {
		s.clusterDown = time.Now()
		// Nothing reaches the other servers now: end the cross-server
		// streams at once. The other servers end theirs when they see
		// this one's next generation, or take it for dead.
		s.xendServerLocked("", nil, outcomeNATSDown)
	}
	s.mu.Unlock()
	if up {
		s.cm.degraded.Set(0)
		s.log.Info("cluster: connected to NATS")
	} else {
		s.cm.degraded.Set(1)
		s.log.Warn("cluster: not connected to NATS: degraded, serving this server's clients only")
	}
}

func (h clusterHost) Count(what, typ string) {
	h.s.cm.messages.WithLabelValues(what, typ).Inc()
}

func (h clusterHost) Heard(server string, gen uint64, at time.Time) {
	s := h.s
	s.mu.Lock()
	if r := s.remotes[server]; r != nil {
		r.seen = at.Unix()
	}
	s.xnoteGenLocked(server, gen)
	s.mu.Unlock()
}

func (h clusterHost) Apply(a cluster.Action) {
	s := h.s
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch a.Kind {
	case cluster.Join:
		s.remoteJoinLocked(s.remoteLocked(a.Server, now), a.NS, a.Info, now)
	case cluster.Leave:
		if r := s.remotes[a.Server]; r != nil {
			if p := r.peers[a.ID]; p != nil {
				s.removePeerLocked(p)
			}
		}
	case cluster.Replace:
		s.cm.snapshots.Inc()
		s.replaceLocked(s.remoteLocked(a.Server, now), a.Peers, now)
	case cluster.Drop:
		s.cm.serversLost.WithLabelValues(a.Reason).Inc()
		s.xendServerLocked(a.Server, nil, outcomeServerLost)
		delete(s.xgens, a.Server)
		if r := s.remotes[a.Server]; r != nil {
			s.log.Info("cluster: server lost, its peers dropped", "server", a.Server, "peers", len(r.peers), "reason", a.Reason)
			for _, id := range slices.Sorted(maps.Keys(r.peers)) {
				s.removePeerLocked(r.peers[id])
			}
			delete(s.remotes, a.Server)
			s.cm.servers.Set(float64(len(s.remotes)))
		}
	}
}

func (s *Server) remoteLocked(id string, now time.Time) *remoteServer {
	r := s.remotes[id]
	if r == nil {
		r = &remoteServer{id: id, peers: map[string]*peer{}, seen: now.Unix()}
		s.remotes[id] = r
		s.cm.servers.Set(float64(len(s.remotes)))
	}
	return r
}

// remoteJoinLocked lists info in namespace ns as r's peer, or updates
// the entry it has: subscribers get a peer_joined unless nothing but
// last_seen changed.
func (s *Server) remoteJoinLocked(r *remoteServer, ns string, info protocol.PeerInfo, now time.Time) {
	info.LastSeen = r.seen
	id := info.PeerID
	if p := r.peers[id]; p != nil {
		if p.ns.name == ns {
			if sameEntry(&p.info, &info) {
				return
			}
			p.info = info
			p.entry, p.lastSeenAt = appendEntry(&p.info)
			p.ns.cacheValid = false
			if len(p.ns.subs) > 0 {
				s.broadcastLocked(p.ns, outMsg{kind: msgText, data: encodeServer(&protocol.PeerJoined{Peer: p.info})}, nil)
			}
			return
		}
		s.removePeerLocked(p) // another namespace: a new registration
	}
	if q := s.peersByID[id]; q != nil {
		s.cm.idConflicts.Inc()
		s.log.Error("cluster: remote peer refused: its peer_id is taken", "peer", id, "server", r.id)
		return
	}
	p := &peer{info: info, lastSeen: now, remote: r}
	p.entry, p.lastSeenAt = appendEntry(&p.info)
	n := s.namespaceLocked(ns)
	n.add(p)
	n.remotes++
	r.peers[id] = p
	s.peersByID[id] = p
	s.cm.remotePeers.Inc()
	if len(n.subs) > 0 {
		s.broadcastLocked(n, outMsg{kind: msgText, data: encodeServer(&protocol.PeerJoined{Peer: p.info})}, nil)
	}
}

// replaceLocked makes r's peers those of a snapshot, pushing only the
// difference: joins first, so that a client that re-registered under a
// new peer_id with the same instance is seen as updated, not as gone.
func (s *Server) replaceLocked(r *remoteServer, peers []cluster.Entry, now time.Time) {
	keep := make(map[string]bool, len(peers))
	for _, e := range peers {
		keep[e.Info.PeerID] = true
		s.remoteJoinLocked(r, e.NS, e.Info, now)
	}
	for _, id := range slices.Sorted(maps.Keys(r.peers)) {
		if !keep[id] {
			s.removePeerLocked(r.peers[id])
		}
	}
}

// conflictLocked drops remote peer q, whose peer_id a local registration
// takes.
func (s *Server) conflictLocked(q *peer) {
	s.cm.idConflicts.Inc()
	s.log.Error("cluster: remote peer dropped: a local registration has its peer_id", "peer", q.info.PeerID, "server", q.remote.id)
	s.removePeerLocked(q)
}

// sameEntry reports whether a and b list the same, last_seen aside
// (compared encoded, so that no field can be forgotten).
func sameEntry(a, b *protocol.PeerInfo) bool {
	x := *a
	x.LastSeen = b.LastSeen
	ea, _ := appendEntry(&x)
	eb, _ := appendEntry(b)
	return bytes.Equal(ea, eb)
}

// ClusterID returns the server's id in its cluster, "" without one.
func (s *Server) ClusterID() string {
	if s.cluster == nil {
		return ""
	}
	return s.cluster.ID()
}

package rendezvous

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error kinds counted by the errors metric.
const (
	errKindInvalid           = "invalid_message"
	errKindTooLarge          = "frame_too_large"
	errKindNotRegistered     = "not_registered"
	errKindPeerNotRegistered = "peer_not_registered"
	errKindRateLimited       = "rate_limited"
	errKindTooManyConns      = "too_many_connections"
	errKindServerFull        = "server_full"
	errKindSlowReader        = "slow_reader"
	errKindReadTimeout       = "read_timeout"
	errKindWrite             = "write_failed"
	errKindHandshake         = "handshake_failed"
	errKindInternal          = "internal"
	errKindBadSignature      = "bad_signature"   // a register's signature does not verify
	errKindStaleSignature    = "stale_signature" // a register's ts is outside SignatureWindow
)

type metrics struct {
	connections   prometheus.Gauge
	peers         *prometheus.GaugeVec
	messages      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	rateLimited   prometheus.Counter
	pushed        prometheus.Counter
	listRebuilds  prometheus.Counter
	expired       prometheus.Counter
	connsAccepted prometheus.Counter
	fastUpgrades  prometheus.Counter

	relayStreams   *prometheus.GaugeVec   // by state: pending, open
	relayOutcomes  *prometheus.CounterVec // by outcome
	relayBytes     prometheus.Counter
	relayThrottled prometheus.Counter // seconds frames waited for a rate limit

	// Resolved children of messages and errors, read-only after
	// newMetrics: a map lookup instead of hashing labels per message.
	msgs map[string]prometheus.Counter
	errs map[string]prometheus.Counter
	// The two every client sends, without even the map lookup.
	registers, heartbeats prometheus.Counter
}

func (m *metrics) msg(typ string) {
	c, ok := m.msgs[typ]
	if !ok {
		c = m.messages.WithLabelValues(typ)
	}
	c.Inc()
}

func (m *metrics) err(kind string) {
	c, ok := m.errs[kind]
	if !ok {
		c = m.errors.WithLabelValues(kind)
	}
	c.Inc()
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "parlance", "bootstrap"
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connections", Help: "Open WebSocket connections."}),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "registered_peers", Help: "Registered peers per namespace (\"\" is the default one)."}, []string{"namespace"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_received_total", Help: "Messages received from clients, by type."}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Errors by kind."}, []string{"kind"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rate_limited_total", Help: "Requests refused by a per-IP limit (message rate or connection count)."}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "pushed_updates_total", Help: "peer_joined and peer_left messages queued to subscribers."}),
		listRebuilds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "peer_list_encodings_total", Help: "Times a namespace's cached peer_list was rebuilt."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "expired_peers_total", Help: "Peers removed because they stopped sending heartbeats."}),
		connsAccepted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_accepted_total", Help: "WebSocket connections accepted."}),
		fastUpgrades: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "fast_upgrades_total", Help: "WebSocket handshakes Serve answered itself; net/http answered the rest."}),
		relayStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "relay_streams", Help: "Relayed streams by state: pending (waiting for the target to accept) or open."}, []string{"state"}),
		relayOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "relay_streams_total", Help: "Relay requests (relay_connect, refused relay_accept) by outcome: a refusal reason or how the stream ended."}, []string{"outcome"}),
		relayBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "relay_bytes_total", Help: "Payload bytes forwarded on relayed streams, both directions."}),
		relayThrottled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "relay_throttled_seconds_total", Help: "Time relayed frames waited for the per-peer or total byte rate."}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.peers, m.messages, m.errors, m.rateLimited, m.pushed, m.listRebuilds, m.expired, m.connsAccepted, m.fastUpgrades,
		m.relayStreams, m.relayOutcomes, m.relayBytes, m.relayThrottled} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.msgs, m.errs = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, t := range []string{"register", "list_peers", "heartbeat", "unregister", "relay_connect", "relay_accept", "invalid"} {
		m.msgs[t] = m.messages.WithLabelValues(t)
	}
	for _, k := range []string{errKindInvalid, errKindTooLarge, errKindNotRegistered, errKindPeerNotRegistered,
		errKindRateLimited, errKindTooManyConns, errKindServerFull, errKindSlowReader, errKindReadTimeout, errKindWrite, errKindHandshake, errKindInternal,
		errKindBadSignature, errKindStaleSignature} {
		m.errs[k] = m.errors.WithLabelValues(k)
	}
	m.registers, m.heartbeats = m.msgs["register"], m.msgs["heartbeat"]
	m.peers.WithLabelValues("")
	m.relayStreams.WithLabelValues(relayPending)
	m.relayStreams.WithLabelValues(relayOpen)
	return m, nil
}

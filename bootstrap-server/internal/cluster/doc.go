// Package cluster makes several bootstrap servers one service: every
// server lists every registered peer of a namespace and pushes its joins
// and leaves, whichever server the peer is connected to. It owns the
// cluster's wire format (wire.go), the pure state machine that tracks the
// other servers (state.go: messages, ticks and connection changes in,
// actions out, no I/O, the time passed in) and the NATS connection that
// feeds it (node.go). The peers themselves stay with the host
// (rendezvous.Server), which applies the actions.
//
// # Design: core NATS, per-server state
//
// The cluster uses core NATS subjects, not JetStream. The state is soft:
// a registration lives only as long as its client's WebSocket, every
// client registers again after any trouble, and nothing is worth keeping
// on disk or replicating through a consensus log. What crosses NATS must
// grow with churn, not with the number of peers: heartbeats (every
// client, every 10 s) stay with the server that holds the connection,
// which expires its own silent peers; a JetStream KV with a TTL per key
// would have had to carry each of them. So each server is the single
// writer of its own peers, and the others keep a copy:
//
//   - join: the peer's whole peer_list entry, its namespace and the
//     owning server's id, on every register and every update in place;
//     leave: its peer_id, when the registration ends (close, unregister,
//     expiry, replacement).
//   - Every join and leave carries the server's sequence number, one
//     more each time. A receiver applies them in order; a gap (a message
//     lost: NATS is at most once) makes it ask that server for a snapshot
//     of its peers (request on the per-server subject, answered in parts
//     of at most 256 KiB), replace that server's peers with it, and push
//     only the difference: a peer that stayed sees no churn.
//   - Each server has a random 64-bit id, new for each process, and a
//     generation, one more on each connection to NATS. A new server or
//     generation is asked for a snapshot likewise.
//   - Every server publishes a liveness beat every second (id,
//     generation, last sequence number, peer count): N servers cost N
//     small messages per second whatever the number of peers. A beat ahead
//     of what a receiver applied is a gap.
//   - On (re)connecting a server publishes hello; each other server
//     answers with a beat at once, from which the newcomer learns of it
//     and asks for its snapshot, while they ask for the newcomer's.
//
// A server's messages reach another in the order they were published
// (one connection, one publisher: NATS keeps that order, across
// subjects), and both subscriptions feed one channel from the
// connection's reader, so the order holds up to the state machine.
//
// # Bounds
//
// A server not heard from for three beats (3 s) is taken for dead: its
// peers are dropped everywhere else, with a peer_left to each subscriber.
// The check runs every quarter beat, so the peers go between 3 and 3.25 s
// after its last beat, that is at most 4.25 s after it died. A clean
// shutdown says nothing either (see below). A snapshot not complete 5 s
// after it was asked for is asked for again. Joins and leaves that cannot
// be published (NATS slow or gone; at most 65,536 waiting) are dropped,
// and repaired by the snapshot their gap causes.
//
// # What a client observes
//
// Remote peers appear in list_peers and in pushed peer_joined / peer_left
// exactly like local ones. Consistency is per server and eventual: a
// peer appears on its own server first and on the others one NATS hop
// later (milliseconds), and two servers may briefly list different
// sets. A remote peer's last_seen is the last second its server was heard
// from (its beat vouches for all its peers, since it expires the silent
// ones itself), so every listed entry is as fresh as a local one.
//
// peer_ids are random UUIDv4s (122 bits from crypto/rand) on every
// server, so two servers pick the same one with probability about
// n²/2¹²³ (1e-25 for a million peers). Should it happen anyway, the
// server that sees it keeps the entry it had (a local registration wins
// over a remote one), refuses the other and counts it
// (cluster_peer_id_conflicts_total): an id never names two peers.
//
// A client whose server dies fails over to another server (client
// rendezvous.FailoverWithin, 0.5-1 s after it notices) and registers
// there with the same instance id under a new peer_id. A client on a
// third server sees peer_joined for the new entry as soon as that
// registration is made, and the dead server's peer_left for the old
// peer_id once it is taken for dead (3-4.25 s). Our clients key
// bootstrap peers by instance: the join updates the peer in place (new
// peer_id), and the later peer_left, naming the old peer_id, matches
// nothing. So there is no churn when the client re-registers within the
// 3 s before its old server is taken for dead, which is the case when the
// process dies (its clients see the connection reset at once). When the
// whole host or its network goes, its clients may notice only after their
// own 30 s silence bound; then the third client sees peer_left at 3-4.25 s
// and peer_joined when the client is back. A server that shuts down
// cleanly publishes nothing for the registrations it ends: its clients
// get a close frame, fail over at once, and the others drop its peers
// once its beats stop, by when the new registrations are in.
//
// # Without NATS
//
// While its NATS connection is down a server keeps serving its own
// clients, says so (rendezvous: /healthz answers 200 "degraded: ...",
// parlance_bootstrap_cluster_degraded is 1), publishes nothing (its
// sequence numbers go on, so the gap is seen) and takes nobody for dead,
// since it cannot hear anyone: it keeps the other servers' peers as they
// were, for at most Hold (the peer expiry, 30 s), then drops them. When
// NATS is back it publishes hello under a new generation and every
// server exchanges snapshots with it, pushing only the difference: no
// churn for peers that stayed. When NATS as a whole is down every server
// is in that state and the whole cluster recovers so; since the servers
// then reconnect on their own schedules (each retries every 0.5-1 s), a
// server back on NATS gives the others 2 s more than the 3 s to be heard
// (RejoinGrace). When only one
// server is cut off, the others cannot tell that from its death: they
// drop its peers after 3 s and list them again (peer_joined) when it is
// back; its own clients see no churn.
//
// # Relayed streams
//
// A relayed stream between A, registered with server X, and B,
// registered with Y, is forwarded over NATS (relay.go), so a client
// needs nothing new: each opens its relay WebSocket at the server it is
// registered with, as for a local stream.
//
//   - X gets A's relay_connect and sends open (A's and B's peer_ids, its
//     receive window, its generation) on P.relay.<Y>.<stream>; Y checks
//     B as it would a local target (registered, relay capability, its
//     streams per peer), sends B relay_incoming, or answers close with
//     the error text A is to get (refusals are counted on X only).
//   - B's relay_accept at Y opens Y's half: Y sends accept (its window,
//     its generation) and relay_ready to B; X, on accept, sends A
//     relay_ready. From then on each server forwards its client's binary
//     frames as data messages on the other's per-stream subject: a zero
//     byte, the payload's offset in its direction (8 bytes), the
//     payload. One subscription per server (P.relay.<id>.*), made when
//     it starts, carries all its streams: no subscription is made per
//     stream, whose interest would reach the other NATS nodes a moment
//     after the first message.
//   - Flow control is by credit, per direction. The receiving server
//     announces a window (--relay-window, 256 KiB by default, at least
//     two frames); the sending server publishes a frame only while its
//     offset stays within the receiver's grant, and otherwise stops
//     reading its client's WebSocket (TCP then slows the client). The
//     receiver queues what arrives and grants a quarter window more
//     each time that much is written to its client (credit n: send up to
//     offset n, absolute, so a later grant makes up for a lost one). A
//     reader that does not read thus holds one window on its own server
//     and nothing on the other; data beyond the window or not at the
//     expected offset (a message lost: NATS delivers at most once) ends
//     the stream ("lost").
//   - Each server applies its own client's limits: streams per peer,
//     the per-peer rate (on what its client sends and receives), its
//     total rate, the accept and idle timeouts and the frame limit, and
//     counts the stream in its relay metrics; what goes over NATS is in
//     cluster_relay_bytes_total, what waits for a grant in
//     cluster_relay_credit_wait_seconds_total and what is queued in
//     cluster_relay_buffered_bytes.
//   - Either side ending ends the other: close carries the close frame
//     (and, for a stream not yet accepted, the error) the other client
//     gets, as on one server: 1000 "peer closed", 1001 "peer connection
//     lost", 1001 "peer registration ended", the accept timeout's error.
//     A close follows the data sent before it, and the receiving server
//     writes that data to its client before the close frame.
//
// Failures end streams without waiting for the idle timeout. A server
// that loses NATS ends its cross-server streams at once (its clients
// get 1001 "peer connection lost"), and refuses new ones
// (rendezvous.ErrTextRelayServerUnreachable). The other server ends its
// halves when it takes that server for dead (3-4.25 s, as for its
// peers) or, if the server reconnects sooner, when it hears its next
// generation: a stream lives on one NATS connection of each server. A
// server that shuts down cleanly tells the others that its streams end.
package cluster

// Package rendezvous is the bootstrap server: it registers peers over
// WebSocket, lists them (list_peers, and pushed peer_joined / peer_left
// for clients that ask), relays byte streams between peers that cannot
// reach each other (relay.go), and in cluster mode shares its peers with
// other servers over NATS (cluster.go, xrelay.go, internal/cluster). The
// wire format is the protocol package's; this package adds only
// limits, error texts and timing.
//
// # Cost per connection
//
// One process is meant to hold hundreds of thousands of mostly idle
// clients that each register once and then send a heartbeat every 10 s,
// so what an idle connection costs, and what a register and a heartbeat
// cost, decide how far one server goes (BENCHMARKS.md has the figures).
// The design follows from that:
//
//   - The event loop (loop_linux.go), the default on Linux for a plain
//     TCP listener (Config.GoroutinePerConn turns it off). Serve takes
//     the listening socket out of Go's netpoller and runs epoll loops of
//     its own (EventLoops, one per four Ps by default): the first
//     accepts and gives each connection to a loop in turn. A loop waits in the netpoller on its epoll
//     descriptor, so no thread blocks. It answers a request head that
//     came whole in one read, and reads idle connections itself:
//     heartbeats, registers and the other short messages decodeFast
//     takes (but list_peers) are handled on the loop, the answer written
//     there too as far as the socket takes it (conn.inline,
//     releaseWrites). So an idle connection has no goroutine, stack or
//     poll descriptor (about 3 KiB in all, against 6.5 KiB), and a
//     register wakes no goroutine. Anything else wakes a pooled reader,
//     which reads the connection (a loopConn, a net.Conn whose waits are
//     the loop's word on a channel) until it is idle and hands it back;
//     handshakes in pieces, declined requests, writers, lingering closes
//     and relays run as described below, on a loopConn. A connection
//     that sends no request head is closed by the sweep between the
//     handshake timeout (10 s) and that plus Sweep.
//   - Accept and upgrade (accept.go, handshake.go), without the loop.
//     Serve accepts on its own loop. A pooled goroutine reads the
//     request head; a WebSocket upgrade that parseUpgrade takes is
//     answered right there by gorilla's Upgrader, with no net/http
//     connection, request or response in between. Everything else
//     (/healthz, /metrics, the 426 answer, any unusual handshake) goes
//     to an http.Server with the bytes already read replayed first, and
//     is answered exactly as if it had accepted the connection itself.
//   - Waiting without the loop (conn.go). Each connection has one
//     goroutine of its own, which waits for input in the netpoller's
//     readiness check on the socket, a few frames deep, so that its
//     stack stays at the 2 KiB a goroutine starts with. It makes every
//     read of the socket, one read(2) for what has arrived: a heartbeat
//     frame in its canonical bytes it handles itself, without gorilla or
//     JSON (fastpath.go); anything else it hands to a pooled reader and
//     waits, still inside the readiness check, until the reader has
//     handled it or asks for more. A message that arrives in one piece
//     costs one read(2).
//   - Reading and writing (conn.go, pool.go). Readers, writers and
//     handshakes run on pooled goroutines whose stacks have grown
//     already: a fresh goroutine pays for a stack copy the first time it
//     goes deep. A connection owns a writer only while frames are queued
//     for it; enqueue never blocks, so frames may be queued under
//     Server.mu. A client that lets MaxQueueBytes pile up is dropped.
//   - Lists (registry.go). Each peer keeps its peer_list entry encoded;
//     a heartbeat rewrites only its last_seen digits. A namespace caches
//     its encoded list and shares the bytes with every connection that
//     asks.
//
// Server.mu guards the registrations, the namespaces and the per-address
// state; a connection's queue has its own lock.
package rendezvous

// Package original holds test doubles that behave like the original Rust
// Parlance 0.1.0 as ../shared/PROTOCOL.md describes it, defects included,
// so e2e tests can prove that our client and server interoperate with it:
//
//   - Peer: a LAN client. Announces without instance id or capabilities
//     every 5 s, ignores its own announces by nickname, never sends
//     goodbye, ignores queries (one warning), keeps peers by nickname,
//     sweeps every 5 s with a 15 s timeout, and sends each message on a
//     new TCP connection that it closes after one line.
//   - BootstrapClient: an internet-mode client. Registers with
//     local_addr 0.0.0.0:<port>, lists peers at once and every 5 s,
//     heartbeats every 10 s, skips its own peer_id, never expires peers.
//   - Server: a bootstrap server. Never pushes, lists every peer to
//     everyone, expires 30 s after the last heartbeat with a 10 s sweep,
//     and stops serving a connection after unregister (the original
//     deadlocks there).
//
// Every socket comes from an injected network, so the doubles run on netsim
// and on real sockets alike. They use the protocol package's codecs for the
// baseline messages, whose bytes are pinned to the original's by golden
// tests.
package original

import (
	"context"
	"net"
)

// Network is the part of a host the doubles need; *netsim.Host and the
// client's real network both provide it.
type Network interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Listen(ctx context.Context, network, addr string) (net.Listener, error)
	ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error)
}

// Group is the discovery multicast group and port.
var Group = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 6789}

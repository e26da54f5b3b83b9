// Package netsim is a deterministic in-memory network for testing many
// peers at once: hosts with their own IPv4 addresses on LAN segments,
// streams (TCP-like), unicast and multicast datagrams (UDP-like), and
// faults, all inside a testing/synctest bubble, where simulated time
// passes instantly and a leaked goroutine fails the test.
//
// # Usage
//
// Build the network inside a bubble, from a seed. Test does that, closes the
// network at the end, and on failure logs the command that replays the run:
//
//	func TestDiscovery(t *testing.T) {
//		netsim.Test(t, func(t *testing.T, n *netsim.Network) {
//			lan := n.AddSegment("lan")              // 10.1.0.0/16
//			alice := n.AddHost("alice", lan)        // 10.1.0.1, interface eth0
//			bob := n.AddHost("bob", lan)            // 10.1.0.2
//			n.SetDefaultLink(netsim.Link{Latency: 2 * time.Millisecond})
//
//			alice.Go(func(ctx context.Context) { runNode(ctx, alice) }) // any code taking the interface below
//			bob.Go(func(ctx context.Context) { runNode(ctx, bob) })
//
//			n.RunFor(10 * time.Second)              // or time.Sleep: both advance the fake clock
//			cut := n.Partition([]*netsim.Host{alice}, []*netsim.Host{bob})
//			n.RunUntil(func() bool { return bobForgotAlice() }, time.Minute)
//			cut.Heal()
//			bob.Crash()                             // context cancelled, sockets closed, peers reset
//			bob.Restart()                           // fresh context, same address
//		})
//	}
//
// A *Host has the standard library's calls for programs, so production code
// takes it through a small interface of its own and never imports netsim:
//
//	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
//	DialFrom(ctx context.Context, network, laddr, raddr string) (net.Conn, error) // for hole punching
//	Listen(ctx context.Context, network, addr string) (net.Listener, error)
//	ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error)
//	ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error)
//
// Addresses are "ip:port", "hostname:port" (a host of the network) or
// "localhost:port". The listener works with http.Server.Serve and the
// dialer with websocket.Dialer{NetDialContext: host.DialContext}.
//
// # Hosts and their programs
//
// Each host has a context (Host.Context) that ends when it crashes. Start a
// host's programs with Host.Go (Crash and Close wait for them) or at least
// with its context, and make them return when it ends; the bubble reports
// any goroutine left behind. Hosts are cheap: a thousand is fine.
//
// # Streams
//
// Stream conns are ordered and reliable, with read and write deadlines that
// interrupt blocked calls (timeouts satisfy os.ErrDeadlineExceeded and
// net.Error.Timeout), CloseWrite, a finite window (a writer blocks while
// Options.Window bytes are unread), ECONNREFUSED on a closed port and
// ECONNRESET after a reset. They pass the cases of x/net/nettest.TestConn.
//
// A dial whose SYN is dropped (by a NAT, or at a crashed host) retransmits
// it as Linux does, 1, 3, 7, 15, 31 and 63 s after the first, and fails with
// ETIMEDOUT at 127 s if every SYN is lost; a SYN stalled by a partition is
// not lost, and the dial waits for the heal or its context. A dial's
// ephemeral port is picked as Linux's connect picks it: dials to different
// destinations may share one, since only the 4-tuple must be unique (see
// Determinism for the rule). DialFrom dials
// from a chosen local port, which a listener or other streams of the host
// may hold (SO_REUSEADDR/SO_REUSEPORT, as TCP hole punching needs); only
// the 4-tuple must be unique (else EADDRNOTAVAIL). Two hosts that dial each
// other at about the same time, each from the port the other dials, get
// the two ends of one stream (TCP simultaneous open): a SYN that meets a
// conn dialing its sender moves it to SYN_RCVD, and each end is established
// by the other's SYN-ACK (or, if its own SYN was lost, by an ACK), one round
// trip after the later SYN. Stats.SimultaneousOpens counts the ends.
//
// # Multicast
//
// ListenMulticastUDP binds the group's port with SO_REUSEPORT semantics and
// joins the group on one segment: every such socket on the segment, the
// sender's own included (multicast loopback), gets every datagram sent to
// the group. Receivers see the sender's address on that segment and the
// sending socket's port. A segment is the multicast scope (a multicast
// never crosses a NAT); unicast crosses segments through an ideal router,
// unless NATs stand between them.
//
// # NAT
//
// AddNAT puts a NAT (RFC 4787) between an inside segment and an outside
// one, as tailscale's natlab does:
//
//	internet := n.AddSegment("internet")
//	home := n.AddSegment("home")
//	nat := n.AddNAT("router", home, internet, netsim.NATCone()) // public address on internet
//	alice := n.AddHost("alice", home)
//
// A host behind a NAT reaches every address beyond it, with its source
// translated to the NAT's public address and a mapped port; nothing beyond
// reaches an inside address except through a mapping (a dial gets
// EHOSTUNREACH, a datagram is dropped). Programs see what the real world
// shows them: a server outside sees the NAT's public ip:port as the remote
// address of a conn and the source of a datagram; a conn behind the NAT
// shows its inside address as its own. A NAT behind a NAT (a home router
// behind a carrier-grade NAT) is two AddNAT calls; a packet goes out
// through NATs until it reaches its destination's realm, then in through
// the NATs its destination address leads to.
//
// NATConfig sets:
//
//   - Mapping and Filtering: EndpointIndependent, AddressDependent or
//     AddressAndPortDependent. A mapping that already talks to a remote
//     endpoint (an outbound packet, or an inbound one the filter let in)
//     serves replies to it, as conntrack does.
//   - RandomPorts: every public port drawn from the network's seeded
//     source; else the inside port is kept when free (port preservation).
//   - Hairpin: an inside host reaches another through the public address,
//     and the packet shows the sender's public address as its source.
//   - UDPTimeout, TCPTimeout: a mapping idle this long ends (packets either
//     way refresh it). A TCP mapping also ends when its last connection has
//     seen a FIN each way, or an RST. A stream segment a NAT drops (its
//     mapping expired, say) resets the stream, since streams never lose
//     bytes.
//   - Reset: unsolicited inbound TCP (no mapping, or filtered out) is
//     answered with an RST (a dial gets ECONNREFUSED); by default it is
//     dropped silently, as home routers do, and the dial retransmits and
//     eventually times out. Unsolicited UDP is always dropped.
//
// NATCone (Linux masquerade: endpoint-independent mapping, port preserved,
// address-and-port-dependent filtering), NATSymmetric (masquerade random: a
// random port per destination) and NATFullCone (endpoint-independent
// mapping and filtering) are the usual presets, none hairpinning. TCP hole
// punching (DialFrom the listening port to the peer's public address at
// the same time on both sides) connects through two cone NATs, even if one
// SYN arrives early and is dropped, and times out through two symmetric
// NATs or a cone and a symmetric one, as on real NATs.
//
// A NAT is a host (NAT.Host) with its public address on the outside segment
// (eth0) and one on the inside (eth1); it appears in Hosts. Crashing it
// loses every mapping; while it is down or its link is down, packets
// through it are dropped. Partitions, holds and links act between the end
// hosts, whatever NATs lie between. Run no programs on a NAT's host.
//
// Each NAT counts what it did (NAT.Stats: mappings created, expired, closed
// and flushed, packets translated, inbound packets without a mapping or
// filtered, rejected with an RST, hairpinned or dropped for want of
// hairpinning) and lists its mappings (NAT.Mappings); the network counts
// FaultNATDrop and FaultNATReset. The trace shows each mapping made or
// ended ("nat-map", "nat-expire", "nat-close", "nat-flush"), each packet a
// NAT drops ("udp-nat-drop", "tcp-nat-drop", with the reason), and the
// translated addresses of each packet delivered through NATs ("nat_src",
// "nat_dst").
//
// # Determinism
//
// One scheduler goroutine per network delivers every packet, ordered by
// (delivery time, source host, source socket, that socket's sequence), and
// draws every random number from one PCG seeded by the seed. Between
// instants it calls synctest.Wait, so what the programs do at an instant is
// complete before the network acts on it. Deliveries due within one
// Options.Quantum (1 ms by default) are made together at its end. The
// network-level trace (JSON lines; Options.Trace) is thus a function of the
// seed, provided the programs themselves are deterministic: one event loop
// per node where possible, sorted map keys before visible effects,
// randomness from a seeded source, no package-level state. TraceHash is the
// trace's SHA-256, computed whether or not it is written; CheckDeterminism
// runs a seed twice and names the first line where the traces differ.
//
// Ephemeral ports follow one rule so that goroutines of one program may
// dial at the same instant: a dial's port is a function of its source
// address, its destination ip:port and the host's earlier dials to that
// destination (a hash of the first two plus a counter per destination,
// skipping ports a listener holds or whose 4-tuple is taken), and a
// stream's place in the delivery order (its "source socket") is a hash
// of its 4-tuple. Neither depends on dials to other destinations, so N
// goroutines that each dial a different destination get the same ports
// and the same trace whatever order they run in. Order still matters
// between dials to the same destination at one instant (they may swap
// ports), and between sockets bound to port 0 at one instant (UDP sockets
// and listeners take the next free port of a counter per host, and UDP
// sockets are ordered by creation): make those from one goroutine.
//
// Datagram receivers are woken after the scheduler has queued all of an
// instant's deliveries, so a reader wakes once per instant with every
// datagram of the instant waiting for it.
//
// Because the scheduler calls synctest.Wait, code beside a live Network must
// not call it too (two concurrent callers panic): call Network.Settle, which
// returns once the current instant is delivered and the bubble idle.
//
// # Faults
//
// Every fault can be switched at any simulated time, acts on packets already
// in flight, and is counted (FaultCounts, keys FaultKind):
//
//   - Link latency, jitter, loss and duplication: SetDefaultLink, SetLinks.
//     Jitter, loss and duplication apply to datagrams; streams get latency.
//   - Partition (both ways), PartitionOneWay, Isolate: datagrams dropped,
//     streams stalled (never cut in the middle); Rule.Heal resumes them.
//   - Hold: datagrams and streams wait until Rule.Release, then flow in order.
//   - Host.LinkDown / LinkUp.
//   - Host.Crash / Restart; ResetStreams resets streams explicitly.
//   - NATs (see NAT): packets without a mapping, filtered out or not
//     hairpinned are dropped (FaultNATDrop) or answered with an RST
//     (FaultNATReset).
//   - OnPacket sees every packet on arrival and can drop it or, through
//     Verdict.Then, apply any fault right after (partition after the first
//     "register", say).
//   - OnPacket as a man in the middle: Verdict.Replace delivers other bytes
//     in place of a datagram's or a stream data segment's (any length; the
//     stream's window stays exact), FaultRewrite; Verdict.Duplicate delivers
//     a datagram twice or a segment's bytes twice in a row, FaultReplay.
//     Packet.Payload is valid only during the call: a hook that captures it
//     copies it, and may return the copy as the Replace of a later packet to
//     replay it.
//
// netsim uses the standard library only and imports nothing of Parlance.
package netsim

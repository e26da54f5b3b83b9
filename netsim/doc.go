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
// # Multicast
//
// ListenMulticastUDP binds the group's port with SO_REUSEPORT semantics and
// joins the group on one segment: every such socket on the segment, the
// sender's own included (multicast loopback), gets every datagram sent to
// the group. Receivers see the sender's address on that segment and the
// sending socket's port. A segment is the multicast scope; unicast crosses
// segments through an ideal router.
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

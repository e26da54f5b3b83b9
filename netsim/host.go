package netsim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
)

const firstEphemeral = 32768

type iface struct {
	seg   *Segment
	ip    netip.Addr
	name  string
	index int
}

// Host is a simulated machine: one interface per segment, its own ports,
// and a context that lives as long as the host does (until Crash).
//
// Its DialContext, Listen, ListenPacket and ListenMulticastUDP have the
// standard library's shapes, so production code can take a *Host through a
// small interface of its own.
type Host struct {
	n      *Network
	name   string
	idx    int32
	ifaces []iface

	// Guarded by n.mu.
	up        bool
	linkDown  bool
	ctx       context.Context
	cancel    context.CancelFunc
	nextPort  uint16                    // next ephemeral port for a UDP socket or a listener
	nextID    uint64                    // last UDP socket id
	dialNext  map[netip.AddrPort]uint16 // by destination: where its next dial's port search starts, past its hash
	listeners map[uint16]*listener
	tcpPorts  map[uint16]int
	udp       map[uint16][]*packetConn
	tuples    map[[2]netip.AddrPort]*conn // every live conn, by (local, remote): a 4-tuple is unique
	nat       *NAT                        // set if the host is a NAT

	wg sync.WaitGroup
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// Network returns the network the host belongs to.
func (h *Host) Network() *Network { return h.n }

// IP returns the address of the host's first interface.
func (h *Host) IP() netip.Addr { return h.ifaces[0].ip }

// Addrs returns the address of each interface, in interface order.
func (h *Host) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, ifc := range h.ifaces {
		out = append(out, ifc.ip)
	}
	return out
}

// AddrPort returns the host's first address with the given port, for
// building addresses to dial: h.AddrPort(80).String() is "10.1.0.1:80".
func (h *Host) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(h.IP(), port) }

// Interfaces returns the host's interfaces (eth0, eth1, ...), in segment
// order, as the standard library describes them.
func (h *Host) Interfaces() []net.Interface {
	var out []net.Interface
	for _, ifc := range h.ifaces {
		out = append(out, ifc.netInterface())
	}
	return out
}

func (ifc iface) netInterface() net.Interface {
	return net.Interface{Index: ifc.index, MTU: 1500, Name: ifc.name, Flags: net.FlagUp | net.FlagBroadcast | net.FlagMulticast | net.FlagRunning}
}

// Interface returns the named interface, or nil.
func (h *Host) Interface(name string) *net.Interface {
	for _, ifc := range h.ifaces {
		if ifc.name == name {
			ni := ifc.netInterface()
			return &ni
		}
	}
	return nil
}

// Segments returns the segments the host is on, in interface order.
func (h *Host) Segments() []*Segment {
	var out []*Segment
	for _, ifc := range h.ifaces {
		out = append(out, ifc.seg)
	}
	return out
}

// Context returns the host's context: cancelled when the host crashes (or
// the network closes). Start the host's programs with it, or with Go.
func (h *Host) Context() context.Context {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	return h.ctx
}

// Up reports whether the host is running (not crashed).
func (h *Host) Up() bool {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	return h.up
}

// Go runs f(h.Context()) in a goroutine that Crash and Network.Close wait
// for: f must return soon after its context is cancelled. A goroutine
// started by Go must not call Crash on its own host.
func (h *Host) Go(f func(ctx context.Context)) {
	ctx := h.Context()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f(ctx)
	}()
}

// Crash stops the host as a power cut would: its context is cancelled, its
// sockets are closed, its peers' streams are reset (the RST travels like
// any packet), datagrams and segments on their way to it vanish. Crash then
// waits for the goroutines started with Go to return.
func (h *Host) Crash() {
	n := h.n
	n.mu.Lock()
	if !h.up || n.closed {
		n.mu.Unlock()
		return
	}
	n.crashLocked(h, "crash")
	n.mu.Unlock()
	n.wake()
	h.wg.Wait()
}

// Restart brings a crashed host back with a fresh context, the same
// addresses and no sockets. Start its programs again.
func (h *Host) Restart() {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if h.up || n.closed {
		return
	}
	h.up = true
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.nextPort = firstEphemeral
	n.counts[fRestart]++
	n.tr.line(n.nowLocked(), "restart", "host", h.name)
}

func (n *Network) crashLocked(h *Host, why string) {
	h.up = false
	h.cancel()
	if why == "crash" {
		n.counts[fCrash]++
	}
	n.tr.line(n.nowLocked(), why, "host", h.name)
	for _, port := range sortedKeys(h.listeners) {
		h.listeners[port].closeLocked()
	}
	for _, port := range sortedKeys(h.udp) {
		for _, p := range slices.Clone(h.udp[port]) {
			p.closeLocked()
		}
	}
	for _, c := range h.sortedConnsLocked() {
		if c.abortLocked() && why == "crash" {
			n.counts[fReset]++
		}
	}
	h.listeners, h.tcpPorts, h.udp, h.tuples = nil, nil, nil, nil
	if h.nat != nil && why == "crash" {
		h.nat.flushLocked(n.nowLocked())
	}
}

// sortedConnsLocked returns the host's conns by 4-tuple, an order that
// does not depend on the order they were made in.
func (h *Host) sortedConnsLocked() []*conn {
	out := make([]*conn, 0, len(h.tuples))
	for _, c := range h.tuples {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *conn) int {
		if k := a.local.Compare(b.local); k != 0 {
			return k
		}
		return a.remote.Compare(b.remote)
	})
	return out
}

func sortedKeys[K uint16 | uint64, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// hasIPLocked reports whether ip is one of the host's addresses.
func (h *Host) hasIP(ip netip.Addr) bool {
	for _, ifc := range h.ifaces {
		if ifc.ip == ip {
			return true
		}
	}
	return false
}

// srcIPFor picks the source address for a packet to dst: the interface on
// dst's segment, else the first interface.
func (h *Host) srcIPFor(dst netip.Addr) netip.Addr {
	if dst.IsLoopback() {
		return dst
	}
	for _, ifc := range h.ifaces {
		if ifc.seg.prefix.Contains(dst) {
			return ifc.ip
		}
	}
	return h.ifaces[0].ip
}

// bindLocked checks that h may bind a socket to ap and picks its port: an
// ephemeral one when ap's port is 0, else ap's own unless inUse says it is
// taken. It also returns the address the socket shows as its own (the
// host's first address for an unspecified one). The caller holds h.n.mu.
func (h *Host) bindLocked(ap netip.AddrPort, udp bool, inUse func(port uint16) bool) (port uint16, shown netip.Addr, err error) {
	if !h.up || h.n.closed {
		return 0, netip.Addr{}, net.ErrClosed
	}
	ip := ap.Addr()
	if !ip.IsUnspecified() && !ip.IsLoopback() && !h.hasIP(ip) {
		return 0, netip.Addr{}, syscallErr("bind", syscall.EADDRNOTAVAIL)
	}
	port = ap.Port()
	if port == 0 {
		if port, err = h.allocPortLocked(udp); err != nil {
			return 0, netip.Addr{}, syscallErr("bind", syscall.EADDRNOTAVAIL)
		}
	} else if inUse(port) {
		return 0, netip.Addr{}, syscallErr("bind", syscall.EADDRINUSE)
	}
	shown = ip
	if ip.IsUnspecified() {
		shown = h.IP()
	}
	return port, shown, nil
}

// allocPortLocked returns the next free ephemeral port for a UDP socket or
// a listener, counting up from the last one (from firstEphemeral after a
// restart). A dial's port comes from dialPortLocked instead.
func (h *Host) allocPortLocked(udp bool) (uint16, error) {
	for range 65536 - firstEphemeral {
		p := h.nextPort
		h.nextPort++
		if h.nextPort == 0 {
			h.nextPort = firstEphemeral
		}
		if udp {
			if len(h.udp[p]) == 0 {
				return p, nil
			}
		} else if h.listeners[p] == nil && h.tcpPorts[p] == 0 {
			return p, nil
		}
	}
	return 0, syscall.EADDRNOTAVAIL
}

// dialPortLocked picks the ephemeral port of a dial from src to dst as
// Linux does (RFC 6056's double-hash algorithm, with a counter per
// destination): the search starts at a hash of (src, dst) plus that
// destination's counter, and takes the first port no listener holds whose
// 4-tuple with dst is free. Ports that dials to other destinations hold
// are not skipped (only the 4-tuple must be unique), so the port depends on
// src, dst and the earlier dials to dst alone: goroutines dialing different
// destinations at one instant get the same ports whatever order they run
// in. The counter moves past the port taken and survives a restart, so a
// new dial does not reuse the 4-tuple of one whose segments may still be
// in flight.
func (h *Host) dialPortLocked(src netip.Addr, dst netip.AddrPort) (uint16, error) {
	const span = 65536 - firstEphemeral
	base := int(fnvAddrPort(fnvAddrPort(fnvOffset, netip.AddrPortFrom(src, 0)), dst) % span)
	off := int(h.dialNext[dst])
	for i := range span {
		p := uint16(firstEphemeral + (base+off+i)%span)
		if h.listeners[p] == nil && h.tuples[[2]netip.AddrPort{netip.AddrPortFrom(src, p), dst}] == nil {
			if h.dialNext == nil {
				h.dialNext = make(map[netip.AddrPort]uint16)
			}
			h.dialNext[dst] = uint16((off + i + 1) % span)
			return p, nil
		}
	}
	return 0, syscall.EADDRNOTAVAIL
}

// resolve turns "host:port" into an address: host is an IPv4 literal, a
// host name of the network, or "localhost"; empty means unspecified.
func (n *Network) resolve(addr string) (netip.AddrPort, error) {
	hostPart, portPart, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portPart, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid port %q", portPart)
	}
	var ip netip.Addr
	switch hostPart {
	case "":
		ip = netip.IPv4Unspecified()
	case "localhost":
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		ip, err = netip.ParseAddr(hostPart)
		if err != nil {
			n.mu.Lock()
			h := n.byName[hostPart]
			n.mu.Unlock()
			if h == nil {
				return netip.AddrPort{}, &net.DNSError{Err: "no such host", Name: hostPart, IsNotFound: true}
			}
			ip = h.IP()
		}
		ip = ip.Unmap()
		if !ip.Is4() {
			return netip.AddrPort{}, fmt.Errorf("netsim: only IPv4 is simulated: %s", ip)
		}
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func checkNetwork(network string, want ...string) error {
	if slices.Contains(want, network) {
		return nil
	}
	return net.UnknownNetworkError(network)
}

func opError(op, network string, src, dst net.Addr, err error) error {
	return &net.OpError{Op: op, Net: network, Source: src, Addr: dst, Err: err}
}

func syscallErr(call string, errno syscall.Errno) error { return os.NewSyscallError(call, errno) }

func tcpAddr(ap netip.AddrPort) *net.TCPAddr { return net.TCPAddrFromAddrPort(ap) }
func udpAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

package netsim

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// NATBehavior is a mapping or filtering behaviour of RFC 4787.
type NATBehavior uint8

// The behaviours, from the most open to the strictest.
const (
	// EndpointIndependent: a mapping serves every destination (mapping);
	// anyone may send to it (filtering).
	EndpointIndependent NATBehavior = iota
	// AddressDependent: one mapping per destination IP (mapping); only
	// IPs the inside endpoint sent to may send back (filtering).
	AddressDependent
	// AddressAndPortDependent: one mapping per destination ip:port
	// (mapping); only ip:ports the inside endpoint sent to may send back
	// (filtering).
	AddressAndPortDependent
)

var natBehaviorNames = [...]string{"endpoint-independent", "address-dependent", "address-and-port-dependent"}

func (b NATBehavior) String() string {
	if int(b) < len(natBehaviorNames) {
		return natBehaviorNames[b]
	}
	return fmt.Sprintf("NATBehavior(%d)", uint8(b))
}

// NATConfig is how a NAT behaves. The zero value is a full-cone NAT:
// endpoint-independent mapping and filtering, inside ports preserved when
// free, no hairpinning, unsolicited inbound packets dropped, default
// timeouts.
type NATConfig struct {
	// Mapping decides when packets from one inside endpoint share a
	// public port: always (EndpointIndependent), per destination IP, or
	// per destination ip:port (symmetric).
	Mapping NATBehavior
	// Filtering decides which outside endpoints may send to a mapping.
	Filtering NATBehavior
	// RandomPorts picks every public port at random (from the network's
	// seeded source); otherwise the inside port is kept when it is free
	// on the public side, and a random one taken when not.
	RandomPorts bool
	// Hairpin lets an inside host reach another inside host (or itself)
	// through the NAT's public address. The packet arrives with the
	// sender's public address as its source.
	Hairpin bool
	// UDPTimeout ends a UDP mapping idle for this long (packets in either
	// direction refresh it). Default 2 minutes (RFC 4787's minimum).
	UDPTimeout time.Duration
	// TCPTimeout ends a TCP mapping idle for this long. Default 2 h 4 min
	// (RFC 5382). A TCP mapping also ends when its last connection has
	// seen a FIN each way, or an RST.
	TCPTimeout time.Duration
	// Reset answers an unsolicited inbound TCP segment (no mapping, or
	// filtered out) with an RST from the address it was sent to, as a
	// Linux router without a drop rule does; the default drops it silently,
	// as home routers do. Unsolicited UDP is always dropped.
	Reset bool
}

// NATCone is Linux masquerade: endpoint-independent mapping with the
// inside port preserved, address-and-port-dependent filtering. TCP hole
// punching works between two of them.
func NATCone() NATConfig {
	return NATConfig{Mapping: EndpointIndependent, Filtering: AddressAndPortDependent}
}

// NATSymmetric is Linux "masquerade random", as many CGNATs: a new random
// public port per destination, address-and-port-dependent filtering. Hole
// punching fails between two of them.
func NATSymmetric() NATConfig {
	return NATConfig{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent, RandomPorts: true}
}

// NATFullCone is endpoint-independent mapping and filtering with the
// inside port preserved: once an inside endpoint has sent anything,
// anyone can reach it at its public address.
func NATFullCone() NATConfig {
	return NATConfig{Mapping: EndpointIndependent, Filtering: EndpointIndependent}
}

func (c NATConfig) withDefaults() NATConfig {
	if c.UDPTimeout <= 0 {
		c.UDPTimeout = 2 * time.Minute
	}
	if c.TCPTimeout <= 0 {
		c.TCPTimeout = 2*time.Hour + 4*time.Minute
	}
	return c
}

// NATStats counts what one NAT did.
type NATStats struct {
	MappingsCreated  int64 // public ports handed out
	MappingsExpired  int64 // mappings ended by their idle timeout
	MappingsClosed   int64 // TCP mappings ended by FINs both ways or an RST
	MappingsFlushed  int64 // mappings lost when the NAT's host crashed
	Translated       int64 // packets translated (outbound and inbound)
	InboundNoMapping int64 // inbound packets for a public port with no mapping
	InboundFiltered  int64 // inbound packets refused by the filtering behaviour
	Rejected         int64 // unsolicited inbound TCP segments answered with an RST (Reset)
	Hairpinned       int64 // packets turned around to an inside host
	HairpinDropped   int64 // packets to the NAT's own public address dropped: no hairpinning
	Down             int64 // packets dropped because the NAT's host was down or its link was
}

// NATMapping is one mapping of a NAT, as NAT.Mappings lists it.
type NATMapping struct {
	Proto    string         // "udp" or "tcp"
	Internal netip.AddrPort // the inside endpoint
	External netip.AddrPort // its public address
	Idle     time.Duration  // time since a packet last used it
}

const (
	protoUDP = 0
	protoTCP = 1
)

var protoNames = [2]string{"udp", "tcp"}

// NAT is a network address translator between an inside segment and an
// outside one (see AddNAT). Its host (NAT.Host) has the public address on
// the outside segment (eth0) and an address on the inside one (eth1).
type NAT struct {
	n       *Network
	name    string
	host    *Host
	inside  *Segment
	outside *Segment
	public  netip.Addr
	cfg     NATConfig

	// Guarded by n.mu.
	tabs       [2]natTable
	stats      NATStats
	nextExpiry int64
}

type natTable struct {
	byExt map[uint16]*natMapping
	byInt map[netip.AddrPort][]*natMapping
	list  []*natMapping // in creation order
}

type natMapping struct {
	proto    int
	internal netip.AddrPort
	ext      uint16
	last     int64
	sessions map[netip.AddrPort]*natSession // by remote endpoint
}

// natSession is what the NAT knows of one remote endpoint of a mapping.
type natSession struct {
	out           bool // the inside endpoint sent to it (what filtering looks at)
	finOut, finIn bool // TCP: a FIN went out, came in
}

// AddNAT adds a NAT between two segments: hosts on inside reach every
// address beyond it through it, with their source translated to the NAT's
// public address on outside; nothing beyond it reaches an inside address
// except through a mapping. A NAT is a host of its own (named name, with
// interfaces on both segments, eth0 on outside); crashing that host loses
// every mapping, and while it is down or its link is down, packets through
// it are dropped. Run no programs on it.
//
// Two NATs in a row (a home router behind a carrier-grade NAT) are two
// calls: AddNAT("home", lan, isp, NATCone()) and AddNAT("cgnat", isp,
// internet, NATSymmetric()). AddNAT panics if inside is already behind a
// NAT or the NATs would form a loop.
func (n *Network) AddNAT(name string, inside, outside *Segment, cfg NATConfig) *NAT {
	if inside == outside {
		panic("netsim: a NAT needs two different segments")
	}
	n.mu.Lock()
	if inside.behind != nil {
		n.mu.Unlock()
		panic(fmt.Sprintf("netsim: segment %s is already behind NAT %s", inside.name, inside.behind.name))
	}
	for r := outside.behind; r != nil; r = r.outside.behind {
		if r.inside == inside {
			n.mu.Unlock()
			panic(fmt.Sprintf("netsim: NAT %s would make a loop", name))
		}
	}
	n.mu.Unlock()
	h := n.AddHost(name, outside, inside)
	x := &NAT{n: n, name: name, host: h, inside: inside, outside: outside, public: h.ifaces[0].ip,
		cfg: cfg.withDefaults(), nextExpiry: math.MaxInt64}
	for i := range x.tabs {
		x.tabs[i] = natTable{byExt: make(map[uint16]*natMapping), byInt: make(map[netip.AddrPort][]*natMapping)}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	h.nat = x
	inside.behind = x
	c := x.cfg
	n.tr.line(n.nowLocked(), "nat", "name", name, "inside", inside.name, "outside", outside.name,
		"public", x.public.String(), "mapping", c.Mapping.String(), "filtering", c.Filtering.String(),
		"random_ports", fmt.Sprint(c.RandomPorts), "hairpin", fmt.Sprint(c.Hairpin), "reset", fmt.Sprint(c.Reset),
		"udp_timeout", c.UDPTimeout.String(), "tcp_timeout", c.TCPTimeout.String())
	return x
}

// Name returns the name given to AddNAT.
func (x *NAT) Name() string { return x.name }

// Host returns the NAT's host (to crash it, partition it, take its link down).
func (x *NAT) Host() *Host { return x.host }

// PublicIP returns the NAT's address on its outside segment.
func (x *NAT) PublicIP() netip.Addr { return x.public }

// Config returns the NAT's configuration, with defaults filled in.
func (x *NAT) Config() NATConfig { return x.cfg }

// Stats returns what the NAT has done so far. Mappings idle past their
// timeout are expired first.
func (x *NAT) Stats() NATStats {
	x.n.mu.Lock()
	defer x.n.mu.Unlock()
	x.sweepLocked(x.n.nowLocked())
	return x.stats
}

// Mappings returns the NAT's live mappings, UDP first, each protocol's in
// the order they were made. Mappings idle past their timeout are expired
// first.
func (x *NAT) Mappings() []NATMapping {
	n := x.n
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.nowLocked()
	x.sweepLocked(now)
	var out []NATMapping
	for proto := range x.tabs {
		for _, m := range x.tabs[proto].list {
			out = append(out, NATMapping{Proto: protoNames[proto], Internal: m.internal,
				External: netip.AddrPortFrom(x.public, m.ext), Idle: time.Duration(now - m.last)})
		}
	}
	return out
}

func (x *NAT) timeout(proto int) int64 {
	if proto == protoTCP {
		return int64(x.cfg.TCPTimeout)
	}
	return int64(x.cfg.UDPTimeout)
}

// sweepLocked ends the mappings idle past their timeout.
func (x *NAT) sweepLocked(now int64) {
	if now < x.nextExpiry {
		return
	}
	next := int64(math.MaxInt64)
	for proto := range x.tabs {
		t := &x.tabs[proto]
		to := x.timeout(proto)
		var dead []*natMapping
		for _, m := range t.list {
			if now-m.last >= to {
				dead = append(dead, m)
			} else {
				next = min(next, m.last+to)
			}
		}
		for _, m := range dead {
			x.stats.MappingsExpired++
			x.removeLocked(now, m, "nat-expire")
		}
	}
	x.nextExpiry = next
}

func (x *NAT) removeLocked(now int64, m *natMapping, ev string) {
	t := &x.tabs[m.proto]
	delete(t.byExt, m.ext)
	if ms := slices.DeleteFunc(t.byInt[m.internal], func(o *natMapping) bool { return o == m }); len(ms) == 0 {
		delete(t.byInt, m.internal)
	} else {
		t.byInt[m.internal] = ms
	}
	if i := slices.Index(t.list, m); i >= 0 {
		t.list = slices.Delete(t.list, i, i+1)
	}
	x.n.tr.line(now, ev, "nat", x.name, "proto", protoNames[m.proto], "int", m.internal.String(),
		"ext", netip.AddrPortFrom(x.public, m.ext).String())
}

// flushLocked forgets every mapping: the NAT's host crashed.
func (x *NAT) flushLocked(now int64) {
	for proto := range x.tabs {
		for _, m := range slices.Clone(x.tabs[proto].list) {
			x.stats.MappingsFlushed++
			x.removeLocked(now, m, "nat-flush")
		}
	}
}

// findLocked returns the mapping an outbound packet from src to dst uses,
// or nil if it needs a new one. A mapping that already talks to dst (also
// one let in by the filter) serves it, as a conntrack entry would; else
// the mapping behaviour decides.
func (x *NAT) findLocked(proto int, src, dst netip.AddrPort) *natMapping {
	ms := x.tabs[proto].byInt[src]
	for _, m := range ms {
		if m.sessions[dst] != nil {
			return m
		}
	}
	switch x.cfg.Mapping {
	case EndpointIndependent:
		if len(ms) > 0 {
			return ms[0]
		}
	case AddressDependent:
		for _, m := range ms {
			if m.sentToAddr(dst.Addr()) {
				return m
			}
		}
	}
	return nil
}

func (m *natMapping) sentToAddr(ip netip.Addr) bool {
	for ap, s := range m.sessions {
		if s.out && ap.Addr() == ip {
			return true
		}
	}
	return false
}

func (x *NAT) allocPortLocked(proto int, want uint16) uint16 {
	t := &x.tabs[proto]
	if !x.cfg.RandomPorts && want != 0 && t.byExt[want] == nil {
		return want
	}
	for range 1 << 20 {
		p := uint16(1024 + x.n.rng.IntN(65536-1024))
		if t.byExt[p] == nil {
			return p
		}
	}
	panic(fmt.Sprintf("netsim: NAT %s has no free %s port", x.name, protoNames[proto]))
}

// outboundLocked translates the source of a packet leaving through the
// NAT and returns the new source.
func (x *NAT) outboundLocked(now int64, proto int, kind chunkKind, src, dst netip.AddrPort) netip.AddrPort {
	x.sweepLocked(now)
	m := x.findLocked(proto, src, dst)
	t := &x.tabs[proto]
	if m == nil {
		m = &natMapping{proto: proto, internal: src, ext: x.allocPortLocked(proto, src.Port()), last: now,
			sessions: make(map[netip.AddrPort]*natSession)}
		t.byExt[m.ext] = m
		t.byInt[src] = append(t.byInt[src], m)
		t.list = append(t.list, m)
		x.stats.MappingsCreated++
		x.nextExpiry = min(x.nextExpiry, now+x.timeout(proto))
		x.n.tr.line(now, "nat-map", "nat", x.name, "proto", protoNames[proto], "int", src.String(),
			"ext", netip.AddrPortFrom(x.public, m.ext).String(), "dst", dst.String())
	}
	m.last = now
	s := m.sessions[dst]
	if s == nil {
		s = &natSession{}
		m.sessions[dst] = s
	}
	s.out = true
	x.stats.Translated++
	ext := netip.AddrPortFrom(x.public, m.ext)
	if proto == protoTCP {
		x.trackLocked(now, m, dst, s, kind, true)
	}
	return ext
}

// inboundLocked translates the destination of a packet arriving at the
// NAT's public address, or says why it is dropped ("no-mapping",
// "filtered").
func (x *NAT) inboundLocked(now int64, proto int, kind chunkKind, src, dst netip.AddrPort) (netip.AddrPort, string) {
	x.sweepLocked(now)
	m := x.tabs[proto].byExt[dst.Port()]
	if m == nil {
		x.stats.InboundNoMapping++
		return netip.AddrPort{}, "no-mapping"
	}
	s := m.sessions[src]
	switch x.cfg.Filtering {
	case AddressDependent:
		if !m.sentToAddr(src.Addr()) {
			x.stats.InboundFiltered++
			return netip.AddrPort{}, "filtered"
		}
	case AddressAndPortDependent:
		if s == nil || !s.out {
			x.stats.InboundFiltered++
			return netip.AddrPort{}, "filtered"
		}
	}
	m.last = now
	if s == nil {
		s = &natSession{}
		m.sessions[src] = s
	}
	x.stats.Translated++
	in := m.internal
	if proto == protoTCP {
		x.trackLocked(now, m, src, s, kind, false)
	}
	return in, ""
}

// trackLocked follows the end of TCP connections: a session ends after a
// FIN each way or an RST, and a mapping ends with its last session.
func (x *NAT) trackLocked(now int64, m *natMapping, remote netip.AddrPort, s *natSession, kind chunkKind, out bool) {
	switch kind {
	case ckFin:
		if out {
			s.finOut = true
		} else {
			s.finIn = true
		}
		if !s.finOut || !s.finIn {
			return
		}
	case ckRst:
	default:
		return
	}
	delete(m.sessions, remote)
	if len(m.sessions) == 0 {
		x.stats.MappingsClosed++
		x.removeLocked(now, m, "nat-close")
	}
}

// natInfo is what NATs did to a packet, kept apart from the packet so
// that those that meet no NAT (multicast above all) stay small.
type natInfo struct {
	path natPath        // its way out (path.src: its source beyond the NATs)
	fdst netip.AddrPort // the address it was delivered to, after the NATs
}

// natPath is the way of one unicast packet through the NATs: out through
// those between its source and its destination's realm (at send), then in
// through those the destination address leads to (on arrival).
type natPath struct {
	src   netip.AddrPort // the source after the NATs on the way out
	up    []*NAT         // the NATs it left through
	drop  string         // why it was dropped, if it was
	at    *NAT           // the NAT that dropped it, if one did
	atDst netip.AddrPort // the destination it had there
}

// realmLocked returns the NAT that ip is behind (nil: no NAT) and whether
// ip is an address of the network.
func (n *Network) realmLocked(ip netip.Addr) (*NAT, bool) {
	h := n.byIP[ip]
	if h == nil {
		return nil, false
	}
	for _, ifc := range h.ifaces {
		if ifc.ip == ip {
			return ifc.seg.behind, true
		}
	}
	return nil, false
}

// routeOutLocked takes a packet from src out through NATs until it
// reaches the realm of dst's address, translating its source at each.
func (n *Network) routeOutLocked(now int64, proto int, kind chunkKind, src, dst netip.AddrPort) natPath {
	p := natPath{src: src}
	r, ok := n.realmLocked(src.Addr())
	dr, dok := n.realmLocked(dst.Addr())
	if !ok || !dok {
		p.drop = "unreachable"
		return p
	}
	for r != dr {
		if r == nil {
			p.drop = "unreachable"
			return p
		}
		if !r.host.up || r.host.linkDown {
			r.stats.Down++
			p.drop, p.at, p.atDst = "nat-down", r, dst
			return p
		}
		p.src = r.outboundLocked(now, proto, kind, p.src, dst)
		p.up = append(p.up, r)
		r = r.outside.behind
	}
	return p
}

// routeInLocked takes a packet that reached its destination's realm in
// through the NATs its destination address leads to, and returns the host
// that gets it and the address it is delivered to (or sets p.drop).
func (n *Network) routeInLocked(now int64, proto int, kind chunkKind, p *natPath, dst netip.AddrPort) (*Host, netip.AddrPort) {
	for range 64 {
		h := n.byIP[dst.Addr()]
		if h == nil {
			p.drop = "unreachable"
			return nil, dst
		}
		x := h.nat
		if x == nil || dst.Addr() != x.public {
			return h, dst
		}
		hairpin := slices.Contains(p.up, x)
		switch {
		case hairpin && !x.cfg.Hairpin:
			x.stats.HairpinDropped++
			p.drop = "hairpin-off"
		case !h.up || h.linkDown:
			x.stats.Down++
			p.drop = "nat-down"
		}
		if p.drop == "" {
			var in netip.AddrPort
			in, p.drop = x.inboundLocked(now, proto, kind, p.src, dst)
			if p.drop == "" {
				if hairpin {
					x.stats.Hairpinned++
				}
				dst = in
				continue
			}
		}
		p.at, p.atDst = x, dst
		return nil, dst
	}
	p.drop = "unreachable"
	return nil, dst
}

// peekHostLocked guesses the host a packet will reach, without changing
// anything (no mapping made or refreshed, no filter applied): for the link
// that sets its latency and for the OnPacket hook. nil if none.
func (n *Network) peekHostLocked(proto int, src, dst netip.AddrPort) *Host {
	r, ok := n.realmLocked(src.Addr())
	dr, dok := n.realmLocked(dst.Addr())
	if !ok || !dok {
		return nil
	}
	for r != dr {
		if r == nil {
			return nil
		}
		r = r.outside.behind
	}
	for range 64 {
		h := n.byIP[dst.Addr()]
		if h == nil || h.nat == nil || dst.Addr() != h.nat.public {
			return h
		}
		m := h.nat.tabs[proto].byExt[dst.Port()]
		if m == nil {
			return nil
		}
		dst = m.internal
	}
	return nil
}

// reachableLocked reports whether a packet from src can reach dst's realm
// at all (a NAT's public address is reachable; an address behind a NAT is
// not, from beyond it).
func (n *Network) reachableLocked(src, dst netip.Addr) bool {
	r, ok := n.realmLocked(src)
	dr, dok := n.realmLocked(dst)
	if !ok || !dok {
		return false
	}
	for r != dr {
		if r == nil {
			return false
		}
		r = r.outside.behind
	}
	return true
}

// natDropLocked counts and traces a packet dropped on its way through the
// NATs.
func (n *Network) natDropLocked(now int64, proto int, kind string, src, dst netip.AddrPort, p *natPath) {
	if p.at != nil {
		n.counts[fNATDrop]++
	}
	t := &n.tr
	t.begin(now, protoNames[proto]+"-nat-drop")
	t.str("kind", kind)
	t.str("src", src.String())
	t.str("dst", dst.String())
	t.str("why", p.drop)
	if p.at != nil {
		t.str("nat", p.at.name)
		t.str("nat_src", p.src.String())
		t.str("nat_dst", p.atDst.String())
	}
	t.end()
}

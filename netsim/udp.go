package netsim

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"
)

// datagram is one UDP datagram on one segment (multicast) or to one host
// (unicast). Its payload is shared by every receiver and never modified
// (a Verdict.Replace swaps in a new slice before any receiver gets it).
type datagram struct {
	from    *Host
	ep      uint64
	seq     uint64
	sub     uint32
	sentAt  int64
	u       float64 // jitter draw in [0, 1)
	src     netip.AddrPort
	srcAddr *net.UDPAddr // shared by receivers: what ReadFrom returns
	dst     netip.AddrPort
	seg     *Segment // multicast: the segment it is sent on
	payload []byte   // replaced (never modified) by the hook before the first delivery
	hooked  bool     // the OnPacket hook has seen it
	nat     *natInfo // unicast through NATs: what they did to it; nil if nothing
}

// natPath returns the datagram's way out through NATs.
func (dg *datagram) natPath() natPath {
	if dg.nat != nil {
		return dg.nat.path
	}
	return natPath{src: dg.src}
}

// packetConn is a UDP socket. It implements net.PacketConn.
type packetConn struct {
	n     *Network
	h     *Host
	id    uint64
	port  uint16
	bind  netip.Addr // unspecified or one of the host's addresses
	local *net.UDPAddr
	seg   *Segment       // multicast interface's segment; nil: all of the host's
	group netip.AddrPort // joined group, if valid
	seq   uint64         // datagrams sent, guarded by n.mu

	mu       sync.Mutex
	q        []*datagram
	qhead    int
	qbytes   int
	closed   bool
	readable chan struct{}
	closedCh chan struct{}
	rd, wd   deadline
}

// ListenPacket opens a UDP socket ("udp" or "udp4") on addr, for example
// ":0" for an ephemeral port. LocalAddr and ReadFrom return *net.UDPAddr.
func (h *Host) ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error) {
	if err := checkNetwork(network, "udp", "udp4"); err != nil {
		return nil, opError("listen", network, nil, nil, err)
	}
	ap, err := h.n.resolve(addr)
	if err != nil {
		return nil, opError("listen", network, nil, nil, err)
	}
	return h.listenUDP(network, ap, netip.AddrPort{}, nil)
}

// ListenMulticastUDP opens a UDP socket bound to the group's port on every
// address (with SO_REUSEPORT semantics: every such socket of the host gets
// every datagram sent to the group) and joins the group on ifi's segment
// (nil: the host's first interface). Datagrams it sends to the group go to
// every member on that segment, its own host and itself included
// (multicast loopback on).
func (h *Host) ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error) {
	if err := checkNetwork(network, "udp", "udp4"); err != nil {
		return nil, opError("listen", network, nil, nil, err)
	}
	if gaddr == nil {
		return nil, opError("listen", network, nil, nil, errors.New("missing group address"))
	}
	g, ok := netip.AddrFromSlice(gaddr.IP)
	g = g.Unmap()
	if !ok || !g.Is4() || !g.IsMulticast() {
		return nil, opError("listen", network, nil, gaddr, errors.New("not an IPv4 multicast address"))
	}
	seg := h.ifaces[0].seg
	if ifi != nil {
		seg = nil
		for _, ifc := range h.ifaces {
			if ifc.name == ifi.Name {
				seg = ifc.seg
			}
		}
		if seg == nil {
			return nil, opError("listen", network, nil, gaddr, errors.New("no such interface: "+ifi.Name))
		}
	}
	bind := netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(gaddr.Port))
	return h.listenUDP(network, bind, netip.AddrPortFrom(g, uint16(gaddr.Port)), seg)
}

func (h *Host) listenUDP(network string, ap netip.AddrPort, group netip.AddrPort, seg *Segment) (net.PacketConn, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	// A group port is shared by every socket joined to a group
	// (SO_REUSEPORT); any other port by none.
	port, shown, err := h.bindLocked(ap, true, func(port uint16) bool {
		others := h.udp[port]
		return len(others) > 0 && (!group.IsValid() || !others[0].group.IsValid())
	})
	if err != nil {
		return nil, opError("listen", network, nil, udpAddr(ap), err)
	}
	ip := ap.Addr()
	h.nextID++
	readable := make(chan struct{}, 1)
	p := &packetConn{n: n, h: h, id: h.nextID, port: port, bind: ip, local: udpAddr(netip.AddrPortFrom(shown, port)),
		seg: seg, group: group, readable: readable, closedCh: make(chan struct{}),
		rd: makeNotifyingDeadline(readable), wd: makeDeadline()}
	if h.udp == nil {
		h.udp = make(map[uint16][]*packetConn)
	}
	h.udp[port] = append(h.udp[port], p)
	if group.IsValid() {
		members := append(seg.groups[group], p)
		slices.SortFunc(members, func(a, b *packetConn) int {
			if a.h != b.h {
				return cmpInt(a.h.idx, b.h.idx)
			}
			return cmpInt(a.id, b.id)
		})
		seg.groups[group] = members
	}
	return p, nil
}

func (p *packetConn) LocalAddr() net.Addr { return p.local }

func (p *packetConn) SetDeadline(t time.Time) error {
	p.rd.set(t)
	p.wd.set(t)
	return nil
}
func (p *packetConn) SetReadDeadline(t time.Time) error  { p.rd.set(t); return nil }
func (p *packetConn) SetWriteDeadline(t time.Time) error { p.wd.set(t); return nil }

// Close closes the socket and leaves its group.
func (p *packetConn) Close() error {
	p.n.mu.Lock()
	defer p.n.mu.Unlock()
	if !p.closeLocked() {
		return opError("close", "udp", p.local, nil, net.ErrClosed)
	}
	return nil
}

func (p *packetConn) closeLocked() bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.closed = true
	clear(p.q)
	p.q, p.qhead, p.qbytes = nil, 0, 0
	close(p.closedCh)
	p.mu.Unlock()
	signal(p.readable)
	h := p.h
	if socks := h.udp[p.port]; socks != nil {
		h.udp[p.port] = slices.DeleteFunc(socks, func(q *packetConn) bool { return q == p })
		if len(h.udp[p.port]) == 0 {
			delete(h.udp, p.port)
		}
	}
	if p.group.IsValid() {
		members := slices.DeleteFunc(p.seg.groups[p.group], func(q *packetConn) bool { return q == p })
		if len(members) == 0 {
			delete(p.seg.groups, p.group)
		} else {
			p.seg.groups[p.group] = members
		}
	}
	return true
}

// ReadFrom reads the next datagram. The returned address is shared with
// other receivers of the same datagram: do not modify it.
//
// Readers wait on one channel, p.readable, which deliveries, the read
// deadline and Close all signal; a reader that leaves (or leaves data
// behind) passes the signal on, so every waiter wakes in turn.
func (p *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			signal(p.readable)
			return 0, nil, opError("read", "udp", p.local, nil, net.ErrClosed)
		}
		if p.rd.expired() {
			p.mu.Unlock()
			signal(p.readable)
			return 0, nil, opError("read", "udp", p.local, nil, os.ErrDeadlineExceeded)
		}
		if p.qhead < len(p.q) {
			dg := p.q[p.qhead]
			p.q[p.qhead] = nil
			p.qhead++
			p.qbytes -= len(dg.payload)
			if p.qhead == len(p.q) {
				p.q, p.qhead = p.q[:0], 0
			} else {
				signal(p.readable) // more for another reader
			}
			p.mu.Unlock()
			return copy(b, dg.payload), dg.srcAddr, nil
		}
		p.mu.Unlock()
		<-p.readable
	}
}

// WriteTo sends a datagram to addr, a unicast or a multicast group address
// (*net.UDPAddr or anything whose String is "ip:port"). It never blocks.
func (p *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var dst netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok && ua != nil {
		dst = ua.AddrPort()
	} else if addr != nil {
		var err error
		if dst, err = p.n.resolve(addr.String()); err != nil {
			return 0, opError("write", "udp", p.local, addr, err)
		}
	} else {
		return 0, opError("write", "udp", p.local, nil, errors.New("missing address"))
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if p.wd.expired() {
		return 0, opError("write", "udp", p.local, addr, os.ErrDeadlineExceeded)
	}
	n := p.n
	payload := slices.Clone(b)
	n.mu.Lock()
	defer n.mu.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return 0, opError("write", "udp", p.local, addr, net.ErrClosed)
	}
	now := n.nowLocked()
	send := func(src netip.AddrPort, seg *Segment) {
		p.seq++
		dg := &datagram{from: p.h, ep: p.id, seq: p.seq, sentAt: now, src: src, srcAddr: udpAddr(src), dst: dst, seg: seg, payload: payload}
		n.outbox = append(n.outbox, sendItem{sentAt: now, src: p.h.idx, ep: dg.ep, seq: dg.seq, dg: dg})
		n.stats.Datagrams++
	}
	if dst.Addr().IsMulticast() {
		for _, ifc := range p.h.ifaces {
			if p.seg == nil || p.seg == ifc.seg {
				send(netip.AddrPortFrom(ifc.ip, p.port), ifc.seg)
			}
		}
	} else {
		src := p.bind
		if src.IsUnspecified() {
			src = p.h.srcIPFor(dst.Addr())
		}
		send(netip.AddrPortFrom(src, p.port), nil)
	}
	n.wake()
	return len(b), nil
}

// scheduleDatagramLocked gives a datagram its random draw and its first
// delivery time.
func (n *Network) scheduleDatagramLocked(dg *datagram) {
	dg.u = n.rng.Float64()
	var to *Host
	if dg.seg == nil {
		if !dg.dst.Addr().IsLoopback() {
			if p := n.routeOutLocked(dg.sentAt, protoUDP, 0, dg.src, dg.dst); p.src != dg.src || p.drop != "" {
				dg.nat = &natInfo{path: p}
				dg.srcAddr = udpAddr(p.src) // what receivers see
			}
		}
		to = n.unicastHostLocked(dg)
	}
	l := n.linkLocked(dg.from, to)
	d := int64(l.Latency)
	if l.Latency > 0 {
		n.counts[fLatency]++
	}
	if j := int64(dg.u * float64(l.Jitter)); j > 0 {
		d += j
		n.counts[fJitter]++
	}
	n.events.push(event{at: n.quantize(dg.sentAt + d), src: dg.from.idx, ep: dg.ep, seq: dg.seq, dg: dg})
}

// unicastHostLocked guesses the host a unicast datagram goes to (nil:
// none), without acting on any NAT.
func (n *Network) unicastHostLocked(dg *datagram) *Host {
	ip := dg.dst.Addr()
	if ip.IsLoopback() {
		return dg.from
	}
	p := dg.natPath()
	if p.drop != "" {
		return nil
	}
	return n.peekHostLocked(protoUDP, p.src, dg.dst)
}

// dgOutcome tallies what happened to one datagram event, for the trace.
type dgOutcome struct {
	rx, lost, dup, part, held, down, gone, ovf, later int64
}

func (n *Network) deliverDatagramLocked(now int64, ev *event) {
	dg := ev.dg
	if n.hook != nil && ev.rcv == nil && !ev.dup && !dg.hooked {
		// The hook sees a datagram once, at its first event: not again
		// when a multicast waits for a raised latency, nor a Duplicate's
		// copy, nor per-receiver events (reschedules, duplicates, releases).
		dg.hooked = true
		p := Packet{Time: time.Duration(now), Proto: "udp", Kind: "datagram", From: dg.from, Src: dg.src, Dst: dg.dst, Payload: dg.payload}
		if dg.seg == nil {
			p.To = n.unicastHostLocked(dg)
		}
		v := n.hook(p)
		if v.Then != nil {
			n.thens = append(n.thens, v.Then)
		}
		if v.Drop {
			n.counts[fRule]++
			n.traceDatagram(now, "udp-rule-drop", dg, &dgOutcome{})
			return
		}
		if v.Replace != nil {
			n.counts[fRewrite]++
			before := dg.payload
			dg.payload = append([]byte{}, v.Replace...) // a copy, not nil even if empty
			n.traceRewrite(now, "udp-rule-rewrite", "datagram", dg.src, dg.dst, int64(dg.seq), before, dg.payload)
		}
		if v.Duplicate {
			// The copy is an event of its own, due now and ordered right
			// after this one (a greater sub), so it takes the same path.
			n.counts[fReplay]++
			dg.sub++
			n.events.push(event{at: now, src: dg.from.idx, ep: dg.ep, seq: dg.seq, sub: dg.sub, dg: dg})
			n.traceRewrite(now, "udp-rule-replay", "datagram", dg.src, dg.dst, int64(dg.seq), dg.payload, nil)
		}
	}
	var o dgOutcome
	if ev.rcv != nil {
		n.deliverToLocked(now, ev, ev.rcv, &o)
	} else if dg.seg != nil {
		// The latency on the default link may have grown since the send.
		l := n.faults.link
		if want := n.quantize(dg.sentAt + int64(l.Latency) + int64(dg.u*float64(l.Jitter))); want > now {
			ev.at = want
			n.events.push(*ev)
			return
		}
		for _, m := range dg.seg.groups[dg.dst] {
			n.deliverToLocked(now, ev, m, &o)
		}
	} else {
		to, dst := dg.from, dg.dst
		if !dst.Addr().IsLoopback() {
			p := dg.natPath() // a copy: a Duplicate's copy goes through the NATs afresh
			if p.drop == "" {
				to, dst = n.routeInLocked(now, protoUDP, 0, &p, dg.dst)
			}
			if p.drop != "" && p.at == nil {
				n.traceDatagram(now, "udp-unreachable", dg, &o)
				return
			}
			if p.drop != "" {
				n.natDropLocked(now, protoUDP, "datagram", dg.src, dg.dst, &p)
				return
			}
		}
		if dst != dg.dst {
			if dg.nat == nil {
				dg.nat = &natInfo{path: natPath{src: dg.src}}
			}
			dg.nat.fdst = dst
		}
		var rcv *packetConn
		if to != nil {
			for _, s := range to.udp[dst.Port()] {
				if s.bind.IsUnspecified() || s.bind == dst.Addr() {
					rcv = s
					break
				}
			}
		}
		if rcv == nil {
			n.traceDatagram(now, "udp-unreachable", dg, &o)
			return
		}
		n.deliverToLocked(now, ev, rcv, &o)
	}
	name := "udp"
	if ev.rcv != nil {
		name = "udp-one"
	}
	n.traceDatagram(now, name, dg, &o)
}

func (n *Network) traceDatagram(now int64, name string, dg *datagram, o *dgOutcome) {
	t := &n.tr
	t.begin(now, name)
	t.str("src", dg.src.String())
	t.str("dst", dg.dst.String())
	if x := dg.nat; x != nil {
		if x.path.src != dg.src {
			t.str("nat_src", x.path.src.String())
		}
		if x.fdst.IsValid() && x.fdst != dg.dst {
			t.str("nat_dst", x.fdst.String())
		}
	}
	t.num("seq", int64(dg.seq))
	t.num("len", int64(len(dg.payload)))
	t.num("sum", int64(fnv64(dg.payload)>>1))
	t.num("rx", o.rx)
	t.numNZ("lost", o.lost)
	t.numNZ("dup", o.dup)
	t.numNZ("partition", o.part)
	t.numNZ("held", o.held)
	t.numNZ("link_down", o.down)
	t.numNZ("host_down", o.gone)
	t.numNZ("overflow", o.ovf)
	t.numNZ("later", o.later)
	t.end()
}

// traceRewrite traces what the OnPacket hook did to a payload: a rewrite
// (before and after) or a replay (before only, after nil).
func (n *Network) traceRewrite(now int64, name, kind string, src, dst netip.AddrPort, seq int64, before, after []byte) {
	t := &n.tr
	t.begin(now, name)
	t.str("kind", kind)
	t.str("src", src.String())
	t.str("dst", dst.String())
	t.num("seq", seq)
	t.num("len", int64(len(before)))
	t.num("sum", int64(fnv64(before)>>1))
	if after != nil {
		t.num("new_len", int64(len(after)))
		t.num("new_sum", int64(fnv64(after)>>1))
	}
	t.end()
}

// deliverToLocked applies the faults between the sender and one receiving
// socket and, if the datagram survives, queues it there.
func (n *Network) deliverToLocked(now int64, ev *event, m *packetConn, o *dgOutcome) {
	dg := ev.dg
	to := m.h
	if !to.up {
		n.counts[fHostDown]++
		o.gone++
		return
	}
	if dg.from != to && (dg.from.linkDown || to.linkDown) {
		n.counts[fLinkDown]++
		o.down++
		return
	}
	if len(n.faults.rules) > 0 {
		if r := n.blockedLocked(dg.from, to); r != nil {
			if r.kind == ruleHold {
				n.faults.held = append(n.faults.held, heldDatagram{dg: dg, rcv: m})
				n.counts[fHold]++
				o.held++
			} else {
				n.counts[fPartition]++
				o.part++
			}
			return
		}
	}
	l := n.faults.link
	if len(n.faults.overrides) > 0 || dg.seg == nil {
		l = n.linkLocked(dg.from, to)
		if ev.rcv == nil && !ev.dup {
			if want := n.quantize(dg.sentAt + int64(l.Latency) + int64(dg.u*float64(l.Jitter))); want > now {
				dg.sub++
				n.events.push(event{at: want, src: dg.from.idx, ep: dg.ep, seq: dg.seq, sub: dg.sub, dg: dg, rcv: m})
				o.later++
				return
			}
		}
	}
	if l.Loss > 0 && n.rng.Float64() < l.Loss {
		n.counts[fLoss]++
		o.lost++
		return
	}
	if !ev.dup && l.Duplicate > 0 && n.rng.Float64() < l.Duplicate {
		n.counts[fDuplicate]++
		o.dup++
		dg.sub++
		j := int64(n.rng.Float64() * float64(l.Jitter))
		n.events.push(event{at: n.quantize(now + int64(n.opts.Quantum) + j), src: dg.from.idx, ep: dg.ep, seq: dg.seq, sub: dg.sub, dg: dg, rcv: m, dup: true})
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	if m.qbytes+len(dg.payload) > n.opts.UDPBuffer {
		m.mu.Unlock()
		n.counts[fOverflow]++
		o.ovf++
		return
	}
	wasEmpty := m.qhead == len(m.q)
	m.q = append(m.q, dg)
	m.qbytes += len(dg.payload)
	m.mu.Unlock()
	if wasEmpty {
		// Woken by run once the instant's deliveries are all queued (else
		// a signal is pending or a reader is draining).
		n.wakeups = append(n.wakeups, m)
	}
	n.stats.Deliveries++
	o.rx++
}

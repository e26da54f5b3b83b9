package netsim

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// synRetries is Linux's tcp_syn_retries: a dial whose SYNs are all lost
// retransmits after 1, 2, 4, 8, 16 and 32 s and fails 64 s after the last
// (127 s in all).
const synRetries = 6

// DialContext opens a stream ("tcp" or "tcp4") to addr, "ip:port" or
// "hostname:port" with a host name of the network, from an ephemeral port
// that depends on addr and the earlier dials to it only (see the package
// doc's Determinism).
// It takes one round trip of simulated time; a closed port gives an error
// satisfying errors.Is(err, syscall.ECONNREFUSED); an address no route
// leads to (one behind a NAT, from beyond it) syscall.EHOSTUNREACH.
//
// A SYN that is dropped (by a NAT, or at a crashed host) is retransmitted
// as a kernel does, 1, 3, 7, 15, 31 and 63 s after the first; if every SYN
// is lost the dial fails with syscall.ETIMEDOUT after 127 s. A SYN stalled
// by a partition is not lost: the dial waits until the partition heals or
// ctx ends.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return h.dial(ctx, network, "", addr)
}

// DialFrom is DialContext from a chosen local address laddr, ":port" or
// "ip:port" ("" or port 0: an ephemeral port). The port may be one a
// listener or other streams of the host hold, as with SO_REUSEADDR and
// SO_REUSEPORT on Linux (TCP hole punching dials from its listening port);
// only the 4-tuple must be unique, or the dial fails with
// syscall.EADDRNOTAVAIL.
//
// When two hosts dial each other's address from the one the other dials
// at about the same time, each SYN arriving while the other end's own is
// outstanding, both dials succeed and return the two ends of one stream
// (TCP simultaneous open, as Linux does it).
func (h *Host) DialFrom(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	return h.dial(ctx, network, laddr, raddr)
}

func (h *Host) dial(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	if err := checkNetwork(network, "tcp", "tcp4"); err != nil {
		return nil, opError("dial", network, nil, nil, err)
	}
	dst, err := h.n.resolve(raddr)
	if err != nil {
		return nil, opError("dial", network, nil, nil, err)
	}
	var lap netip.AddrPort
	if laddr != "" {
		if lap, err = h.n.resolve(laddr); err != nil {
			return nil, opError("dial", network, nil, nil, err)
		}
	}
	n := h.n
	n.mu.Lock()
	if !h.up || n.closed {
		n.mu.Unlock()
		return nil, opError("dial", network, nil, tcpAddr(dst), net.ErrClosed)
	}
	loopback := dst.Addr().IsLoopback() || dst.Addr().IsUnspecified()
	if dst.Addr().IsUnspecified() {
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port())
	}
	srcIP := lap.Addr()
	if !srcIP.IsValid() || srcIP.IsUnspecified() {
		srcIP = h.srcIPFor(dst.Addr())
	} else if !h.hasIP(srcIP) && !(srcIP.IsLoopback() && loopback) {
		n.mu.Unlock()
		return nil, opError("dial", network, tcpAddr(lap), tcpAddr(dst), syscallErr("bind", syscall.EADDRNOTAVAIL))
	}
	if !loopback && !n.reachableLocked(srcIP, dst.Addr()) {
		n.mu.Unlock()
		return nil, opError("dial", network, nil, tcpAddr(dst), syscallErr("connect", syscall.EHOSTUNREACH))
	}
	port := lap.Port()
	if port == 0 {
		if port, err = h.dialPortLocked(srcIP, dst); err != nil {
			n.mu.Unlock()
			return nil, opError("dial", network, nil, tcpAddr(dst), syscallErr("connect", syscall.EADDRNOTAVAIL))
		}
	}
	local := netip.AddrPortFrom(srcIP, port)
	key := [2]netip.AddrPort{local, dst}
	if h.tuples[key] != nil {
		n.mu.Unlock()
		return nil, opError("dial", network, tcpAddr(local), tcpAddr(dst), syscallErr("connect", syscall.EADDRNOTAVAIL))
	}
	if h.tcpPorts == nil {
		h.tcpPorts = make(map[uint16]int)
	}
	h.tcpPorts[port]++
	c := n.newConn(h, local, dst)
	c.client = true
	c.out = &streamDir{from: c, fromHost: h}
	h.addConnLocked(c)
	n.sendChunkLocked(c, ckSyn, nil)
	c.synSent++
	n.events.push(event{at: n.quantize(n.nowLocked() + int64(time.Second)), src: h.idx, ep: c.ep, rtx: c})
	n.mu.Unlock()

	select {
	case <-c.estab:
	case <-ctx.Done():
		c.Close()
		return nil, opError("dial", network, c.laddr, c.raddr, ctx.Err())
	}
	c.mu.Lock()
	refused, reset, timedOut := c.refused, c.reset, c.timedOut
	c.mu.Unlock()
	switch {
	case timedOut:
		c.Close()
		return nil, opError("dial", network, c.laddr, c.raddr, syscallErr("connect", syscall.ETIMEDOUT))
	case refused:
		c.Close()
		return nil, opError("dial", network, c.laddr, c.raddr, syscallErr("connect", syscall.ECONNREFUSED))
	case reset:
		c.Close()
		return nil, opError("dial", network, c.laddr, c.raddr, syscallErr("connect", syscall.ECONNRESET))
	}
	return c, nil
}

func (h *Host) addConnLocked(c *conn) {
	if h.tuples == nil {
		h.tuples = make(map[[2]netip.AddrPort]*conn)
	}
	h.tuples[[2]netip.AddrPort{c.local, c.remote}] = c
}

func (h *Host) removeConnLocked(c *conn) {
	if key := [2]netip.AddrPort{c.local, c.remote}; h.tuples[key] == c {
		delete(h.tuples, key)
	}
}

// synTimerLocked is a dialing conn's retransmission timer: if every SYN it
// sent is lost, it sends another, or gives up after synRetries.
func (n *Network) synTimerLocked(now int64, c *conn, fired uint32) {
	c.mu.Lock()
	live := !c.established && !c.reset && !c.closed
	c.mu.Unlock()
	if !live || c.dead || !c.h.up {
		return
	}
	if c.synLost == c.synSent {
		if c.synRtx >= synRetries {
			c.mu.Lock()
			c.timedOut, c.reset = true, true
			close(c.estab)
			c.mu.Unlock()
			n.tr.line(now, "tcp-syn-timeout", "src", c.local.String(), "dst", c.remote.String())
			return
		}
		c.synRtx++
		c.synSent++
		n.sendChunkLocked(c, ckSyn, nil)
	}
	fired++
	n.events.push(event{at: n.quantize(now + int64(time.Second)<<min(fired, synRetries)), src: c.h.idx, ep: c.ep, sub: fired, rtx: c})
}

// link makes two conns the ends of one stream.
func link(a, b *conn) {
	a.peer, b.peer = b, a
	a.out.to, a.out.toHost = b, b.h
	b.out.to, b.out.toHost = a, a.h
}

// establish marks a conn established (its dial or accept returns).
func (c *conn) establish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.established && !c.reset && !c.closed {
		c.established = true
		close(c.estab)
	}
}

// synPending reports whether c is dialing: a SYN sent, no answer yet.
func (c *conn) synPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client && !c.established && !c.reset && !c.closed
}

// sendRstLocked answers a segment from the conn to with an RST from h,
// sent from local to remote (the segment's destination and source as h saw
// them), through any NATs on the way back.
func (n *Network) sendRstLocked(h *Host, local, remote netip.AddrPort, to *conn) {
	r := n.newConn(h, local, remote)
	r.dead = true
	r.ep ^= 1 // apart from the conn that may hold this 4-tuple
	r.out = &streamDir{from: r, to: to, fromHost: h, toHost: to.h}
	n.sendChunkLocked(r, ckRst, nil)
}

// applySynLocked acts on a SYN that reached host h, sent by a dialing
// conn: x is the conn with its 4-tuple there, if any.
func (n *Network) applySynLocked(now int64, c *chunk, h *Host, x *conn) {
	s := c.dir.from
	local, remote := c.fdst(), c.natPath().src
	switch {
	case x != nil && (x.peer == nil || x.peer == s) && !x.synRcvd && x.synPending():
		// Simultaneous open: x dials s's address from the one s dials
		// (and s may have got x's SYN already, which linked them). x goes
		// to SYN_RCVD; it is established by s's SYN-ACK or ACK.
		if x.peer == nil {
			link(x, s)
		}
		x.synRcvd = true
		n.stats.SimultaneousOpens++
		n.tr.line(now, "tcp-simultaneous-open", "local", x.local.String(), "remote", x.remote.String())
		n.sendChunkLocked(x, ckSynAck, nil).simul = true
	case x != nil && x.peer == s:
		// A retransmitted SYN: already answered.
	case x != nil:
		n.sendRstLocked(h, local, remote, s) // the 4-tuple is another stream's
	default:
		ln := h.listeners[local.Port()]
		if ln != nil && !ln.bind.IsUnspecified() && ln.bind != local.Addr() {
			ln = nil
		}
		if ln == nil {
			n.sendRstLocked(h, local, remote, s)
			return
		}
		to := n.newConn(h, local, remote)
		to.out = &streamDir{from: to, fromHost: h}
		h.addConnLocked(to)
		link(to, s)
		to.establish()
		ln.mu.Lock()
		ln.q = append(ln.q, to)
		ln.mu.Unlock()
		signal(ln.ready)
		n.sendChunkLocked(to, ckSynAck, nil)
	}
}

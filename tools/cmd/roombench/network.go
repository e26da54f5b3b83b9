package main

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
)

// counters are one node's traffic, as its Network saw it.
type counters struct {
	dials, accepts  atomic.Int64 // TCP connections opened, each way
	dialW, dialR    atomic.Int64 // bytes written and read on dialled connections
	accW, accR      atomic.Int64 // bytes written and read on accepted connections
	udpOut, udpIn   atomic.Int64 // datagrams sent and received
	udpOutB, udpInB atomic.Int64 // their bytes
	werrs           atomic.Int64 // failed writes on dialled connections
}

// handshakeWrites is how many writes the dialling side of a session
// makes before its first line: the Noise XX messages 1 and 3.
const handshakeWrites = 2

// writeTrace records when a node wrote lines on its dialled connections
// (every write after the handshake), and on which. The catch-up member
// writes only summaries, so for it these are its summary sends.
type writeTrace struct {
	conns atomic.Int64 // connections numbered so far

	mu     sync.Mutex
	writes []traced
}

type traced struct {
	at   time.Time
	conn int64
}

func (t *writeTrace) add(at time.Time, conn int64) {
	t.mu.Lock()
	t.writes = append(t.writes, traced{at, conn})
	t.mu.Unlock()
}

func (t *writeTrace) list() []traced {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]traced(nil), t.writes...)
}

// countingNetwork is chat.OSNetwork with every socket counted.
type countingNetwork struct {
	base  chat.Network
	c     *counters
	trace *writeTrace // nil: no trace
}

var _ chat.Network = (*countingNetwork)(nil)

func (n *countingNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := n.base.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n.c.dials.Add(1)
	cc := &countConn{Conn: c, w: &n.c.dialW, r: &n.c.dialR, errs: &n.c.werrs, trace: n.trace}
	if n.trace != nil {
		cc.id = n.trace.conns.Add(1)
	}
	return cc, nil
}

func (n *countingNetwork) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	ln, err := n.base.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countListener{Listener: ln, c: n.c}, nil
}

func (n *countingNetwork) ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error) {
	pc, err := n.base.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countPacketConn{PacketConn: pc, c: n.c}, nil
}

func (n *countingNetwork) ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error) {
	pc, err := n.base.ListenMulticastUDP(ctx, network, ifi, gaddr)
	if err != nil {
		return nil, err
	}
	return &countPacketConn{PacketConn: pc, c: n.c}, nil
}

type countListener struct {
	net.Listener
	c *counters
}

func (l *countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.c.accepts.Add(1)
	return &countConn{Conn: c, w: &l.c.accW, r: &l.c.accR}, nil
}

// countConn counts a TCP connection's bytes. Only a dialled one has a
// trace.
type countConn struct {
	net.Conn
	w, r   *atomic.Int64
	errs   *atomic.Int64 // nil: not counted
	writes atomic.Int64
	trace  *writeTrace
	id     int64 // its number in trace
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.Add(int64(n))
	if err != nil && c.errs != nil {
		c.errs.Add(1)
	}
	if c.writes.Add(1) > handshakeWrites && c.trace != nil {
		c.trace.add(time.Now(), c.id)
	}
	return n, err
}

type countPacketConn struct {
	net.PacketConn
	c *counters
}

func (p *countPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := p.PacketConn.ReadFrom(b)
	if err == nil {
		p.c.udpIn.Add(1)
		p.c.udpInB.Add(int64(n))
	}
	return n, a, err
}

func (p *countPacketConn) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := p.PacketConn.WriteTo(b, a)
	if err == nil {
		p.c.udpOut.Add(1)
		p.c.udpOutB.Add(int64(n))
	}
	return n, err
}

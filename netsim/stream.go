package netsim

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

const maxSegment = 64 << 10

type chunkKind uint8

const (
	ckSyn chunkKind = iota + 1
	ckSynAck
	ckData
	ckFin
	ckRst
	ckAck
)

var chunkNames = [...]string{ckSyn: "syn", ckSynAck: "synack", ckData: "data", ckFin: "fin", ckRst: "rst", ckAck: "ack"}

// chunk is a stream segment: a SYN, SYN-ACK, data, FIN or RST; or the ACK
// that completes a simultaneous open (other ACKs are not modelled).
type chunk struct {
	dir    *streamDir
	kind   chunkKind
	data   []byte
	seq    uint64 // the sending host's sequence
	dirSeq uint64 // position in the direction
	sentAt int64
	hooked bool
	simul  bool     // a SYN-ACK sent from SYN_RCVD (simultaneous open): wants an ACK
	nat    *natInfo // what NATs did to it; nil if nothing
}

// natPath returns the segment's way out through NATs.
func (c *chunk) natPath() natPath {
	if c.nat != nil {
		return c.nat.path
	}
	return natPath{src: c.dir.from.local}
}

// fdst returns the address the segment was delivered to, after NATs.
func (c *chunk) fdst() netip.AddrPort {
	if c.nat != nil && c.nat.fdst.IsValid() {
		return c.nat.fdst
	}
	return c.dir.from.remote
}

// streamDir is one direction of a stream. It delivers its segments in
// order, whatever latency changes, stalls and releases do to their times.
// to is nil until the receiving end is known (a SYN finds it on arrival,
// by the 4-tuple, through NATs); toHost is the best guess meanwhile.
type streamDir struct {
	from, to         *conn
	fromHost, toHost *Host
	nextSeq          uint64
	expect           uint64
	lastAt           int64
	stalled          []*chunk
	inStalled        bool
	ooo              []*chunk // arrived early, sorted by dirSeq
}

// conn is one end of a simulated TCP stream. It implements net.Conn and
// CloseWrite.
type conn struct {
	n      *Network
	h      *Host
	ep     uint64 // the conn's place among its host's sockets: see streamEP
	local  netip.AddrPort
	remote netip.AddrPort
	laddr  *net.TCPAddr
	raddr  *net.TCPAddr
	peer   *conn
	out    *streamDir
	client bool

	dead bool   // guarded by n.mu: the host crashed under it
	seq  uint64 // segments sent, guarded by n.mu

	// Guarded by n.mu: SYNs sent, SYNs known lost, retransmissions.
	synSent, synLost, synRtx int
	synRcvd                  bool // a dialing conn got its peer's SYN (simultaneous open)

	mu          sync.Mutex
	rx          []byte
	rxoff       int
	eof         bool
	reset       bool
	refused     bool
	timedOut    bool
	closed      bool
	wclosed     bool
	rstSent     bool
	established bool
	credit      int

	estab    chan struct{} // closed once established, refused or reset
	readable chan struct{}
	writable chan struct{}
	closedCh chan struct{}
	wlock    chan struct{} // serializes Write calls; a channel so waiting is durable
	rd, wd   deadline
}

func (n *Network) newConn(h *Host, local, remote netip.AddrPort) *conn {
	return &conn{n: n, h: h, ep: streamEP(local, remote), local: local, remote: remote, laddr: tcpAddr(local), raddr: tcpAddr(remote),
		credit: n.opts.Window, estab: make(chan struct{}), readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1), closedCh: make(chan struct{}), wlock: make(chan struct{}, 1),
		rd: makeDeadline(), wd: makeDeadline()}
}

// streamEP orders a stream end among its host's sockets (the "source
// socket" of sendItem and event): a hash of its 4-tuple, so that the order
// does not depend on the order goroutines dialed in, as a counter would.
// The top bit puts it after the UDP sockets, whose ids count from 1.
func streamEP(local, remote netip.AddrPort) uint64 {
	return fnvAddrPort(fnvAddrPort(fnvOffset, local), remote) | 1<<63
}

func (n *Network) sendChunkLocked(c *conn, kind chunkKind, data []byte) *chunk {
	d := c.out
	c.seq++
	now := n.nowLocked()
	ch := &chunk{dir: d, kind: kind, data: data, seq: c.seq, dirSeq: d.nextSeq, sentAt: now}
	d.nextSeq++
	n.outbox = append(n.outbox, sendItem{sentAt: now, src: c.h.idx, ep: c.ep, seq: ch.seq, ch: ch})
	n.wake()
	return ch
}

func (n *Network) scheduleChunkLocked(ch *chunk) {
	d := ch.dir
	to := d.fromHost
	if !d.from.remote.Addr().IsLoopback() {
		p := n.routeOutLocked(ch.sentAt, protoTCP, ch.kind, d.from.local, d.from.remote)
		if p.src != d.from.local || p.drop != "" {
			ch.nat = &natInfo{path: p}
		}
		switch {
		case d.to != nil:
			to = d.to.h
		case p.drop == "":
			to = n.peekHostLocked(protoTCP, p.src, d.from.remote)
		default:
			to = nil
		}
	}
	if d.to == nil && to != nil {
		d.toHost = to
	}
	l := n.linkLocked(d.fromHost, to)
	if d.fromHost == to {
		l = Link{}
	}
	if l.Latency > 0 {
		n.counts[fLatency]++
	}
	at := max(n.quantize(ch.sentAt+int64(l.Latency)), d.lastAt)
	d.lastAt = at
	n.events.push(event{at: at, src: d.fromHost.idx, ep: d.from.ep, seq: ch.seq, ch: ch})
}

func (n *Network) deliverChunkLocked(now int64, ev *event) {
	c := ev.ch
	d := c.dir
	if n.hook != nil && !c.hooked {
		c.hooked = true
		v := n.hook(Packet{Time: time.Duration(now), Proto: "tcp", Kind: chunkNames[c.kind], From: d.fromHost, To: d.toHost,
			Src: d.from.local, Dst: d.from.remote, Payload: c.data})
		if v.Then != nil {
			n.thens = append(n.thens, v.Then)
		}
		if v.Drop {
			n.counts[fRule]++
			n.traceChunk(now, "tcp-rule-reset", c)
			n.resetBothLocked(d)
			return
		}
		if c.kind == ckData && (v.Replace != nil || v.Duplicate) {
			n.rewriteChunkLocked(now, c, v)
		}
	}
	if len(d.stalled) > 0 || !n.pathOpenLocked(d.fromHost, d.toHost) {
		d.stalled = append(d.stalled, c)
		n.counts[fStall]++
		if !d.inStalled {
			d.inStalled = true
			n.faults.stalled = append(n.faults.stalled, d)
		}
		n.traceChunk(now, "tcp-stall", c)
		return
	}
	if c.dirSeq != d.expect {
		i, _ := slices.BinarySearchFunc(d.ooo, c.dirSeq, func(x *chunk, s uint64) int { return cmpInt(x.dirSeq, s) })
		d.ooo = slices.Insert(d.ooo, i, c)
		return
	}
	n.arriveChunkLocked(now, c)
	d.expect++
	for len(d.ooo) > 0 && d.ooo[0].dirSeq == d.expect {
		next := d.ooo[0]
		d.ooo = slices.Delete(d.ooo, 0, 1)
		n.arriveChunkLocked(now, next)
		d.expect++
	}
}

// resetBothLocked resets both ends of a direction's stream (the receiving
// end if it is known), counting each end that was live.
func (n *Network) resetBothLocked(d *streamDir) {
	if d.from.resetNow() {
		n.counts[fReset]++
	}
	if d.to != nil && d.to.resetNow() {
		n.counts[fReset]++
	}
}

// arriveChunkLocked takes a segment, in its direction's order, in through
// the NATs to its receiving host and conn, and applies it there.
func (n *Network) arriveChunkLocked(now int64, c *chunk) {
	d := c.dir
	path := c.natPath()
	p := &path
	h, dst := d.fromHost, d.from.remote
	if p.drop == "" && !dst.Addr().IsLoopback() {
		h, dst = n.routeInLocked(now, protoTCP, c.kind, p, dst)
	}
	if c.nat != nil || p.drop != "" || dst != d.from.remote {
		c.nat = &natInfo{path: path, fdst: dst}
	}
	if p.drop != "" {
		n.chunkDroppedLocked(now, c)
		return
	}
	if !h.up || (d.to != nil && d.to.dead) {
		n.counts[fHostDown]++
		n.traceChunk(now, "tcp-host-down", c)
		if c.kind == ckSyn {
			d.from.synLost++
		}
		return
	}
	to := d.to
	if to != nil && (to.h != h || to.local != dst || to.remote != p.src) {
		// The NATs now take the stream elsewhere (a mapping expired and
		// was made again, say): its ends cannot hear each other any more.
		n.traceChunk(now, "tcp-nat-broken", c)
		if c.kind != ckRst {
			n.resetBothLocked(d)
		}
		return
	}
	if to == nil {
		to = h.tuples[[2]netip.AddrPort{dst, p.src}]
	}
	n.stats.Segments++
	n.traceChunk(now, "tcp", c)
	n.applyChunkLocked(now, c, h, to)
}

// chunkDroppedLocked handles a segment a NAT (or the lack of a route)
// dropped: a lost SYN is retransmitted later, a NAT configured to reject
// answers with an RST, and a stream whose segment is lost is reset (streams
// never lose bytes from the middle).
func (n *Network) chunkDroppedLocked(now int64, c *chunk) {
	d := c.dir
	p := &c.nat.path
	n.natDropLocked(now, protoTCP, chunkNames[c.kind], d.from.local, d.from.remote, p)
	if x := p.at; x != nil && x.cfg.Reset && c.kind != ckRst && (p.drop == "no-mapping" || p.drop == "filtered") {
		x.stats.Rejected++
		n.counts[fNATReset]++
		n.sendRstLocked(x.host, p.atDst, p.src, d.from)
	}
	switch c.kind {
	case ckSyn:
		d.from.synLost++
	case ckRst:
	default:
		n.resetBothLocked(d)
	}
}

// rewriteChunkLocked applies a Verdict's Replace and Duplicate to a data
// segment that has not reached the receiver yet. The sender's credit was
// taken for the original bytes and comes back as the receiver reads, so it
// is adjusted by the difference: credit, bytes in flight and bytes unread
// still add up to the window.
func (n *Network) rewriteChunkLocked(now int64, c *chunk, v Verdict) {
	d := c.dir
	before := c.data
	data := c.data
	if v.Replace != nil {
		n.counts[fRewrite]++
		data = append([]byte{}, v.Replace...) // a copy: the hook may reuse its slice
		n.traceRewrite(now, "tcp-rule-rewrite", chunkNames[c.kind], d.from.local, d.from.remote, int64(c.dirSeq), before, data)
	}
	if v.Duplicate {
		n.counts[fReplay]++
		n.traceRewrite(now, "tcp-rule-replay", chunkNames[c.kind], d.from.local, d.from.remote, int64(c.dirSeq), data, nil)
		data = append(data[:len(data):len(data)], data...)
	}
	c.data = data
	d.from.giveCredit(len(before) - len(data))
}

func (n *Network) traceChunk(now int64, name string, c *chunk) {
	t := &n.tr
	t.begin(now, name)
	t.str("kind", chunkNames[c.kind])
	t.str("src", c.dir.from.local.String())
	t.str("dst", c.dir.from.remote.String())
	if x := c.nat; x != nil {
		if x.path.src != c.dir.from.local {
			t.str("nat_src", x.path.src.String())
		}
		if x.fdst.IsValid() && x.fdst != c.dir.from.remote {
			t.str("nat_dst", x.fdst.String())
		}
	}
	t.num("seq", int64(c.dirSeq))
	if len(c.data) > 0 {
		t.num("len", int64(len(c.data)))
		t.num("sum", int64(fnv64(c.data)>>1))
	}
	t.end()
}

// applyChunkLocked acts on a segment that reached host h, where the conn
// to has its 4-tuple (nil: none).
func (n *Network) applyChunkLocked(now int64, c *chunk, h *Host, to *conn) {
	d := c.dir
	if c.kind == ckSyn {
		n.applySynLocked(now, c, h, to)
		return
	}
	if to == nil || (d.to == nil && to.peer != d.from) {
		return // no conn that knows the sender: nothing to do
	}
	switch c.kind {
	case ckSynAck:
		to.mu.Lock()
		bad := to.closed || to.reset
		to.mu.Unlock()
		if bad {
			n.sendChunkLocked(to, ckRst, nil)
			return
		}
		to.establish()
		if c.simul && !to.synRcvd {
			// The peer is in SYN_RCVD, this end never got its SYN.
			n.sendChunkLocked(to, ckAck, nil)
		}
	case ckAck:
		to.establish()
	case ckData:
		to.mu.Lock()
		if to.reset {
			to.mu.Unlock()
			return
		}
		if to.closed {
			send := !to.rstSent
			to.rstSent = true
			to.mu.Unlock()
			if send {
				n.sendChunkLocked(to, ckRst, nil)
			}
			return
		}
		to.rx = append(to.rx, c.data...)
		to.mu.Unlock()
		n.stats.StreamBytes += int64(len(c.data))
		signal(to.readable)
	case ckFin:
		to.mu.Lock()
		to.eof = true
		to.mu.Unlock()
		signal(to.readable)
	case ckRst:
		to.resetNow()
	}
}

// resetNow makes the conn reset: pending and later calls fail with
// ECONNRESET (or a dial with ECONNREFUSED). It reports whether the conn was
// live.
func (c *conn) resetNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reset || c.closed {
		return false
	}
	c.reset = true
	c.rx, c.rxoff = nil, 0
	if !c.established {
		c.refused = true
		close(c.estab)
	}
	signal(c.readable)
	signal(c.writable)
	return true
}

// abortLocked closes the conn because its host crashed, and sends an RST
// to the peer. It reports whether the peer is being reset.
func (c *conn) abortLocked() bool {
	c.dead = true
	c.mu.Lock()
	wasLive := !c.closed && !c.reset
	if !c.closed {
		c.closed = true
		close(c.closedCh)
	}
	if !c.established && !c.reset {
		c.reset = true
		close(c.estab)
	}
	c.mu.Unlock()
	if wasLive {
		c.n.sendChunkLocked(c, ckRst, nil)
	}
	return wasLive
}

func (c *conn) LocalAddr() net.Addr  { return c.laddr }
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

func (c *conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}
func (c *conn) SetReadDeadline(t time.Time) error  { c.rd.set(t); return nil }
func (c *conn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

func (c *conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// Read reads what has arrived; it returns io.EOF after the peer's FIN.
func (c *conn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, c.opErr("read", net.ErrClosed)
		case c.reset:
			c.mu.Unlock()
			return 0, c.opErr("read", syscallErr("read", syscall.ECONNRESET))
		case c.rd.expired():
			c.mu.Unlock()
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		case len(b) == 0:
			c.mu.Unlock()
			return 0, nil
		case c.rxoff < len(c.rx):
			k := copy(b, c.rx[c.rxoff:])
			c.rxoff += k
			more := c.rxoff < len(c.rx)
			if !more {
				c.rx, c.rxoff = c.rx[:0], 0
			}
			c.mu.Unlock()
			if more {
				signal(c.readable)
			}
			c.peer.giveCredit(k)
			return k, nil
		case c.eof:
			c.mu.Unlock()
			return 0, io.EOF
		}
		c.mu.Unlock()
		select {
		case <-c.readable:
		case <-c.rd.wait():
		case <-c.closedCh:
		}
	}
}

// giveCredit adds k bytes to the conn's send window; k may be negative
// (see rewriteChunkLocked), which leaves the window short, or below zero,
// until reads give the bytes back.
func (c *conn) giveCredit(k int) {
	if k == 0 {
		return
	}
	c.mu.Lock()
	c.credit += k
	c.mu.Unlock()
	if k > 0 {
		signal(c.writable)
	}
}

// Write sends b, blocking while the peer's receive window is full.
func (c *conn) Write(b []byte) (int, error) {
	select {
	case c.wlock <- struct{}{}:
	case <-c.closedCh:
		return 0, c.opErr("write", net.ErrClosed)
	case <-c.wd.wait():
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	defer func() { <-c.wlock }()
	n := c.n
	written := 0
	for {
		n.mu.Lock()
		c.mu.Lock()
		var err error
		switch {
		case c.closed:
			err = net.ErrClosed
		case c.reset:
			err = syscallErr("write", syscall.ECONNRESET)
		case c.wclosed:
			err = syscallErr("write", syscall.EPIPE)
		case c.wd.expired():
			err = os.ErrDeadlineExceeded
		}
		if err != nil || written == len(b) {
			c.mu.Unlock()
			n.mu.Unlock()
			if err != nil {
				return written, c.opErr("write", err)
			}
			return written, nil
		}
		if c.credit > 0 {
			k := min(c.credit, len(b)-written, maxSegment)
			c.credit -= k
			data := slices.Clone(b[written : written+k])
			written += k
			c.mu.Unlock()
			n.sendChunkLocked(c, ckData, data)
			n.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		n.mu.Unlock()
		select {
		case <-c.writable:
		case <-c.wd.wait():
		case <-c.closedCh:
		}
	}
}

// CloseWrite half-closes the stream: the peer reads io.EOF after the data
// already written, and this end can still read.
func (c *conn) CloseWrite() error {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	send := !c.wclosed && !c.reset
	c.wclosed = true
	c.mu.Unlock()
	if send {
		n.sendChunkLocked(c, ckFin, nil)
	}
	return nil
}

// Close closes the stream: a FIN follows the data written, and data the
// peer sends afterwards is answered with an RST.
func (c *conn) Close() error {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	close(c.closedCh)
	send := !c.wclosed && !c.reset && !c.dead && c.established
	c.wclosed = true
	c.mu.Unlock()
	if send {
		n.sendChunkLocked(c, ckFin, nil)
	}
	if !c.dead {
		h := c.h
		h.removeConnLocked(c)
		if c.client && h.tcpPorts != nil {
			if h.tcpPorts[c.local.Port()]--; h.tcpPorts[c.local.Port()] <= 0 {
				delete(h.tcpPorts, c.local.Port())
			}
		}
	}
	return nil
}

// listener is a simulated TCP listener. It implements net.Listener.
type listener struct {
	n        *Network
	h        *Host
	port     uint16
	bind     netip.Addr
	addr     *net.TCPAddr
	mu       sync.Mutex
	q        []*conn
	closed   bool
	ready    chan struct{}
	closedCh chan struct{}
}

// Listen opens a stream listener ("tcp" or "tcp4") on addr: ":0" or
// "0.0.0.0:0" for an ephemeral port on every address. Addr returns a
// *net.TCPAddr with the host's address.
func (h *Host) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	if err := checkNetwork(network, "tcp", "tcp4"); err != nil {
		return nil, opError("listen", network, nil, nil, err)
	}
	ap, err := h.n.resolve(addr)
	if err != nil {
		return nil, opError("listen", network, nil, nil, err)
	}
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	port, shown, err := h.bindLocked(ap, false, func(port uint16) bool { return h.listeners[port] != nil })
	if err != nil {
		return nil, opError("listen", network, nil, tcpAddr(ap), err)
	}
	ln := &listener{n: n, h: h, port: port, bind: ap.Addr(), addr: tcpAddr(netip.AddrPortFrom(shown, port)),
		ready: make(chan struct{}, 1), closedCh: make(chan struct{})}
	if h.listeners == nil {
		h.listeners = make(map[uint16]*listener)
	}
	h.listeners[port] = ln
	return ln, nil
}

func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, opError("accept", "tcp", nil, l.addr, net.ErrClosed)
		}
		if len(l.q) > 0 {
			c := l.q[0]
			l.q = slices.Delete(l.q, 0, 1)
			if len(l.q) > 0 {
				signal(l.ready)
			}
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-l.closedCh:
		}
	}
}

// Close stops listening; connections not yet accepted are reset.
func (l *listener) Close() error {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	if !l.closeLocked() {
		return opError("close", "tcp", nil, l.addr, net.ErrClosed)
	}
	return nil
}

func (l *listener) closeLocked() bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	close(l.closedCh)
	pending := l.q
	l.q = nil
	l.mu.Unlock()
	for _, c := range pending {
		c.abortLocked()
		l.h.removeConnLocked(c)
	}
	if l.h.listeners[l.port] == l {
		delete(l.h.listeners, l.port)
	}
	return true
}

func (l *listener) String() string { return fmt.Sprintf("netsim listener %s", l.addr) }

package netsim

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing/synctest"
	"time"
)

// Options tune a Network. The zero value is usable: every field has a
// default, named in its comment.
type Options struct {
	// Quantum groups deliveries: a packet due at any time within a quantum
	// is delivered at the quantum's end, together with the others due in it.
	// Default 1 ms. Larger values run faster and blur timing.
	Quantum time.Duration

	// Link is the default for every pair of hosts (see SetLink).
	// The zero Link means no latency, no jitter, no loss, no duplication.
	Link Link

	// Window is the receive window of a stream, in bytes: a writer blocks
	// when this many bytes are in flight or unread. Default 256 KiB.
	Window int

	// UDPBuffer is the receive buffer of a datagram socket, in payload
	// bytes. A datagram that does not fit is dropped and counted as
	// FaultBufferOverflow. Default 1 MiB.
	UDPBuffer int

	// Trace, when set, receives the event trace, one JSON object a line.
	// The trace's hash is computed whether or not it is written.
	Trace io.Writer

	// Poll is how often RunUntil evaluates its condition. Default 10 ms.
	Poll time.Duration
}

func (o Options) withDefaults() Options {
	if o.Quantum <= 0 {
		o.Quantum = time.Millisecond
	}
	if o.Window <= 0 {
		o.Window = 256 << 10
	}
	if o.UDPBuffer <= 0 {
		o.UDPBuffer = 1 << 20
	}
	if o.Poll <= 0 {
		o.Poll = 10 * time.Millisecond
	}
	return o
}

// Network is a simulated network of hosts on segments. Build it inside a
// testing/synctest bubble with New, and Close it before the bubble ends
// (Test does both).
//
// All methods are safe for concurrent use.
type Network struct {
	opts  Options
	seed  uint64
	start time.Time

	mu       sync.Mutex
	rng      *rand.Rand
	segments []*Segment
	hosts    []*Host
	byName   map[string]*Host
	byIP     map[netip.Addr]*Host
	closed   bool

	outbox  []sendItem
	events  eventHeap
	wakeups []*packetConn // sockets given datagrams this instant; only run's goroutine uses it
	thens   []func()
	settles []chan struct{}
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	faults faultState
	stats  Stats
	counts [numFaults]int64
	hook   func(Packet) Verdict
	tr     tracer
}

// New builds a network whose every random choice derives from seed. It must
// be called inside a synctest bubble (synctest.Test), because it starts the
// network's scheduler goroutine there; Close stops it. opts may be nil.
func New(seed uint64, opts *Options) *Network {
	var o Options
	if opts != nil {
		o = *opts
	}
	o = o.withDefaults()
	n := &Network{
		opts:    o,
		seed:    seed,
		start:   time.Now(),
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byName:  make(map[string]*Host),
		byIP:    make(map[netip.Addr]*Host),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	n.faults.link = o.Link
	n.tr.init(o.Trace)
	n.tr.line(0, "start", "seed", fmt.Sprint(seed), "quantum", o.Quantum.String())
	go n.run()
	return n
}

// Seed returns the seed the network was built from.
func (n *Network) Seed() uint64 { return n.seed }

// Now returns the simulated time elapsed since New.
func (n *Network) Now() time.Duration { return time.Since(n.start) }

// Close crashes every host (cancelling their contexts and waiting for the
// goroutines started with Host.Go), then stops the scheduler. Close is
// idempotent.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.stopped
		return
	}
	n.closed = true
	hosts := slices.Clone(n.hosts)
	for _, h := range hosts {
		if h.up {
			n.crashLocked(h, "close")
		}
	}
	settles := n.settles
	n.settles = nil
	n.mu.Unlock()
	for _, ch := range settles {
		close(ch)
	}
	for _, h := range hosts {
		h.wg.Wait()
	}
	close(n.done)
	<-n.stopped
}

// Segment is a LAN: the scope of multicast. Hosts on different segments
// reach each other by unicast through an ideal router, unless a NAT stands
// between them (see AddNAT).
type Segment struct {
	n      *Network
	name   string
	idx    int
	prefix netip.Prefix
	next   netip.Addr
	hosts  []*Host
	groups map[netip.AddrPort][]*packetConn // members, sorted by (host, socket id)
	behind *NAT                             // the NAT whose inside this is, if any
}

// Name returns the name given to AddSegment.
func (s *Segment) Name() string { return s.name }

// Prefix returns the segment's IPv4 prefix.
func (s *Segment) Prefix() netip.Prefix { return s.prefix }

// AddSegment adds a LAN with the next free prefix 10.k.0.0/16 (k = 1, 2,
// ...). Hosts on it get addresses 10.k.0.1, 10.k.0.2, ...
func (n *Network) AddSegment(name string) *Segment {
	n.mu.Lock()
	k := len(n.segments) + 1
	n.mu.Unlock()
	return n.AddSegmentPrefix(name, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), 16))
}

// AddSegmentPrefix adds a LAN with the given IPv4 prefix.
func (n *Network) AddSegmentPrefix(name string, prefix netip.Prefix) *Segment {
	n.mu.Lock()
	defer n.mu.Unlock()
	prefix = prefix.Masked()
	s := &Segment{n: n, name: name, idx: len(n.segments), prefix: prefix, next: prefix.Addr().Next(),
		groups: make(map[netip.AddrPort][]*packetConn)}
	n.segments = append(n.segments, s)
	n.tr.line(n.nowLocked(), "segment", "name", name, "prefix", prefix.String())
	return s
}

// AddHost adds a host with one interface on each segment (eth0 on the
// first, eth1 on the second, ...), each with the segment's next free
// address. The host is up; start its programs with Host.Go or with
// Host.Context. It panics on a duplicate name or an exhausted prefix, which
// are mistakes in a test.
func (n *Network) AddHost(name string, segs ...*Segment) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ips []netip.Addr
	for _, s := range segs {
		for n.byIP[s.next] != nil {
			s.next = s.next.Next()
		}
		if !s.prefix.Contains(s.next) {
			panic(fmt.Sprintf("netsim: segment %s is full", s.name))
		}
		ips = append(ips, s.next)
		s.next = s.next.Next()
	}
	return n.addHostLocked(name, segs, ips)
}

// AddHostAddr adds a host with one interface on seg with the given address,
// which must lie in the segment's prefix and be free.
func (n *Network) AddHostAddr(name string, seg *Segment, ip netip.Addr) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !seg.prefix.Contains(ip) || n.byIP[ip] != nil {
		panic(fmt.Sprintf("netsim: address %s is outside %s or taken", ip, seg.prefix))
	}
	return n.addHostLocked(name, []*Segment{seg}, []netip.Addr{ip})
}

func (n *Network) addHostLocked(name string, segs []*Segment, ips []netip.Addr) *Host {
	if len(segs) == 0 {
		panic("netsim: a host needs at least one segment")
	}
	if n.byName[name] != nil {
		panic(fmt.Sprintf("netsim: duplicate host name %q", name))
	}
	h := &Host{n: n, name: name, idx: int32(len(n.hosts)), up: true, nextPort: firstEphemeral}
	for i, s := range segs {
		h.ifaces = append(h.ifaces, iface{seg: s, ip: ips[i], name: fmt.Sprintf("eth%d", i), index: i + 1})
		s.hosts = append(s.hosts, h)
		n.byIP[ips[i]] = h
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	n.hosts = append(n.hosts, h)
	n.byName[name] = h
	var addrs []string
	for _, ifc := range h.ifaces {
		addrs = append(addrs, ifc.seg.name+"="+ifc.ip.String())
	}
	n.tr.line(n.nowLocked(), "host", "name", name, "addrs", strings.Join(addrs, ","))
	return h
}

// Host returns the host with the given name, or nil.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byName[name]
}

// Hosts returns every host in the order they were added.
func (n *Network) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.hosts)
}

// nowLocked returns simulated nanoseconds since New.
func (n *Network) nowLocked() int64 { return int64(time.Since(n.start)) }

func (n *Network) quantize(t int64) int64 {
	q := int64(n.opts.Quantum)
	return (t + q - 1) / q * q
}

// Settle returns once the network has delivered everything due at the
// current instant and every goroutine of the bubble has reacted to it (it is
// synctest.Wait for code that runs beside a Network, whose scheduler already
// calls synctest.Wait: two concurrent callers of synctest.Wait panic).
func (n *Network) Settle() {
	ch := make(chan struct{})
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.settles = append(n.settles, ch)
	n.mu.Unlock()
	n.wake()
	<-ch
}

// RunFor lets simulated time pass by d and then settles (see Settle).
// Inside a bubble it is time.Sleep(d) plus Settle; a plain time.Sleep works
// too.
func (n *Network) RunFor(d time.Duration) {
	time.Sleep(d)
	n.Settle()
}

// RunUntil lets simulated time pass until cond returns true, evaluating it
// every Options.Poll after the network has settled, for at most limit. It
// reports whether cond became true.
func (n *Network) RunUntil(cond func() bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		n.Settle()
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(left, n.opts.Poll))
	}
}

func (n *Network) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// run is the scheduler: the only goroutine that draws random numbers,
// orders deliveries and writes the trace. Between instants it waits for the
// whole bubble to be idle, so that what the programs did at an instant is
// complete before the network acts on it.
func (n *Network) run() {
	defer close(n.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		synctest.Wait()
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			select {
			case <-n.done:
				return
			default:
			}
			// Close is waiting for hosts' goroutines; keep delivering nothing.
			<-n.done
			return
		}
		busy := n.stepLocked()
		wakeups := n.wakeups
		thens := n.thens
		n.thens = nil
		var settles []chan struct{}
		if !busy && len(thens) == 0 {
			settles = n.settles
			n.settles = nil
		}
		next, ok := n.events.peek()
		now := n.nowLocked()
		n.mu.Unlock()
		// Wake the readers only now: each wakes once per instant and finds
		// every datagram of the instant queued, instead of waking at the
		// first and again for each later one while the scheduler is still
		// delivering; nor do they find n.mu held.
		for i, p := range wakeups {
			signal(p.readable)
			wakeups[i] = nil
		}
		n.wakeups = wakeups[:0] // only this goroutine touches it: no lock
		for _, f := range thens {
			f()
		}
		if busy || len(thens) > 0 {
			continue
		}
		if len(settles) > 0 {
			for _, ch := range settles {
				close(ch)
			}
			continue
		}
		if ok {
			timer.Reset(time.Duration(next - now))
		}
		select {
		case <-timer.C:
		case <-n.kick:
			timer.Stop()
		case <-n.done:
			timer.Stop()
			return
		}
	}
}

// stepLocked does the work of the current instant: it turns the programs'
// sends into scheduled events, then delivers what is due. It reports whether
// it did anything.
func (n *Network) stepLocked() bool {
	now := n.nowLocked()
	busy := false
	if len(n.outbox) > 0 {
		busy = true
		out := n.outbox
		n.outbox = nil
		slices.SortFunc(out, func(a, b sendItem) int {
			if a.sentAt != b.sentAt {
				return cmpInt(a.sentAt, b.sentAt)
			}
			if a.src != b.src {
				return cmpInt(a.src, b.src)
			}
			if a.ep != b.ep {
				return cmpInt(a.ep, b.ep)
			}
			return cmpInt(a.seq, b.seq)
		})
		for i := range out {
			n.scheduleLocked(&out[i])
			out[i] = sendItem{}
		}
	}
	for {
		at, ok := n.events.peek()
		if !ok || at > now {
			break
		}
		busy = true
		ev := n.events.pop()
		n.deliverLocked(now, &ev)
	}
	return busy
}

func cmpInt[T int64 | int32 | uint64](a, b T) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

func (n *Network) scheduleLocked(it *sendItem) {
	if it.dg != nil {
		n.scheduleDatagramLocked(it.dg)
	} else {
		n.scheduleChunkLocked(it.ch)
	}
}

func (n *Network) deliverLocked(now int64, ev *event) {
	n.stats.Events++
	if ev.rtx != nil {
		n.synTimerLocked(now, ev.rtx, ev.sub)
	} else if ev.ch != nil {
		n.deliverChunkLocked(now, ev)
	} else {
		n.deliverDatagramLocked(now, ev)
	}
}

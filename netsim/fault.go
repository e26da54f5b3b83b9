package netsim

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Link describes the path from one host to another.
type Link struct {
	// Latency delays every packet, datagram or stream segment. Raising it
	// delays datagrams already in flight too; stream segments keep their
	// order whatever the latency does.
	Latency time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each datagram,
	// so datagrams reorder. Streams are not jittered. A multicast datagram
	// draws its jitter once: its receivers on the segment get it together
	// (loss and duplication are drawn per receiver).
	Jitter time.Duration
	// Loss is the probability that a datagram is lost, drawn per receiver
	// when it arrives (so it applies to datagrams already in flight).
	Loss float64
	// Duplicate is the probability that a datagram is delivered twice, the
	// copy one quantum plus jitter later.
	Duplicate float64
}

// FaultKind names a fault in FaultCounts. The names are stable.
type FaultKind string

// The faults the network counts. Each count is the number of times the
// fault acted on a packet, stream or host.
const (
	FaultLatency        FaultKind = "latency"         // packet delayed by a non-zero latency
	FaultJitter         FaultKind = "jitter"          // datagram delayed by a non-zero jitter
	FaultLoss           FaultKind = "loss"            // datagram lost (per receiver)
	FaultDuplicate      FaultKind = "duplicate"       // datagram duplicated (per receiver)
	FaultPartition      FaultKind = "partition"       // datagram dropped by a partition (per receiver)
	FaultHold           FaultKind = "hold"            // datagram held by a Hold rule (per receiver)
	FaultStall          FaultKind = "stall"           // stream segment stalled by a partition, hold or link down
	FaultLinkDown       FaultKind = "link_down"       // datagram dropped on a down link (per receiver)
	FaultCrash          FaultKind = "crash"           // host crashed
	FaultRestart        FaultKind = "restart"         // host restarted
	FaultHostDown       FaultKind = "host_down"       // packet arrived at a crashed host and vanished
	FaultReset          FaultKind = "reset"           // stream end reset by a crash, ResetStreams or a rule
	FaultRule           FaultKind = "rule"            // packet dropped by the OnPacket hook
	FaultBufferOverflow FaultKind = "buffer_overflow" // datagram dropped: receive buffer full
	FaultRewrite        FaultKind = "rewrite"         // packet's payload replaced by the OnPacket hook (Verdict.Replace)
	FaultReplay         FaultKind = "replay"          // packet delivered twice by the OnPacket hook (Verdict.Duplicate)
	FaultNATDrop        FaultKind = "nat_drop"        // packet dropped by a NAT: no mapping, filtered, no hairpinning, NAT down (NAT.Stats says which)
	FaultNATReset       FaultKind = "nat_reset"       // unsolicited TCP segment answered with an RST by a NAT (NATConfig.Reset)
)

var faultKinds = [...]FaultKind{FaultLatency, FaultJitter, FaultLoss, FaultDuplicate,
	FaultPartition, FaultHold, FaultStall, FaultLinkDown, FaultCrash, FaultRestart,
	FaultHostDown, FaultReset, FaultRule, FaultBufferOverflow, FaultRewrite, FaultReplay, FaultNATDrop, FaultNATReset}

const numFaults = len(faultKinds)

const (
	fLatency = iota
	fJitter
	fLoss
	fDuplicate
	fPartition
	fHold
	fStall
	fLinkDown
	fCrash
	fRestart
	fHostDown
	fReset
	fRule
	fOverflow
	fRewrite
	fReplay
	fNATDrop
	fNATReset
)

// Stats counts what the network did.
type Stats struct {
	Datagrams   int64 // datagrams sent by programs (a multicast counts once per segment)
	Deliveries  int64 // datagrams delivered into sockets (a multicast once per receiving socket)
	Segments    int64 // stream segments delivered (data, SYN, FIN, RST)
	StreamBytes int64 // stream payload bytes delivered
	Events      int64 // scheduled events processed
	// SimultaneousOpens counts streams made by TCP simultaneous open (a SYN
	// meeting a conn that is itself dialing the SYN's sender).
	SimultaneousOpens int64
	Faults            map[FaultKind]int64
}

// Stats returns the counters so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	s.Faults = n.faultCountsLocked()
	return s
}

// FaultCounts returns how often each fault fired, with every FaultKind
// present as a key.
func (n *Network) FaultCounts() map[FaultKind]int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.faultCountsLocked()
}

// FaultCount returns how often one fault fired.
func (n *Network) FaultCount(k FaultKind) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i := slices.Index(faultKinds[:], k); i >= 0 {
		return n.counts[i]
	}
	return 0
}

func (n *Network) faultCountsLocked() map[FaultKind]int64 {
	m := make(map[FaultKind]int64, numFaults)
	for i, k := range faultKinds {
		m[k] = n.counts[i]
	}
	return m
}

type ruleKind uint8

const (
	rulePartition ruleKind = iota + 1
	ruleHold
)

// Rule is a partition or a hold between two sets of hosts, in force until
// Heal.
type Rule struct {
	n          *Network
	kind       ruleKind
	from, to   hostSet
	complement bool // to is every host not in from
	twoWay     bool
	name       string
	healed     bool
}

type hostSet []uint64

func makeHostSet(hs []*Host) hostSet {
	var s hostSet
	for _, h := range hs {
		w := int(h.idx) / 64
		for len(s) <= w {
			s = append(s, 0)
		}
		s[w] |= 1 << (uint(h.idx) % 64)
	}
	return s
}

func (s hostSet) has(h *Host) bool {
	w := int(h.idx) / 64
	return w < len(s) && s[w]&(1<<(uint(h.idx)%64)) != 0
}

func (r *Rule) matches(from, to *Host) bool {
	in := func(a, b *Host) bool {
		if !r.from.has(a) {
			return false
		}
		if r.complement {
			return !r.from.has(b)
		}
		return r.to.has(b)
	}
	return in(from, to) || (r.twoWay && in(to, from))
}

type faultState struct {
	link      Link
	overrides map[[2]int32]Link
	rules     []*Rule
	held      []heldDatagram
	stalled   []*streamDir
}

type heldDatagram struct {
	dg  *datagram
	rcv *packetConn
}

func (n *Network) linkLocked(from, to *Host) Link {
	if len(n.faults.overrides) == 0 || to == nil {
		return n.faults.link
	}
	if l, ok := n.faults.overrides[[2]int32{from.idx, to.idx}]; ok {
		return l
	}
	return n.faults.link
}

// blockedLocked returns the rule that stops packets from one host to
// another, or nil. A host always reaches itself.
func (n *Network) blockedLocked(from, to *Host) *Rule {
	if from == to {
		return nil
	}
	for _, r := range n.faults.rules {
		if r.matches(from, to) {
			return r
		}
	}
	return nil
}

func hostNames(hs []*Host) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(h.name)
	}
	return b.String()
}

// SetDefaultLink sets the link between every pair of hosts without an
// override from SetLinks.
func (n *Network) SetDefaultLink(l Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults.link = l
	n.traceLinkLocked("*", "*", l)
	n.wake()
}

// SetLinks overrides the link from every host of from to every host of to
// (one direction; call it twice for both).
func (n *Network) SetLinks(from, to []*Host, l Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.faults.overrides == nil {
		n.faults.overrides = make(map[[2]int32]Link)
	}
	for _, a := range from {
		for _, b := range to {
			if a != b {
				n.faults.overrides[[2]int32{a.idx, b.idx}] = l
			}
		}
	}
	n.traceLinkLocked(hostNames(from), hostNames(to), l)
	n.wake()
}

// ClearLinks removes every override made by SetLinks.
func (n *Network) ClearLinks() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults.overrides = nil
	n.tr.line(n.nowLocked(), "links-cleared")
	n.wake()
}

func (n *Network) traceLinkLocked(from, to string, l Link) {
	n.tr.begin(n.nowLocked(), "link")
	n.tr.str("from", from)
	n.tr.str("to", to)
	n.tr.num("latency", int64(l.Latency))
	n.tr.num("jitter", int64(l.Jitter))
	n.tr.num("loss_ppm", int64(l.Loss*1e6))
	n.tr.num("dup_ppm", int64(l.Duplicate*1e6))
	n.tr.end()
}

// Partition cuts a from b in both directions: datagrams between them are
// dropped, stream segments stall (nothing is lost; they flow after Heal).
func (n *Network) Partition(a, b []*Host) *Rule {
	return n.addRule(&Rule{kind: rulePartition, from: makeHostSet(a), to: makeHostSet(b), twoWay: true,
		name: "partition " + hostNames(a) + " <-> " + hostNames(b)})
}

// PartitionOneWay cuts the direction from -> to only.
func (n *Network) PartitionOneWay(from, to []*Host) *Rule {
	return n.addRule(&Rule{kind: rulePartition, from: makeHostSet(from), to: makeHostSet(to),
		name: "partition " + hostNames(from) + " -> " + hostNames(to)})
}

// Isolate cuts h from every other host, in both directions.
func (n *Network) Isolate(h *Host) *Rule {
	return n.addRule(&Rule{kind: rulePartition, from: makeHostSet([]*Host{h}), complement: true, twoWay: true,
		name: "isolate " + h.name})
}

// Hold stops packets from -> to without dropping them: datagrams and stream
// segments wait until Heal (or Release) and are then delivered in order.
func (n *Network) Hold(from, to []*Host) *Rule {
	return n.addRule(&Rule{kind: ruleHold, from: makeHostSet(from), to: makeHostSet(to),
		name: "hold " + hostNames(from) + " -> " + hostNames(to)})
}

func (n *Network) addRule(r *Rule) *Rule {
	r.n = n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults.rules = append(n.faults.rules, r)
	n.tr.line(n.nowLocked(), "rule", "rule", r.name)
	return r
}

// Heal removes the rule. Held datagrams and stalled stream segments whose
// path is now open are delivered one quantum later, in their original order.
func (r *Rule) Heal() {
	n := r.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if r.healed {
		return
	}
	r.healed = true
	if i := slices.Index(n.faults.rules, r); i >= 0 {
		n.faults.rules = slices.Delete(n.faults.rules, i, i+1)
	}
	n.tr.line(n.nowLocked(), "heal", "rule", r.name)
	n.releaseLocked()
}

// Release is Heal, named for Hold rules.
func (r *Rule) Release() { r.Heal() }

// String names the rule.
func (r *Rule) String() string { return r.name }

// pathOpenLocked reports whether packets can go from one host to another
// (to nil: a host not known yet, behind a NAT without a mapping; only the
// sender's link counts).
func (n *Network) pathOpenLocked(from, to *Host) bool {
	if to == nil {
		return !from.linkDown
	}
	if from != to && (from.linkDown || to.linkDown) {
		return false
	}
	return n.blockedLocked(from, to) == nil
}

// releaseLocked reschedules held datagrams and stalled stream segments
// whose path has opened.
func (n *Network) releaseLocked() {
	now := n.nowLocked()
	at := n.quantize(now + 1)
	kept := n.faults.held[:0]
	for _, hd := range n.faults.held {
		if !n.pathOpenLocked(hd.dg.from, hd.rcv.h) {
			kept = append(kept, hd)
			continue
		}
		hd.dg.sub++
		n.events.push(event{at: at, src: hd.dg.from.idx, ep: hd.dg.ep, seq: hd.dg.seq, sub: hd.dg.sub, dg: hd.dg, rcv: hd.rcv, dup: true})
	}
	clear(n.faults.held[len(kept):])
	n.faults.held = kept
	stalled := n.faults.stalled[:0]
	for _, d := range n.faults.stalled {
		if !n.pathOpenLocked(d.fromHost, d.toHost) {
			stalled = append(stalled, d)
			continue
		}
		d.inStalled = false
		lat := n.linkLocked(d.fromHost, d.toHost).Latency
		for _, c := range d.stalled {
			t := max(n.quantize(now+int64(lat)), d.lastAt, at)
			d.lastAt = t
			n.events.push(event{at: t, src: d.fromHost.idx, ep: d.from.ep, seq: c.seq, sub: 1, ch: c})
		}
		clear(d.stalled)
		d.stalled = d.stalled[:0]
	}
	clear(n.faults.stalled[len(stalled):])
	n.faults.stalled = stalled
	n.wake()
}

// LinkDown takes every interface of h down: its datagrams in either
// direction are dropped and its streams stall until LinkUp.
func (h *Host) LinkDown() {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	h.linkDown = true
	n.tr.line(n.nowLocked(), "link-down", "host", h.name)
}

// LinkUp brings h's interfaces back up; stalled streams resume.
func (h *Host) LinkUp() {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if !h.linkDown {
		return
	}
	h.linkDown = false
	n.tr.line(n.nowLocked(), "link-up", "host", h.name)
	n.releaseLocked()
}

// ResetStreams resets every stream between a host of a and a host of b
// (either direction), as a middlebox injecting RSTs would: both ends see
// ECONNRESET at once. It returns how many streams it reset.
func (n *Network) ResetStreams(a, b []*Host) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	sa, sb := makeHostSet(a), makeHostSet(b)
	var victims []*conn
	seen := make(map[*conn]bool)
	for _, h := range n.hosts {
		for _, c := range h.sortedConnsLocked() {
			p := c.peer
			if p == nil || seen[c] || !((sa.has(c.h) && sb.has(p.h)) || (sb.has(c.h) && sa.has(p.h))) {
				continue
			}
			seen[c], seen[p] = true, true
			victims = append(victims, c)
		}
	}
	count := 0
	for _, c := range victims {
		if c.resetNow() {
			n.counts[fReset]++
			count++
		}
		if c.peer.resetNow() {
			n.counts[fReset]++
		}
		n.tr.line(n.nowLocked(), "reset", "a", c.local.String(), "b", c.remote.String())
	}
	return count
}

// Packet is what the OnPacket hook sees of each packet when it arrives.
//
// Payload is read-only and valid only during the call. A hook that keeps
// the bytes, to replay them later, copies them (bytes.Clone(p.Payload));
// the copy is the hook's own and stays valid: it can be returned as the
// Verdict.Replace of a later packet (a replay of captured bytes, on the
// same stream or another one, or as a datagram) or sent by a program.
type Packet struct {
	Time    time.Duration  // simulated time of arrival
	Proto   string         // "udp" or "tcp"
	Kind    string         // "datagram", or for tcp "syn", "synack", "data", "fin", "rst"
	From    *Host          // sending host
	To      *Host          // receiving host; nil for a multicast datagram, or if no NAT mapping leads anywhere yet
	Src     netip.AddrPort // source address, as the sender has it (before NATs)
	Dst     netip.AddrPort // destination address, as the sender has it (the group for multicast)
	Payload []byte         // read-only; valid only during the call: copy it to keep it
}

// Verdict is the OnPacket hook's answer. The zero Verdict delivers the
// packet unchanged. Replace and Duplicate act on datagrams and on stream
// "data" segments only; on other segments (syn, synack, fin, rst) they are
// ignored and not counted. Drop overrides them.
type Verdict struct {
	// Drop drops a datagram (counted as FaultRule). On a stream segment it
	// resets the stream, since streams never lose bytes.
	Drop bool
	// Replace, if not nil, is delivered instead of the packet's payload
	// (counted as FaultRewrite, traced as "udp-rule-rewrite" or
	// "tcp-rule-rewrite", even if the bytes are equal). netsim copies it,
	// so the hook may reuse the slice after returning. A non-nil empty
	// Replace delivers an empty datagram, or removes the segment's bytes
	// from the stream.
	//
	// A multicast datagram is seen once for all of its receivers, so they
	// all get the replacement. On a stream segment the replacement may be
	// longer or shorter than the original: the receiver reads its bytes in
	// place of the original's, in order, and the sender's window is
	// adjusted by the difference, so flow control stays exact (a longer
	// replacement takes window from the sender until it is read, a shorter
	// one gives back what will never be read).
	Replace []byte
	// Duplicate delivers the packet twice (counted as FaultReplay, traced
	// as "udp-rule-replay" or "tcp-rule-replay"), after Replace if both
	// are set. A datagram's copy follows the original in the same instant
	// and meets the same faults, drawn afresh (loss, link duplication,
	// partitions, holds). A stream segment's bytes appear twice in a row
	// in the receiver's stream, as a replay inside the connection would
	// make them; the sender's window is adjusted as for Replace.
	Duplicate bool
	// Then, if set, runs on the scheduler's goroutine once the current
	// instant's deliveries are done (this packet's included); it may call
	// any method of the network, for example Partition or Host.Crash.
	Then func()
}

// OnPacket installs a hook that sees every packet when it arrives, before
// faults act on it; nil removes it. Each packet is seen once, however many
// receivers, holds or stalls it meets afterwards (a copy made by a
// Duplicate verdict or by link duplication is not seen again). The hook
// runs on the scheduler's goroutine with the network locked: it must not
// call the network's methods itself (return them in Verdict.Then) and must
// not block. It runs in the deterministic order of deliveries, so a hook
// that keeps state (captured payloads, counters) stays deterministic.
func (n *Network) OnPacket(hook func(Packet) Verdict) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hook = hook
}

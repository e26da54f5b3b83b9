package sim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// tap is a man in the middle on the whole simulated network: it keeps a
// copy of every packet as its sender sent it, and lets a policy rewrite,
// replay or cut the stream data segments.
type tap struct {
	mu     sync.Mutex
	pkts   []tapped
	nseg   map[[2]netip.AddrPort]int // data segments seen per stream direction
	policy func(s *tapped) netsim.Verdict
}

// tapped is one packet the tap saw; Payload is the tap's own copy.
type tapped struct {
	netsim.Packet
	// Seg is a data segment's index in its direction of its stream (0:
	// the first bytes the sender wrote); -1 for any other packet.
	Seg int
}

// newTap installs a tap on nw. It is the network's only hook.
func newTap(nw *netsim.Network) *tap {
	tp := &tap{nseg: map[[2]netip.AddrPort]int{}}
	nw.OnPacket(tp.hook)
	return tp
}

func (tp *tap) hook(p netsim.Packet) netsim.Verdict {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	s := tapped{Packet: p, Seg: -1}
	s.Payload = bytes.Clone(p.Payload)
	switch {
	case p.Proto == "tcp" && p.Kind == "syn":
		// A new stream, maybe on a port an old one used.
		delete(tp.nseg, [2]netip.AddrPort{p.Src, p.Dst})
		delete(tp.nseg, [2]netip.AddrPort{p.Dst, p.Src})
	case p.Proto == "tcp" && p.Kind == "data":
		k := [2]netip.AddrPort{p.Src, p.Dst}
		s.Seg = tp.nseg[k]
		tp.nseg[k]++
	}
	tp.pkts = append(tp.pkts, s)
	if tp.policy == nil || s.Seg < 0 {
		return netsim.Verdict{}
	}
	return tp.policy(&s)
}

// do runs f with the tap locked: f may read or change what its policy
// reads.
func (tp *tap) do(f func()) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	f()
}

// setPolicy sets the policy applied to every stream data segment; nil
// lets everything through unchanged.
func (tp *tap) setPolicy(p func(s *tapped) netsim.Verdict) { tp.do(func() { tp.policy = p }) }

// packets returns what the tap saw so far, oldest first.
func (tp *tap) packets() []tapped {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.pkts)
}

// streams returns the bytes of every stream direction the tap saw, as
// their senders wrote them, keyed by source and destination.
func (tp *tap) streams() map[[2]netip.AddrPort][]byte {
	out := map[[2]netip.AddrPort][]byte{}
	for _, p := range tp.packets() {
		if p.Seg >= 0 {
			k := [2]netip.AddrPort{p.Src, p.Dst}
			out[k] = append(out[k], p.Payload...)
		}
	}
	return out
}

// firstSyn returns the first connection the tap saw from host from to
// the address dst, and whether there is one.
func (tp *tap) firstSyn(from *netsim.Host, dst netip.AddrPort) (tapped, bool) {
	for _, p := range tp.packets() {
		if p.Proto == "tcp" && p.Kind == "syn" && p.From == from && p.Dst == dst {
			return p, true
		}
	}
	return tapped{}, false
}

// connected reports whether the tap saw any connection from host from to
// host to.
func (tp *tap) connected(from, to *netsim.Host) bool {
	for _, p := range tp.packets() {
		if p.Proto == "tcp" && p.Kind == "syn" && p.From == from && p.To == to {
			return true
		}
	}
	return false
}

// sink is an attacker's TCP listener: it accepts every connection and
// keeps every byte it reads.
type sink struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  []net.Conn
	conns int
	data  []byte
}

// listenSink listens on port of h (0: any) until the end of the scenario.
func listenSink(t *testing.T, c *cluster, h *netsim.Host, port uint16) *sink {
	t.Helper()
	ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatalf("attacker listen on %s port %d: %v", h.Name(), port, err)
	}
	s := &sink{ln: ln}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.open = append(s.open, conn)
			s.mu.Unlock()
			s.wg.Go(func() {
				buf := make([]byte, 4096)
				for {
					k, err := conn.Read(buf)
					s.mu.Lock()
					s.data = append(s.data, buf[:k]...)
					s.mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
	})
	c.onClose(s.close)
	return s
}

func (s *sink) port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

// got returns how many connections the sink accepted and what it read.
func (s *sink) got() (conns int, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, slices.Clone(s.data)
}

func (s *sink) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// step runs one case of a scenario. A bubble has no subtests, so it logs
// the case's name, and the case's failures follow it in the log.
func step(t *testing.T, name string, f func()) {
	t.Helper()
	t.Logf("case: %s", name)
	f()
}

// startNodes starts one of our nodes per nickname, each on its own host
// of one LAN segment, and runs until they all list each other.
func startNodes(t *testing.T, c *cluster, nicks ...string) (*netsim.Segment, []*peer) {
	t.Helper()
	c.nw.SetDefaultLink(lanLink)
	lan := c.nw.AddSegment("lan")
	hs := addHosts(c.nw, lan, "h", len(nicks))
	ps := make([]*peer, len(nicks))
	for i, nick := range nicks {
		ps[i] = c.start(hs[i], nick)
	}
	if !c.nw.RunUntil(func() bool { return viewsMatch(ps) }, discoveryBound(lanLink)+quantum) {
		t.Fatalf("no discovery within %v: %v", discoveryBound(lanLink), viewsErr(ps))
	}
	return lan, ps
}

// mustDeliver sends text from -> name and fails t unless the peer
// acknowledged it inside a session.
func mustDeliver(t *testing.T, from, to *peer, name, text string) *message {
	t.Helper()
	m := send(t.Context(), from, to, name, text)
	if m.err != nil || m.res.Status != chat.Delivered || !m.res.Encrypted {
		t.Fatalf("%v (encrypted %v): want delivered inside a session", m, m.res.Encrypted)
	}
	return m
}

// shown returns the messages p's instances showed with text.
func shown(p *peer, text string) []chat.Message {
	var out []chat.Message
	for _, r := range p.Recs() {
		for _, m := range r.Messages() {
			if m.Text == text {
				out = append(out, m)
			}
		}
	}
	return out
}

// shownTexts returns the texts p's instances showed, in order.
func shownTexts(p *peer) []string {
	var out []string
	for _, r := range p.Recs() {
		for _, m := range r.Messages() {
			out = append(out, m.Text)
		}
	}
	return out
}

// securityEvents returns p's current instance's EventSecurity events.
func securityEvents(p *peer) []chat.Event {
	var out []chat.Event
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventSecurity {
			out = append(out, ev)
		}
	}
	return out
}

// deliveredEvents returns the EventDelivered events of p's instances about
// the message in row seq of its store.
func deliveredEvents(p *peer, seq int64) []chat.Event {
	var out []chat.Event
	for _, r := range p.Recs() {
		for _, ev := range r.All() {
			if ev.Kind == chat.EventDelivered && ev.Stored.Seq == seq {
				out = append(out, ev)
			}
		}
	}
	return out
}

// statusAt returns p's view of the peer at addr, and whether p lists it.
func statusAt(p *peer, addr netip.AddrPort) (chat.PeerStatus, bool) {
	for _, st := range p.Chat().PeerStatuses() {
		if st.Addr == addr {
			return st, true
		}
	}
	return chat.PeerStatus{}, false
}

// onlySentTexts checks that every message p showed has one of the texts
// of msgs, at most once: no altered text, no replay.
func onlySentTexts(t *testing.T, p *peer, msgs []*message) {
	t.Helper()
	sent := map[string]bool{}
	for _, m := range msgs {
		sent[m.text] = true
	}
	count := map[string]int{}
	for _, r := range p.Recs() {
		for _, m := range r.Messages() {
			count[m.Text]++
			if !sent[m.Text] {
				t.Errorf("%v showed %q from %s, a text nobody sent (altered in transit?)", p, m.Text, m.From)
			}
		}
	}
	for text, k := range count {
		if k > 1 {
			t.Errorf("%v showed %q %d times, want at most once", p, text, k)
		}
	}
}

// attacker is a host on the LAN with raw sockets: it hears every
// announce (through the tap) and multicasts whatever datagrams it likes,
// from its own address (netsim sets the source, as a switch would show).
type attacker struct {
	t  *testing.T
	c  *cluster
	h  *netsim.Host
	pc net.PacketConn
}

func newAttacker(t *testing.T, c *cluster, lan *netsim.Segment, name string) *attacker {
	t.Helper()
	h := c.nw.AddHost(name, lan)
	pc, err := h.ListenPacket(h.Context(), "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	c.onClose(func() { pc.Close() })
	return &attacker{t: t, c: c, h: h, pc: pc}
}

// multicast sends datagrams to the discovery group.
func (a *attacker) multicast(ds ...protocol.Datagram) {
	a.t.Helper()
	for _, d := range ds {
		b, err := protocol.EncodeDatagram(d)
		if err != nil {
			a.t.Fatal(err)
		}
		if _, err := a.pc.WriteTo(b, chat.GroupAddr()); err != nil {
			a.t.Fatal(err)
		}
	}
}

// listed returns the entries p lists at the attacker's address.
func (a *attacker) listed(p *peer) (keyed, all []chat.PeerStatus) {
	for _, st := range p.Chat().PeerStatuses() {
		if st.Addr.Addr() == a.h.IP() {
			all = append(all, st)
			if st.PubKey != "" {
				keyed = append(keyed, st)
			}
		}
	}
	return keyed, all
}

// lastAnnounce returns the last signed announce the tap saw from host h.
func lastAnnounce(t *testing.T, tp *tap, h *netsim.Host) protocol.Announce {
	t.Helper()
	var heard *protocol.Announce
	for _, p := range tp.packets() {
		if p.Proto != "udp" || p.From != h {
			continue
		}
		if d, err := protocol.DecodeDatagram(p.Payload); err == nil {
			if a, ok := d.(*protocol.Announce); ok && a.Signed() {
				heard = a
			}
		}
	}
	if heard == nil {
		t.Fatalf("the tap heard no signed announce from %s", h.Name())
	}
	return *heard
}

// strippedCopy returns a's announce without the fields listed.
func strippedCopy(a protocol.Announce, key, caps, instance bool) *protocol.Announce {
	if key {
		a.Signature = protocol.Signature{}
	}
	if caps {
		a.Caps = nil
	}
	if instance {
		a.Instance = ""
	}
	return &a
}

// bytesReader returns a deterministic reader of key material.
func bytesReader(seed uint64) io.Reader {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	return bytes.NewReader(bytes.Repeat(b[:], 8))
}

// countSyns counts the connections the tap saw from one host to another.
func countSyns(tp *tap, from, to *netsim.Host) int {
	k := 0
	for _, p := range tp.packets() {
		if p.Proto == "tcp" && p.Kind == "syn" && p.From == from && p.To == to {
			k++
		}
	}
	return k
}

// originalDiscoveryBound is how long an original peer and ours take to
// list each other: its first announce reaches ours in one hop, and ours
// answer its arrival within QueryAnswerMax.
func originalDiscoveryBound() time.Duration {
	return hop(lanLink) + chat.QueryAnswerMax + hop(lanLink) + quantum
}

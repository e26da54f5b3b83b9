package sim

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// Internet mode across NATs, as it works today: a client registers its TCP listening port and the server lists it at the
// IP the server saw (the outermost NAT's public address) plus that port.
// No NAT has a mapping for a listening port (mappings are made by
// outbound packets, and the node dials from other ports), so a direct
// dial to that address reaches nothing when the client is behind any NAT,
// whatever the NAT's filtering, and even through a hairpinning NAT from
// the same LAN; only a public destination is reached there. A client also
// registers its own interface addresses (Register.Addrs): a peer on the
// same LAN reaches it directly at one of them, while those of another
// realm are unreachable (EHOSTUNREACH at once). Everything else goes
// through the server's relay, RelayDelay after the direct attempts
// started. Then the side that opened the relayed session punches a hole
// (chat/punch.go): both dial each other's public address from their
// listening port at about the same instant. That works when every NAT on
// both sides maps endpoint-independently with the port preserved (cone,
// address-restricted, full cone; a public host trivially) and fails
// through any random-port (symmetric) NAT, CGNAT included. A punch try
// also leaves a mapping of the listening port on the trier's NAT, which a
// full-cone or address-restricted NAT then opens to any port of the
// peer's public IP.

// reconnectWithin is client/internal/rendezvous.ReconnectWithin (not
// importable from here): after a lost server is back, an attempt under
// way may hang for the handshake timeout, then the backoff waits at most
// its maximum.
const reconnectWithin = rendezvousHandshakeTimeout + rendezvousMaxBackoff

// rendezvousHeartbeat is the client's heartbeat interval on its control
// connection (client/internal/rendezvous.DefaultHeartbeatInterval): it
// keeps that connection's NAT mappings alive.
const rendezvousHeartbeat = 10 * time.Second

// directTrips is how many one-way trips a first Send to a reachable peer
// takes: SYN, SYN-ACK, the three Noise handshake messages (the message
// line leaves with the third), the ack.
const directTrips = 6

// relayTrips is how many one-way trips between a client and the server a
// first Send through the relay takes once the relay is tried: the
// sender's WebSocket (SYN, SYN-ACK, upgrade request and answer),
// relay_connect, relay_incoming to the peer on its control connection,
// the peer's WebSocket (four), relay_accept, relay_ready, then the Noise
// handshake (three messages, the line with the third) and the ack, two
// trips each through the server.
const relayTrips = 4 + 1 + 1 + 4 + 1 + 1 + 2*4

// punchTrips bounds how many one-way trips a successful hole punch takes
// once the relayed send returned: connect and its answer through the
// server (four; their time is the RTT), the initiator's wait of half
// that (two), the simultaneous SYNs and SYN-ACKs (two), the Noise
// handshake on the new connection up to the initiator's last message
// (two), one more for the instants in between.
const punchTrips = 4 + 2 + 2 + 2 + 1

// natKind is what stands between a client and the internet, from the
// client outwards; none: a public host.
type natKind struct {
	name string
	nats []netsim.NATConfig
}

var (
	natPublic     = natKind{"public", nil}
	natFullCone   = natKind{"full-cone", []netsim.NATConfig{netsim.NATFullCone()}}
	natCone       = natKind{"cone", []netsim.NATConfig{netsim.NATCone()}}
	natAddrRestr  = natKind{"addr-restricted", []netsim.NATConfig{{Mapping: netsim.EndpointIndependent, Filtering: netsim.AddressDependent}}}
	natSymmetric  = natKind{"symmetric", []netsim.NATConfig{netsim.NATSymmetric()}}
	natCGNAT      = natKind{"cgnat", []netsim.NATConfig{netsim.NATCone(), netsim.NATSymmetric()}}
	natKindsOrder = []natKind{natPublic, natFullCone, natCone, natAddrRestr, natSymmetric, natCGNAT}
)

// natSite is one client's place in the topology.
type natSite struct {
	host   *netsim.Host
	nats   []*netsim.NAT // from the client outwards
	public netip.Addr    // the address the server sees
}

// outer is the NAT that owns the site's public address; nil if public.
func (s *natSite) outer() *netsim.NAT {
	if len(s.nats) == 0 {
		return nil
	}
	return s.nats[len(s.nats)-1]
}

// natWorld is the internet of one cell: the server "boot" and the
// clients' sites, all on one segment (wanLink between any two hosts).
type natWorld struct {
	nw       *netsim.Network
	internet *netsim.Segment
	boot     *netsim.Host
	nats     []*netsim.NAT // every NAT, in creation order
	// tweak adjusts every NAT's configuration (timeouts) before it is made.
	tweak func(*netsim.NATConfig)
}

func newNATWorld(c *cluster, tweak func(*netsim.NATConfig)) *natWorld {
	c.nw.SetDefaultLink(wanLink)
	internet := c.nw.AddSegment("internet")
	return &natWorld{nw: c.nw, internet: internet, boot: c.nw.AddHost("boot", internet), tweak: tweak}
}

func (w *natWorld) addNAT(name string, inside, outside *netsim.Segment, cfg netsim.NATConfig) *netsim.NAT {
	if w.tweak != nil {
		w.tweak(&cfg)
	}
	x := w.nw.AddNAT(name, inside, outside, cfg)
	w.nats = append(w.nats, x)
	return x
}

// chain puts NATs of cfgs between inside and the internet (the first
// innermost) and returns them.
func (w *natWorld) chain(name string, inside *netsim.Segment, cfgs []netsim.NATConfig) []*netsim.NAT {
	var nats []*netsim.NAT
	for i, cfg := range cfgs {
		outside := w.internet
		if i < len(cfgs)-1 {
			outside = w.nw.AddSegment(fmt.Sprintf("%s-isp%d", name, i+1))
		}
		nats = append(nats, w.addNAT(fmt.Sprintf("%s-nat%d", name, i+1), inside, outside, cfg))
		inside = outside
	}
	return nats
}

// site adds a client host called name behind k.
func (w *natWorld) site(name string, k natKind) *natSite {
	if len(k.nats) == 0 {
		h := w.nw.AddHost(name, w.internet)
		return &natSite{host: h, public: h.IP()}
	}
	home := w.nw.AddSegment(name + "-home")
	nats := w.chain(name, home, k.nats)
	return &natSite{host: w.nw.AddHost(name, home), nats: nats, public: nats[len(nats)-1].PublicIP()}
}

// natCell is one pair of clients: build makes their sites. relayed says
// neither can reach the other directly at first (see firstPath).
type natCell struct {
	name    string
	relayed bool
	build   func(w *natWorld) [2]*natSite
}

// pairCell puts the two clients behind NATs of their own.
func pairCell(a, b natKind) natCell {
	return natCell{
		name:    a.name + " and " + b.name,
		relayed: len(a.nats) > 0 && len(b.nats) > 0,
		build: func(w *natWorld) [2]*natSite {
			return [2]*natSite{w.site("a", a), w.site("b", b)}
		},
	}
}

// sameNATCell puts both clients on one LAN behind one NAT.
func sameNATCell(name string, cfg netsim.NATConfig) natCell {
	return natCell{
		name: name,
		build: func(w *natWorld) [2]*natSite {
			home := w.nw.AddSegment("home")
			x := w.addNAT("router", home, w.internet, cfg)
			var s [2]*natSite
			for i, n := range []string{"a", "b"} {
				s[i] = &natSite{host: w.nw.AddHost(n, home), nats: []*netsim.NAT{x}, public: x.PublicIP()}
			}
			return s
		},
	}
}

// sameCarrierCell puts each client behind a home cone NAT of its own, and
// both homes behind one symmetric carrier-grade NAT.
func sameCarrierCell(name string, carrier netsim.NATConfig) natCell {
	return natCell{
		name:    name,
		relayed: true,
		build: func(w *natWorld) [2]*natSite {
			isp := w.nw.AddSegment("isp")
			cg := w.addNAT("carrier", isp, w.internet, carrier)
			var s [2]*natSite
			for i, n := range []string{"a", "b"} {
				home := w.nw.AddSegment(n + "-home")
				x := w.addNAT(n+"-router", home, isp, netsim.NATCone())
				s[i] = &natSite{host: w.nw.AddHost(n, home), nats: []*netsim.NAT{x, cg}, public: cg.PublicIP()}
			}
			return s
		},
	}
}

// natCells is the matrix: every unordered pair of kinds, then two clients
// behind one NAT (hairpinning or not) and behind one carrier NAT.
func natCells() []natCell {
	var cells []natCell
	for i, a := range natKindsOrder {
		for _, b := range natKindsOrder[i:] {
			cells = append(cells, pairCell(a, b))
		}
	}
	hairpin := netsim.NATCone()
	hairpin.Hairpin = true
	fullHairpin := netsim.NATFullCone()
	fullHairpin.Hairpin = true
	carrierHairpin := netsim.NATSymmetric()
	carrierHairpin.Hairpin = true
	return append(cells,
		sameNATCell("one cone NAT", netsim.NATCone()),
		sameNATCell("one hairpinning cone NAT", hairpin),
		sameNATCell("one hairpinning full-cone NAT", fullHairpin),
		sameCarrierCell("one carrier NAT", netsim.NATSymmetric()),
		sameCarrierCell("one hairpinning carrier NAT", carrierHairpin),
	)
}

// sameLAN reports whether two sites share their innermost NAT (one home
// segment): each reaches the other's own address.
func sameLAN(a, b *natSite) bool {
	return len(a.nats) > 0 && len(b.nats) > 0 && a.nats[0] == b.nats[0]
}

// firstPath is the path a first session from one site to another takes:
// a public destination is reached directly at its public address, one on
// the same LAN directly at its own address, any other only through the
// relay.
func firstPath(from, to *natSite) string {
	if to.outer() == nil || sameLAN(from, to) {
		return chat.PathDirect
	}
	return chat.PathRelayed
}

// eiChain reports whether every NAT of s maps endpoint-independently and
// keeps the port: its public address and listening port are what a punch
// dial leaves from.
func eiChain(s *natSite) bool {
	for _, x := range s.nats {
		if c := x.Config(); c.Mapping != netsim.EndpointIndependent || c.RandomPorts {
			return false
		}
	}
	return true
}

// punchable reports whether a hole punch between two sites connects.
func punchable(a, b *natSite) bool { return eiChain(a) && eiChain(b) }

// keepsPorts reports whether every NAT of s keeps ports: its client sees
// in registered that the server observed its own port, and takes part in
// hole punching. Behind a NAT that draws random ports it does not (no
// try could work), and its peers go on through the relay.
func keepsPorts(s *natSite) bool {
	for _, x := range s.nats {
		if x.Config().RandomPorts {
			return false
		}
	}
	return true
}

// tries reports whether two sites make hole punching tries at all.
func tries(a, b *natSite) bool { return keepsPorts(a) && keepsPorts(b) }

// opensAfterPunch reports whether s's NAT, once s tried to punch toward
// peer p, lets p's ordinary dial (from any port of its public IP) reach
// s's listening port: a try was made, one NAT, endpoint-independent
// mapping with the port kept, filtering endpoint-independent or
// address-dependent.
func opensAfterPunch(s, p *natSite) bool {
	if !tries(s, p) || len(s.nats) != 1 || !eiChain(s) {
		return false
	}
	return s.nats[0].Config().Filtering != netsim.AddressAndPortDependent
}

// mayGoDirect reports whether any session from one site to another can be
// direct at some point: first, after a punch, or through what a punch try
// left open.
func mayGoDirect(from, to *natSite) bool {
	return firstPath(from, to) == chat.PathDirect || punchable(from, to) || opensAfterPunch(to, from)
}

// seenFrom is the address a direct connection from one site shows at the
// other: the sender's own on the same LAN, else its public one.
func seenFrom(from, to *natSite) netip.Addr {
	if sameLAN(from, to) {
		return from.host.IP()
	}
	return from.public
}

// startSpread bounds the seeded pause before each client starts.
const startSpread = 500 * time.Millisecond

// natScenario is one cell running: the server, two clients on their sites.
type natScenario struct {
	c     *cluster
	w     *natWorld
	srv   *server
	sites [2]*natSite
	peers [2]*peer
	site  map[*peer]*natSite
	start time.Duration // when the last client started
	paths map[*message]string
}

// runNATCells runs body once per cell, each in a bubble of its own (seeded
// by the subtest's name), in parallel.
func runNATCells(t *testing.T, cells []natCell, tweak func(*netsim.NATConfig), body func(t *testing.T, s *natScenario)) {
	t.Helper()
	runNATCellsWith(t, cells, tweak, nil, body)
}

// runNATCellsWith is runNATCells with nodeTweak adjusting both clients'
// configs.
func runNATCellsWith(t *testing.T, cells []natCell, tweak func(*netsim.NATConfig), nodeTweak func(*chat.Config), body func(t *testing.T, s *natScenario)) {
	t.Helper()
	for _, cell := range cells {
		t.Run(cell.name, func(t *testing.T) {
			t.Parallel()
			simTest(t, natBody(cell, tweak, nodeTweak, body))
		})
	}
}

// natBody builds cell's world, starts the server and both clients (in
// internet mode, adjusted by nodeTweak if not nil), and runs body.
func natBody(cell natCell, tweak func(*netsim.NATConfig), nodeTweak func(*chat.Config), body func(t *testing.T, s *natScenario)) func(t *testing.T, c *cluster) {
	return func(t *testing.T, c *cluster) {
		w := newNATWorld(c, tweak)
		s := &natScenario{c: c, w: w, sites: cell.build(w), site: map[*peer]*natSite{}, paths: map[*message]string{}}
		s.srv = startServer(t, c, w.boot)
		for i, nick := range []string{"alice", "bob"} {
			// At seeded offsets, as startClients does: two registers in
			// one instant reach the server's mutex in the scheduler's
			// order, which no seed fixes.
			c.nw.RunFor(time.Duration(c.seeds.Int64N(int64(startSpread))))
			tweaks := []func(*chat.Config){internet}
			if nodeTweak != nil {
				tweaks = append(tweaks, nodeTweak)
			}
			s.peers[i] = c.start(s.sites[i].host, nick, tweaks...)
			s.site[s.peers[i]] = s.sites[i]
		}
		s.start = c.nw.Now()
		body(t, s)
	}
}

// listing is how p should be listed by the other: at its public address
// (the outermost NAT's) with its listening port.
func (s *natScenario) listing(p *peer) entry {
	return entry{Nick: p.Nick(), Addr: netip.AddrPortFrom(s.site[p].public, p.Chat().Port()).String(), Instance: p.Instance()}
}

// discovered checks that each client lists the other at its public
// address within bound of the last start, through the server alone.
func (s *natScenario) discovered(t *testing.T, bound time.Duration) {
	t.Helper()
	s.c.nw.RunFor(bound + quantum)
	for i, p := range s.peers {
		q := s.peers[1-i]
		if got, want := p.View(), []entry{s.listing(q)}; !slices.Equal(got, want) {
			t.Fatalf("%v lists %v %v after the last start, want %v (bound %v)", p, got, s.c.nw.Now()-s.start, want, bound)
		}
		at, ok := discoveries(p)[q.Instance()]
		if !ok {
			t.Fatalf("%v has no event for %v", p, q)
		}
		if d := at - s.start; d > bound {
			t.Errorf("%v found %v %v after the last start, want within %v", p, q, d, bound)
		}
	}
}

// pathTo is the path of from's last session to to (PeerStatus.Path).
func pathTo(from, to *peer) string {
	for _, st := range from.Chat().PeerStatuses() {
		if st.Instance == to.Instance() {
			return st.Path
		}
	}
	return ""
}

// sendTimed sends one message from -> to on a new session and checks
// what that promises: Delivered, encrypted, over path want ("": the one
// it took, if theory allows it a direct one), within its bound (a direct
// one before the relay is even tried; a relayed one after RelayDelay,
// and within relayTrips more), plus extra.
func (s *natScenario) sendTimed(t *testing.T, from, to *peer, text, want string, extra time.Duration) *message {
	t.Helper()
	m := s.send(t, from, to, text)
	took := m.done - m.at
	if m.err != nil {
		return m
	}
	got := s.paths[m]
	switch {
	case want == "" && got == chat.PathDirect && !mayGoDirect(s.site[from], s.site[to]):
		t.Errorf("%v -> %v went %q, which no theory allows", from, to, got)
	case want != "" && got != want:
		t.Errorf("%v -> %v went %q, want %q", from, to, got, want)
	}
	switch got {
	case chat.PathDirect:
		if bound := directTrips * hop(wanLink); took > bound+extra || took >= chat.RelayDelay {
			t.Errorf("%v -> %v direct delivery took %v, want within %v (and before the relay delay %v)", from, to, took, bound+extra, chat.RelayDelay)
		}
	case chat.PathRelayed:
		if bound := chat.RelayDelay + relayTrips*hop(wanLink); took < chat.RelayDelay || took > bound+extra {
			t.Errorf("%v -> %v relayed delivery took %v, want between the relay delay %v and %v", from, to, took, chat.RelayDelay, bound+extra)
		}
	}
	return m
}

// send sends one message from -> to, checks that it was Delivered and
// encrypted, and records the path of the session that carried it.
func (s *natScenario) send(t *testing.T, from, to *peer, text string) *message {
	t.Helper()
	m := send(t.Context(), from, to, to.Nick(), text)
	if m.err != nil || m.res.Status != chat.Delivered || !m.res.Encrypted {
		t.Errorf("%v -> %v: %+v, %v (after %v); want delivered, encrypted", from, to, m.res, m.err, m.done-m.at)
	}
	s.paths[m] = pathTo(from, to)
	return m
}

// checkMessages checks that every message arrived exactly once, at its
// peer, from its sender, inside a session; one that came directly shows
// the sender's public address (its NAT's).
func (s *natScenario) checkMessages(t *testing.T, msgs []*message) {
	t.Helper()
	got := receipts(s.peers[:])
	sent := map[string]bool{}
	for _, m := range msgs {
		sent[m.text] = true
		rs := got[m.text]
		if m.err != nil {
			if len(rs) > 1 {
				t.Errorf("failed message %v arrived %d times", m, len(rs))
			}
			continue
		}
		if len(rs) != 1 {
			t.Errorf("message %v arrived %d times, want exactly once", m, len(rs))
			continue
		}
		r := rs[0]
		switch {
		case r.at != m.to:
			t.Errorf("message %v arrived at %v", m, r.at)
		case r.msg.From != m.from.Nick() || !r.msg.Encrypted || r.msg.Key == "":
			t.Errorf("message %v arrived from %q, encrypted %v, key %q; want from %q, encrypted", m, r.msg.From, r.msg.Encrypted, r.msg.Key, m.from.Nick())
		}
		if s.paths[m] == chat.PathDirect {
			if want := seenFrom(s.site[m.from], s.site[m.to]); r.msg.Remote.Addr() != want {
				t.Errorf("message %v came directly from %v, want %v", m, r.msg.Remote, want)
			}
		}
	}
	for text, rs := range got {
		if !sent[text] {
			t.Errorf("message %q arrived at %v but was never sent", text, rs[0].at)
		}
	}
}

// checkNATsActed checks that every NAT translated, and that each first
// session that could not go direct (and each one on a LAN, whose attempt
// at the public address runs beside the LAN one) had its attempt at the
// destination's public address die at the NAT that owns it: for want of
// a mapping (or by the filter of the mapping a punch try left), or of
// hairpinning when the sender is behind that NAT too.
func (s *natScenario) checkNATsActed(t *testing.T, first [2]*message) {
	t.Helper()
	for _, x := range s.w.nats {
		if st := x.Stats(); st.Translated == 0 || st.MappingsCreated == 0 {
			t.Errorf("NAT %s translated %d packets, made %d mappings; want some", x.Name(), st.Translated, st.MappingsCreated)
		}
	}
	for i, from := range s.sites {
		to := s.sites[1-i]
		x := to.outer()
		if x == nil || (s.paths[first[i]] != chat.PathRelayed && !sameLAN(from, to)) {
			continue
		}
		st := x.Stats()
		switch {
		case slices.Contains(from.nats, x) && !x.Config().Hairpin:
			if st.HairpinDropped == 0 {
				t.Errorf("NAT %s dropped no packet for want of hairpinning (%s -> %s): %+v", x.Name(), from.host.Name(), to.host.Name(), st)
			}
		default:
			// No mapping for the listening port; or, once the other side
			// tried a punch from it, a mapping whose filter refuses
			// another port (cone).
			if st.InboundNoMapping+st.InboundFiltered == 0 {
				t.Errorf("NAT %s refused no inbound packet (%s -> %s): %+v", x.Name(), from.host.Name(), to.host.Name(), st)
			}
			if st.Hairpinned != 0 {
				t.Errorf("NAT %s hairpinned %d packets, want none (no mapping for a listening port)", x.Name(), st.Hairpinned)
			}
		}
	}
}

// natSummary is one line per NAT for the log.
func (s *natScenario) natSummary() string {
	var b strings.Builder
	for _, x := range s.w.nats {
		st := x.Stats()
		fmt.Fprintf(&b, " [%s: translated %d, no-mapping %d, filtered %d, hairpin-dropped %d, expired %d, closed %d, flushed %d]",
			x.Name(), st.Translated, st.InboundNoMapping, st.InboundFiltered, st.HairpinDropped, st.MappingsExpired, st.MappingsClosed, st.MappingsFlushed)
	}
	return b.String()
}

// relayedCells are the cells whose first sessions both go through the
// relay: no public client, not on one LAN.
func relayedCells() []natCell {
	var out []natCell
	for _, cell := range natCells() {
		if cell.relayed {
			out = append(out, cell)
		}
	}
	return out
}

// Every pair of NAT kinds (public, full cone, cone, address-restricted,
// symmetric, a cone NAT behind a symmetric carrier NAT), and two clients
// behind one NAT or one carrier NAT, with and without hairpinning: the
// clients find each other through the server within registerHops, each
// listed at its NAT's public address and its listening port. alice sends
// to bob, then bob to alice, each Delivered and encrypted on the path
// theory allows (firstPath; for bob, also what alice's punch try opened:
// opensAfterPunch) within its bound: directly within directTrips, before
// the relay is tried; through the relay between RelayDelay and RelayDelay
// + relayTrips. A relayed session moves direct within punchTrips exactly
// when a punch can connect (punchable; netsim counts the simultaneous
// opens), else stays relayed. Later messages ride those paths; every
// message arrives exactly once, a direct one showing the sender's public
// address (its own on the same LAN). Every NAT translated; each failed
// first direct attempt at a NATted client's public address died at the
// NAT that owns it (no mapping, the filter of the mapping a punch try
// left, or no hairpinning from behind it); no datagram. A client behind a
// NAT that draws random ports (symmetric, CGNAT) learns so from the
// server's observed port and no try is made with it at all.
//
// Each direction punches its own connection: the answering side dials
// from a fresh port, so bob's punch does not need the address pair that
// alice's punched connection holds.
func TestNATMatrix(t *testing.T) {
	var mu sync.Mutex
	rows := map[string]string{}
	runNATCells(t, natCells(), nil, func(t *testing.T, s *natScenario) {
		s.discovered(t, registerHops*hop(wanLink))
		a, b := s.peers[0], s.peers[1]
		sa, sb := s.site[a], s.site[b]
		punchWait := punchTrips * hop(wanLink)

		ab := s.sendTimed(t, a, b, "hello bob", firstPath(sa, sb), 0)
		opens := s.c.nw.Stats().SimultaneousOpens
		s.c.nw.RunFor(punchWait)
		aTried := ab.err == nil && s.paths[ab] == chat.PathRelayed
		wantAB := s.paths[ab]
		if aTried && punchable(sa, sb) {
			wantAB = chat.PathDirect
			if s.c.nw.Stats().SimultaneousOpens == opens {
				t.Errorf("alice's session to bob was punched without a simultaneous open")
			}
		}
		if got := pathTo(a, b); got != wantAB {
			t.Errorf("%v after alice's punch: alice -> bob is %q, want %q", punchWait, got, wantAB)
		}

		wantBA := firstPath(sb, sa)
		if wantBA == chat.PathRelayed && aTried && opensAfterPunch(sa, sb) {
			wantBA = chat.PathDirect // through the mapping alice's punch try left
		}
		ba := s.sendTimed(t, b, a, "hello alice", wantBA, 0)
		s.c.nw.RunFor(punchWait)
		bTried := ba.err == nil && s.paths[ba] == chat.PathRelayed
		wantBA = s.paths[ba]
		if bTried && punchable(sb, sa) {
			wantBA = chat.PathDirect
		}
		if got := pathTo(b, a); got != wantBA {
			t.Errorf("%v after bob's punch: bob -> alice is %q, want %q", punchWait, got, wantBA)
		}

		msgs := []*message{ab, ba}
		for i := range 3 {
			msgs = append(msgs, s.send(t, a, b, fmt.Sprintf("more %d to bob", i)), s.send(t, b, a, fmt.Sprintf("more %d to alice", i)))
		}
		s.c.nw.Settle()
		s.checkMessages(t, msgs)
		for _, m := range msgs[2:] {
			want := wantAB
			if m.from == b {
				want = wantBA
			}
			if s.paths[m] != want {
				t.Errorf("%v went %q, want %q", m, s.paths[m], want)
			}
		}
		s.checkNATsActed(t, [2]*message{ab, ba})
		if d := s.c.nw.Stats().Datagrams; d != 0 {
			t.Errorf("%d datagrams sent, want none in internet mode", d)
		}
		row := fmt.Sprintf("a->b %s %v then %s, b->a %s %v then %s;%s", s.paths[ab], (ab.done - ab.at).Round(time.Millisecond), wantAB,
			s.paths[ba], (ba.done - ba.at).Round(time.Millisecond), wantBA, s.natSummary())
		mu.Lock()
		rows[t.Name()] = row
		mu.Unlock()
	})
	t.Cleanup(func() {
		names := make([]string, 0, len(rows))
		for n := range rows {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			t.Logf("%s: %s", n, rows[n])
		}
	})
}

// relayedStart has alice and bob, whose first sessions go through the
// relay, chat both ways and lets the hole punching run: alice's first
// message is relayed; bob's takes a path theory allows.
func (s *natScenario) relayedStart(t *testing.T) []*message {
	t.Helper()
	s.discovered(t, registerHops*hop(wanLink))
	a, b := s.peers[0], s.peers[1]
	ab := s.sendTimed(t, a, b, "before 1", chat.PathRelayed, 0)
	s.c.nw.RunFor(punchTrips * hop(wanLink))
	ba := s.sendTimed(t, b, a, "before 2", "", 0)
	s.c.nw.RunFor(punchTrips * hop(wanLink))
	return []*message{ab, ba}
}

// The server crashes mid-conversation between two clients whose first
// sessions went through its relay, and comes back 20 s later, empty:
// both register again within reconnectWithin (plus registerHops) of its
// return; then each sends again, Delivered once and encrypted on a path
// theory allows (relayed, or direct where a punch could connect or left a
// way open), within RelayDelay + relayTrips: the first within
// reconnectWithin + RelayDelay and a few trips of the server's return.
func TestNATServerRestart(t *testing.T) {
	runNATCells(t, relayedCells(), nil, func(t *testing.T, s *natScenario) {
		msgs := s.relayedStart(t)
		a, b := s.peers[0], s.peers[1]
		s.c.nw.RunFor(5 * time.Second)

		s.w.boot.Crash()
		s.c.nw.RunFor(20 * time.Second)
		s.w.boot.Restart()
		s.srv = startServer(t, s.c, s.w.boot)
		back := s.c.nw.Now()
		regBound := reconnectWithin + registerHops*hop(wanLink)
		if !s.c.nw.RunUntil(func() bool {
			_, ra := registeredAfter(a, back)
			_, rb := registeredAfter(b, back)
			return ra && rb
		}, regBound+quantum) {
			t.Fatalf("not both registered again within %v of the server's return", regBound)
		}
		// The later one's peer_joined reaches the other one hop later.
		s.c.nw.RunFor(hop(wanLink))
		ra, _ := registeredAfter(a, back)
		rb, _ := registeredAfter(b, back)
		ab := s.sendTimed(t, a, b, "after 1", "", 0)
		ba := s.sendTimed(t, b, a, "after 2", "", 0)
		msgs = append(msgs, ab, ba)
		s.c.nw.Settle()
		s.checkMessages(t, msgs)
		bound := reconnectWithin + chat.RelayDelay + (registerHops+1+relayTrips)*hop(wanLink)
		if d := ab.done - back; d > bound {
			t.Errorf("the first message after the restart was delivered %v after the server came back, want within %v", d, bound)
		}
		t.Logf("registered again %v and %v after the server came back; first delivery %v after it (bound %v, %s), the reply %v (%s);%s",
			ra-back, rb-back, ab.done-back, bound, s.paths[ab], ba.done-back, s.paths[ba], s.natSummary())
	})
}

// natIdle is the NATs' idle timeout in TestNATMappingTimeout: longer than
// the heartbeat that keeps the control connection alive, far shorter than
// a real TCP mapping's.
const natIdle = 2 * rendezvousHeartbeat

// punchesOver bounds how long the hole punching tries that follow a
// relayed session take: PunchAttempts tries of at most twice the ack
// timeout each (punchOnce's bound), a second (punchRetry) between them.
// Their coordination goes through the relayed session and refreshes its
// mappings.
const punchesOver = chat.PunchAttempts*2*chat.DefaultAckTimeout + (chat.PunchAttempts-1)*time.Second

// A conversation whose first sessions went through the relay survives the
// NATs' mapping timeout: once the punch tries are over (punchesOver),
// idle longer than the timeout (the nodes' IdleTimeout is raised to the
// receive side's 2 minutes, under which the server's relayed stream
// lives too, so that only the NATs end anything), the sessions' mappings
// expire (the control connection's stay,
// refreshed by heartbeats: no new registration); the next message each
// way is Delivered exactly once, encrypted, within a reset's trips +
// RelayDelay + relayTrips, on a path theory allows; one that goes
// through the relay does so on a new relayed stream (a new connection to
// the server), and between clients that no direct path can ever join
// (a random-port NAT on the way, no punch leftovers) both do.
func TestNATMappingTimeout(t *testing.T) {
	idle := natIdle + 5*time.Second
	nodeIdle := chat.DefaultReceiveIdleTimeout
	if punchesOver+idle >= nodeIdle {
		t.Fatalf("punches (%v) and idle (%v) must stay under the nodes' idle timeouts %v, or a node closes the session first and the NAT timeout is not what is tested", punchesOver, idle, nodeIdle)
	}
	short := func(cfg *netsim.NATConfig) { cfg.TCPTimeout, cfg.UDPTimeout = natIdle, natIdle }
	keep := func(cfg *chat.Config) { cfg.IdleTimeout = nodeIdle }
	runNATCellsWith(t, relayedCells(), short, keep, func(t *testing.T, s *natScenario) {
		var mu sync.Mutex
		dials := map[*netsim.Host]int{} // connections opened to the server
		s.c.nw.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Proto == "tcp" && p.Kind == "syn" && p.Dst.Port() == serverPort {
				mu.Lock()
				dials[p.From]++
				mu.Unlock()
			}
			return netsim.Verdict{}
		})
		dialsOf := func(p *peer) int {
			mu.Lock()
			defer mu.Unlock()
			return dials[p.Host()]
		}
		msgs := s.relayedStart(t)
		a, b := s.peers[0], s.peers[1]
		s.c.nw.RunFor(punchesOver)
		idleFrom := s.c.nw.Now()
		s.c.nw.RunFor(idle)
		for _, p := range s.peers {
			if at, ok := registeredAfter(p, idleFrom); ok {
				t.Errorf("%v registered again %v into the idle: its control connection's mappings should live on its heartbeats", p, at-idleFrom)
			}
		}
		var expired int64
		for _, x := range s.w.nats {
			expired += x.Stats().MappingsExpired
		}
		if expired == 0 {
			t.Errorf("no NAT mapping expired (NAT timeout %v):%s", natIdle, s.natSummary())
		}
		// One trip out, one to the other side where the segment dies,
		// the server's close of the first leg back: then a new session.
		extra := 3 * hop(wanLink)
		var after []string
		for _, d := range [][2]*peer{{a, b}, {b, a}} {
			from, to := d[0], d[1]
			want := ""
			if !mayGoDirect(s.site[from], s.site[to]) {
				want = chat.PathRelayed
			}
			before := dialsOf(from)
			m := s.sendTimed(t, from, to, "after to "+to.Nick(), want, extra)
			msgs = append(msgs, m)
			if s.paths[m] == chat.PathRelayed && dialsOf(from) == before {
				t.Errorf("%v went through the relay after the idle on no new relayed stream", m)
			}
			after = append(after, fmt.Sprintf("%v->%v %s in %v", from.Nick(), to.Nick(), s.paths[m], m.done-m.at))
		}
		s.c.nw.Settle()
		s.checkMessages(t, msgs)
		for i, p := range s.peers {
			if got, want := p.View(), []entry{s.listing(s.peers[1-i])}; !slices.Equal(got, want) {
				t.Errorf("%v lists %v after the idle, want %v", p, got, want)
			}
		}
		t.Logf("after %v idle: %d mappings expired; %s;%s", idle, expired, strings.Join(after, ", "), s.natSummary())
	})
}

// The same seed gives the same run across NATs: a cone client and one
// behind a carrier-grade NAT chat through the relay, idle past the NATs'
// timeout, chat again, and the server restarts (payload checksums left
// out, as in TestInternetDeterminism).
func TestNATDeterminism(t *testing.T) {
	short := func(cfg *netsim.NATConfig) { cfg.TCPTimeout, cfg.UDPTimeout = natIdle, natIdle }
	checkDeterminismSansPayload(t, netsim.SeedFromEnv(t), clusterBody(natBody(pairCell(natCone, natCGNAT), short, nil, func(t *testing.T, s *natScenario) {
		s.c.nw.RunFor(time.Second)
		a, b := s.peers[0], s.peers[1]
		send(t.Context(), a, b, b.Nick(), "one")
		send(t.Context(), b, a, a.Nick(), "two")
		s.c.nw.RunFor(natIdle + 5*time.Second)
		send(t.Context(), a, b, b.Nick(), "three")
		s.w.boot.Crash()
		s.c.nw.RunFor(10 * time.Second)
		s.w.boot.Restart()
		startServer(t, s.c, s.w.boot)
		s.c.nw.RunFor(reconnectWithin)
		send(t.Context(), b, a, a.Nick(), "four")
	})))
}

package chat_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// In internet mode, nodes learn of each other through the bootstrap
// server, open no multicast socket, message each other directly, and a
// node that closes leaves the other's list.
func TestInternetMode(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		srv, err := rendezvous.NewServer(rendezvous.Config{Rand: rand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := sh.Listen(sh.Context(), "tcp", ":8080")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(context.Background(), ln)
		}()
		defer func() {
			srv.Close()
			<-served
		}()
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServers = []string{url} }
		alice := start(t, nw.AddHost("a", wan), "alice", 1, internet)
		bob := start(t, nw.AddHost("b", wan), "bob", 2, internet)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, 10*time.Second) {
			t.Fatalf("no mutual discovery through the server: alice %v, bob %v", alice.Peers(), bob.Peers())
		}
		if p := alice.Peers()[0]; p.Source.String() != "bootstrap" {
			t.Errorf("bob found via %v, want bootstrap", p.Source)
		}
		res, err := alice.Send(t.Context(), "bob", "over the internet")
		if err != nil || res.Status != chat.Delivered {
			t.Fatalf("send: %v %v", res, err)
		}
		nw.Settle()
		if ev, ok := first(bob.rec, chat.EventMessage, "alice"); !ok || ev.Message.Text != "over the internet" {
			t.Errorf("bob got %+v", ev)
		}
		bob.close()
		if !nw.RunUntil(func() bool { return !hasPeer(alice, "bob") }, 5*time.Second) {
			t.Error("bob still listed after closing")
		}
	})
}

// serveRendezvous runs a fresh bootstrap server on h:8080 until h crashes.
func serveRendezvous(t *testing.T, h *netsim.Host, seed byte) {
	t.Helper()
	srv, err := rendezvous.NewServer(rendezvous.Config{Rand: rand.NewChaCha8([32]byte{seed})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := h.Listen(h.Context(), "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	h.Go(func(ctx context.Context) {
		srv.Serve(ctx, ln)
		srv.Close()
	})
}

// registrations returns when tn reported being registered, in order.
func registrations(tn *testNode) []time.Time {
	var at []time.Time
	for _, ev := range tn.rec.All() {
		if ev.Kind == chat.EventStatus && ev.Err == nil && strings.HasPrefix(ev.Text, "registered with") {
			at = append(at, ev.Time)
		}
	}
	return at
}

// The bootstrap server crashes and comes back empty, handing out new
// peer_ids: the clients that stay see no left or joined for each other
// (they are keyed by instance, and missing from the first list after
// registering again only for BootstrapGrace), can message each other as
// soon as they are registered again, and a client that quit while the
// server was away is dropped one BootstrapGrace after the first list.
func TestInternetServerRestartNoChurn(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		serveRendezvous(t, sh, 1)
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServers = []string{url} }
		alice := start(t, nw.AddHost("a", wan), "alice", 1, internet)
		bob := start(t, nw.AddHost("b", wan), "bob", 2, internet)
		carol := start(t, nw.AddHost("c", wan), "carol", 3, internet)
		stay := []*testNode{alice, bob}
		if !nw.RunUntil(func() bool {
			return hasPeer(alice, "bob") && hasPeer(bob, "alice") && hasPeer(alice, "carol") && hasPeer(bob, "carol")
		}, 10*time.Second) {
			t.Fatalf("no mutual discovery: alice %v, bob %v", alice.Peers(), bob.Peers())
		}
		idBefore := alice.Peers()[0].ID

		sh.Crash()
		nw.RunFor(10 * time.Second)
		carol.close() // its unregister cannot reach the server
		nw.RunFor(50 * time.Second)
		for _, tn := range stay {
			if !hasPeer(tn, "carol") {
				t.Errorf("%s dropped carol while the server was away", tn.Nickname())
			}
		}
		sh.Restart()
		serveRendezvous(t, sh, 2)
		if !nw.RunUntil(func() bool { return len(registrations(alice)) >= 2 && len(registrations(bob)) >= 2 }, time.Minute) {
			t.Fatalf("not registered again: alice %v, bob %v", registrations(alice), registrations(bob))
		}
		for _, pair := range [][2]*testNode{{alice, bob}, {bob, alice}} {
			res, err := pair[0].Send(t.Context(), pair[1].Nickname(), "still here")
			if err != nil || res.Status != chat.Delivered {
				t.Errorf("%s to %s right after registering again: %v %v", pair[0].Nickname(), pair[1].Nickname(), res, err)
			}
		}
		if p := alice.Peers()[0]; p.Nickname != "bob" || p.ID == idBefore {
			t.Errorf("alice lists %+v, want bob under the new server's peer_id (old %s)", p, idBefore)
		}

		// carol goes BootstrapGrace after the first list, not before.
		regs := map[*testNode]time.Time{}
		for _, tn := range stay {
			regs[tn] = registrations(tn)[1]
		}
		early := regs[alice]
		if regs[bob].Before(early) {
			early = regs[bob]
		}
		nw.RunFor(time.Until(early.Add(chat.BootstrapGrace - 100*time.Millisecond)))
		for _, tn := range stay {
			if !hasPeer(tn, "carol") {
				t.Errorf("%s dropped carol before the grace period was over", tn.Nickname())
			}
		}
		nw.RunFor(time.Second + regs[bob].Sub(regs[alice]).Abs())
		for _, tn := range stay {
			if hasPeer(tn, "carol") {
				t.Errorf("%s still lists carol %v after registering again", tn.Nickname(), chat.BootstrapGrace+time.Second)
				continue
			}
			ev, _ := first(tn.rec, chat.EventPeerLeft, "carol")
			if d := ev.Time.Sub(regs[tn]); d < chat.BootstrapGrace || d > chat.BootstrapGrace+100*time.Millisecond {
				t.Errorf("%s dropped carol %v after registering again, want %v", tn.Nickname(), d, chat.BootstrapGrace)
			}
		}
		for _, pair := range [][2]*testNode{{alice, bob}, {bob, alice}} {
			rec, other := pair[0].rec, pair[1].Nickname()
			for _, kind := range []chat.EventKind{chat.EventPeerJoined, chat.EventPeerLeft, chat.EventPeerRestarted} {
				n := 0
				for _, ev := range rec.All() {
					if ev.Kind == kind && ev.Peer.Nickname == other {
						n++
					}
				}
				if want := map[chat.EventKind]int{chat.EventPeerJoined: 1}[kind]; n != want {
					t.Errorf("%s saw %d %v events about %s, want %d", pair[0].Nickname(), n, kind, other, want)
				}
			}
		}
	})
}

// Two peers that cannot reach each other directly (a partition between
// them; both reach the server) chat through the server's relay: the
// direct attempt gets RelayDelay, then the relay carries the session, and
// the server forwards ciphertext only. Peers that can reach each other
// stay direct.
func TestInternetRelayWhenNoDirectPath(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		serveRendezvous(t, sh, 3)
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServers = []string{url} }
		ah, bh, ch := nw.AddHost("a", wan), nw.AddHost("b", wan), nw.AddHost("c", wan)
		alice := start(t, ah, "alice", 1, internet)
		bob := start(t, bh, "bob", 2, internet)
		carol := start(t, ch, "carol", 3, internet)
		if !nw.RunUntil(func() bool { return len(alice.Peers()) == 2 && len(bob.Peers()) == 2 }, 10*time.Second) {
			t.Fatalf("no discovery through the server: alice %v, bob %v", alice.Peers(), bob.Peers())
		}
		cut := nw.Partition([]*netsim.Host{ah}, []*netsim.Host{bh})
		defer cut.Heal()
		var seen [][]byte
		nw.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Kind == "data" && (p.From == sh || p.To == sh) {
				seen = append(seen, bytes.Clone(p.Payload))
			}
			return netsim.Verdict{}
		})
		for _, tc := range []struct {
			from, to *testNode
			name     string
		}{{alice, bob, "bob"}, {bob, alice, "alice"}} {
			sent := time.Now()
			text := "relayed secret to " + tc.name
			res, err := tc.from.Send(t.Context(), tc.name, text)
			if err != nil || res.Status != chat.Delivered || !res.Encrypted {
				t.Fatalf("send to %s through the relay: %+v, %v", tc.name, res, err)
			}
			if took := time.Since(sent); took < chat.RelayDelay || took > chat.RelayDelay+time.Second {
				t.Errorf("send to %s took %v, want the relay delay %v plus a few round trips", tc.name, took, chat.RelayDelay)
			}
			nw.Settle()
			if ev, ok := first(tc.to.rec, chat.EventMessage, tc.from.Nickname()); !ok || ev.Message.Text != text || !ev.Message.Encrypted {
				t.Errorf("%s got %+v", tc.name, ev.Message)
			}
			if st := status(tc.from, tc.name); st.Path != chat.PathRelayed {
				t.Errorf("path to %s is %q, want %q", tc.name, st.Path, chat.PathRelayed)
			}
		}
		for _, b := range seen {
			if bytes.Contains(b, []byte("relayed secret")) {
				t.Fatalf("the server saw message text: %q", b)
			}
		}
		if len(seen) == 0 {
			t.Fatal("the capture saw no traffic to or from the server")
		}
		// carol reaches alice directly.
		if res, err := carol.Send(t.Context(), "alice", "direct"); err != nil || res.Status != chat.Delivered {
			t.Fatalf("carol to alice: %+v, %v", res, err)
		}
		if st := status(carol, "alice"); st.Path != chat.PathDirect {
			t.Errorf("path from carol to alice is %q, want %q", st.Path, chat.PathDirect)
		}
		nw.OnPacket(nil)
	})
}

func status(tn *testNode, nick string) chat.PeerStatus {
	for _, st := range tn.PeerStatuses() {
		if st.Nickname == nick {
			return st
		}
	}
	return chat.PeerStatus{}
}

// Two peers behind one NAT (no hairpinning: their public addresses lead
// nowhere) find each other through a server outside and connect directly
// on the addresses they registered as their own; a third peer behind
// another NAT gets through the relay. A private address that leads to
// another host of the same name (here: none) would fail the handshake
// quietly.
func TestInternetSameNATDirectOnOwnAddrs(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		serveRendezvous(t, sh, 4)
		home := nw.AddSegmentPrefix("home", netip.MustParsePrefix("192.168.1.0/24"))
		other := nw.AddSegmentPrefix("other", netip.MustParsePrefix("192.168.2.0/24"))
		nat := nw.AddNAT("router", home, wan, netsim.NATCone())
		nw.AddNAT("router2", other, wan, netsim.NATCone())
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServers = []string{url} }
		alice := start(t, nw.AddHost("a", home), "alice", 1, internet)
		bob := start(t, nw.AddHost("b", home), "bob", 2, internet)
		carol := start(t, nw.AddHost("c", other), "carol", 3, internet)
		if !nw.RunUntil(func() bool { return len(alice.Peers()) == 2 && len(carol.Peers()) == 2 }, 10*time.Second) {
			t.Fatalf("no discovery through the server: alice %v, carol %v", alice.Peers(), carol.Peers())
		}
		if p := status(alice, "bob"); p.Addr.Addr() != nat.PublicIP() || len(p.Addrs) != 1 {
			t.Fatalf("alice lists bob as %+v, want the NAT's address and bob's own", p.Peer)
		}
		res, err := alice.Send(t.Context(), "bob", "next door")
		if err != nil || res.Status != chat.Delivered {
			t.Fatalf("alice to bob: %+v, %v", res, err)
		}
		if st := status(alice, "bob"); st.Path != chat.PathDirect {
			t.Errorf("path from alice to bob is %q, want %q", st.Path, chat.PathDirect)
		}
		res, err = alice.Send(t.Context(), "carol", "far away")
		if err != nil || res.Status != chat.Delivered {
			t.Fatalf("alice to carol: %+v, %v", res, err)
		}
		if st := status(alice, "carol"); st.Path != chat.PathRelayed {
			t.Errorf("path from alice to carol is %q, want %q", st.Path, chat.PathRelayed)
		}
		nw.Settle()
		for _, n := range []*testNode{bob, carol} {
			if n.rec.Count(chat.EventMessage) != 1 {
				t.Errorf("%s got %d messages, want 1", n.Nickname(), n.rec.Count(chat.EventMessage))
			}
		}
		if n := alice.rec.Count(chat.EventSecurity); n != 0 {
			t.Errorf("alice was told of %d security events; trying private addresses must be quiet", n)
		}
	})
}

// Behind two cone NATs, a conversation starts on the relay and moves to a
// direct connection by hole punching, with no message lost or shown
// twice; behind two symmetric NATs it stays relayed after PunchAttempts
// tries.
func TestInternetHolePunching(t *testing.T) {
	for _, tc := range []struct {
		name string
		nat  netsim.NATConfig
		want string
	}{
		{"cone to cone", netsim.NATCone(), chat.PathDirect},
		{"symmetric to symmetric", netsim.NATSymmetric(), chat.PathRelayed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
				alice, bob, natA, natB := behindNATs(t, nw, 5, tc.nat)
				// Both ways: each direction punches its own connection.
				const n = 6
				for i := range n {
					for _, d := range []struct {
						from *testNode
						to   string
					}{{alice, "bob"}, {bob, "alice"}} {
						res, err := d.from.Send(t.Context(), d.to, fmt.Sprintf("message %d to %s", i, d.to))
						if err != nil || res.Status != chat.Delivered {
							t.Fatalf("message %d to %s: %+v, %v", i, d.to, res, err)
						}
						if i == 0 {
							if st := status(d.from, d.to); st.Path != chat.PathRelayed {
								t.Fatalf("first message to %s went %q, want relayed", d.to, st.Path)
							}
						}
					}
					nw.RunFor(4 * time.Second) // time for a try and its retries
				}
				for _, d := range []struct {
					from *testNode
					to   string
				}{{alice, "bob"}, {bob, "alice"}} {
					if st := status(d.from, d.to); st.Path != tc.want {
						t.Errorf("path to %s after the punch tries: %q, want %q (NAT a %+v, b %+v)", d.to, st.Path, tc.want, natA.Stats(), natB.Stats())
					}
				}
				nw.Settle()
				for _, r := range []*testNode{alice, bob} {
					got := map[string]int{}
					for _, m := range r.rec.Messages() {
						got[m.Text]++
					}
					for i := range n {
						if k := got[fmt.Sprintf("message %d to %s", i, r.Nickname())]; k != 1 {
							t.Errorf("%s shows message %d %d times, want once", r.Nickname(), i, k)
						}
					}
				}
				if tc.want == chat.PathDirect && nw.Stats().SimultaneousOpens == 0 && natB.Stats().Translated == 0 {
					t.Error("direct without a simultaneous open or a translated packet: the NATs did not act")
				}
				// Behind NATs that change ports no try is made at all:
				// no punch SYN ever reaches a NAT, so each NAT turned
				// away only the first direct attempt at its public
				// address.
				if tc.want == chat.PathRelayed {
					for _, x := range []*netsim.NAT{natA, natB} {
						if st := x.Stats(); st.InboundNoMapping+st.InboundFiltered > 1 {
							t.Errorf("%s turned away %d inbound connections, want only the first direct attempt: hole punching was tried", x.Name(), st.InboundNoMapping+st.InboundFiltered)
						}
					}
				}
			})
		})
	}
}

// A punched connection outlives the NATs' mapping timeout: keepalives
// hold the mappings while the conversation is idle, so the next message
// goes direct on the same connection; past PunchedIdleTimeout it is
// closed like any idle connection.
func TestInternetPunchedKeepalive(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nat := netsim.NATCone()
		nat.TCPTimeout = time.Minute // a short-lived consumer router
		alice, bob, natA, _ := behindNATs(t, nw, 6, nat)
		send := func(text string) {
			t.Helper()
			if res, err := alice.Send(t.Context(), "bob", text); err != nil || res.Status != chat.Delivered {
				t.Fatalf("%s: %+v, %v", text, res, err)
			}
		}
		send("first")
		if !nw.RunUntil(func() bool { return status(alice, "bob").Path == chat.PathDirect }, 10*time.Second) {
			t.Fatalf("not punched: path %q", status(alice, "bob").Path)
		}
		expired := natA.Stats().MappingsExpired
		nw.RunFor(3 * time.Minute) // three mapping timeouts, idle
		send("after an idle spell")
		if st := status(alice, "bob"); st.Path != chat.PathDirect {
			t.Errorf("after 3 idle minutes the path is %q, want direct on the kept-alive connection", st.Path)
		}
		nw.Settle()
		if n := bob.rec.Count(chat.EventMessage); n != 2 {
			t.Errorf("bob shows %d messages, want 2", n)
		}
		t.Logf("mappings expired during the idle spell: %d (the server's control connection is kept by heartbeats)", natA.Stats().MappingsExpired-expired)
	})
}

// A punched path that dies (here the NATs forget the mapping faster than
// keepalives come) falls back to the relay for the next message, which is
// delivered once, and the conversation punches its way direct again.
func TestInternetPunchedPathDiesAndRepunches(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nat := netsim.NATCone()
		nat.TCPTimeout = chat.KeepaliveInterval / 2
		alice, bob, natA, _ := behindNATs(t, nw, 7, nat, func(c *chat.Config) {
			c.HeartbeatInterval = nat.TCPTimeout / 2 // the control connection's mapping lives
		})
		send := func(text string) {
			t.Helper()
			if res, err := alice.Send(t.Context(), "bob", text); err != nil || res.Status != chat.Delivered {
				t.Fatalf("%s: %+v, %v", text, res, err)
			}
		}
		direct := func() bool { return status(alice, "bob").Path == chat.PathDirect }
		send("first")
		if !nw.RunUntil(direct, 10*time.Second) {
			t.Fatalf("not punched: path %q", status(alice, "bob").Path)
		}
		expired := natA.Stats().MappingsExpired
		nw.RunFor(chat.KeepaliveInterval + time.Second) // the mapping expires before the keepalive
		if natA.Stats().MappingsExpired == expired {
			t.Fatal("the NAT forgot no mapping: the test does not test a dead path")
		}
		send("after the path died")
		if st := status(alice, "bob"); st.Path != chat.PathRelayed {
			t.Errorf("the message after the path died went %q, want relayed", st.Path)
		}
		if !nw.RunUntil(direct, 10*time.Second) {
			t.Errorf("not punched again: path %q", status(alice, "bob").Path)
		}
		send("direct again")
		nw.Settle()
		got := map[string]int{}
		for _, m := range bob.rec.Messages() {
			got[m.Text]++
		}
		for _, text := range []string{"first", "after the path died", "direct again"} {
			if got[text] != 1 {
				t.Errorf("bob shows %q %d times, want once", text, got[text])
			}
		}
	})
}

// behindNATs starts a bootstrap server on a WAN segment and alice and bob
// in internet mode, each on a home segment behind its own NAT with cfg,
// and waits until they list each other. tweak adjusts both nodes.
func behindNATs(t *testing.T, nw *netsim.Network, seed byte, cfg netsim.NATConfig, tweak ...func(*chat.Config)) (alice, bob *testNode, natA, natB *netsim.NAT) {
	t.Helper()
	wan := nw.AddSegment("wan")
	sh := nw.AddHost("server", wan)
	serveRendezvous(t, sh, seed)
	homeA := nw.AddSegmentPrefix("home-a", netip.MustParsePrefix("192.168.1.0/24"))
	homeB := nw.AddSegmentPrefix("home-b", netip.MustParsePrefix("192.168.2.0/24"))
	natA = nw.AddNAT("router-a", homeA, wan, cfg)
	natB = nw.AddNAT("router-b", homeB, wan, cfg)
	url := fmt.Sprintf("ws://%s:8080/", sh.IP())
	tweaks := append([]func(*chat.Config){func(c *chat.Config) { c.Mode, c.BootstrapServers = chat.ModeInternet, []string{url} }}, tweak...)
	alice = start(t, nw.AddHost("a", homeA), "alice", 1, tweaks...)
	bob = start(t, nw.AddHost("b", homeB), "bob", 2, tweaks...)
	if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, 10*time.Second) {
		t.Fatalf("no discovery through the server")
	}
	return alice, bob, natA, natB
}

// With several bootstrap servers the status lines name the server
// actually used: registered with the first, lost it with the next one
// named, registered with that one. A list with a bad URL is refused at
// Start.
func TestInternetFailoverStatus(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		ha, hb := nw.AddHost("server-a", wan), nw.AddHost("server-b", wan)
		serveRendezvous(t, ha, 1)
		serveRendezvous(t, hb, 2)
		urlA, urlB := fmt.Sprintf("ws://%s:8080/", ha.IP()), fmt.Sprintf("ws://%s:8080/", hb.IP())
		servers := func(c *chat.Config) { c.Mode, c.BootstrapServers = chat.ModeInternet, []string{urlA, urlB} }
		alice := start(t, nw.AddHost("a", wan), "alice", 1, servers)
		statuses := func() []string {
			var s []string
			for _, ev := range alice.rec.All() {
				if ev.Kind == chat.EventStatus {
					s = append(s, ev.Text)
				}
			}
			return s
		}
		if !nw.RunUntil(func() bool { return len(registrations(alice)) == 1 }, 5*time.Second) {
			t.Fatalf("not registered: %q", statuses())
		}
		ha.Crash()
		if !nw.RunUntil(func() bool { return len(registrations(alice)) == 2 }, 5*time.Second) {
			t.Fatalf("not registered again: %q", statuses())
		}
		got := statuses()
		want := []string{
			`^registered with ` + regexp.QuoteMeta(urlA) + ` as `,
			`^lost the bootstrap server ` + regexp.QuoteMeta(urlA) + `; trying ` + regexp.QuoteMeta(urlB) + ` in [0-9.]+m?s \(`,
			`^registered with ` + regexp.QuoteMeta(urlB) + ` as `,
		}
		if len(got) != len(want) {
			t.Fatalf("status lines %q, want %d", got, len(want))
		}
		for i, w := range want {
			if !regexp.MustCompile(w).MatchString(got[i]) {
				t.Errorf("status line %d: %q, want it to match %s", i, got[i], w)
			}
		}

		_, err := chat.Start(t.Context(), chat.Config{Network: nw.AddHost("c", wan), Nickname: "carol", Mode: chat.ModeInternet,
			BootstrapServers: []string{urlA, "http://" + hb.IP().String() + ":8080/"}})
		if err == nil || !strings.Contains(err.Error(), `bootstrap server "http://`) {
			t.Errorf("Start with an http:// server in the list: %v, want an error naming it", err)
		}
	})
}

// A change of room tags reaches the other peers through the bootstrap
// server at once: the node registers again on its connection, the server
// updates its entry in place, and the others list its tags under the
// same peer_id, with no left or joined and no new registration reported.
func TestInternetRoomTagsReregister(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		serveRendezvous(t, sh, 4)
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServers = []string{url} }
		alice := start(t, nw.AddHost("a", wan), "alice", 1, internet)
		bob := start(t, nw.AddHost("b", wan), "bob", 2, internet)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, 10*time.Second) {
			t.Fatalf("no mutual discovery through the server: alice %v, bob %v", alice.Peers(), bob.Peers())
		}
		before, _ := peerNamed(bob, "alice")
		alice.SetRoomTagsForTest([]string{tagB, tagA})
		roomsOf := func() []string { p, _ := peerNamed(bob, "alice"); return p.Rooms }
		if !nw.RunUntil(func() bool { return slices.Equal(roomsOf(), []string{tagA, tagB}) }, time.Second) {
			t.Fatalf("bob lists alice with rooms %q a second after she joined, want %q", roomsOf(), []string{tagA, tagB})
		}
		after, _ := peerNamed(bob, "alice")
		if after.ID != before.ID || after.Key != before.Key {
			t.Errorf("alice is now %+v at bob, was %+v: want the same entry and peer_id", after, before)
		}
		alice.SetRoomTagsForTest(nil)
		if !nw.RunUntil(func() bool { return roomsOf() == nil }, time.Second) {
			t.Fatalf("bob lists alice with rooms %q after she left them all", roomsOf())
		}
		nw.RunFor(time.Minute) // heartbeats go on as before
		if p, _ := peerNamed(bob, "alice"); p.ID != before.ID {
			t.Errorf("alice's peer_id at bob is %s, was %s", p.ID, before.ID)
		}
		if regs := registrations(alice); len(regs) != 1 {
			t.Errorf("alice reported %d registrations, want 1", len(regs))
		}
		if !hasPeer(alice, "bob") {
			t.Error("alice lost bob")
		}
		for _, c := range []struct {
			tn   *testNode
			kind chat.EventKind
			peer string
			want int
		}{
			{bob, chat.EventPeerJoined, "alice", 1},
			{bob, chat.EventPeerLeft, "alice", 0},
			{bob, chat.EventPeerRestarted, "alice", 0},
			{alice, chat.EventPeerLeft, "bob", 0},
		} {
			n := 0
			for _, ev := range c.tn.rec.All() {
				if ev.Kind == c.kind && ev.Peer.Nickname == c.peer {
					n++
				}
			}
			if n != c.want {
				t.Errorf("%s saw %d %v events about %s, want %d", c.tn.Nickname(), n, c.kind, c.peer, c.want)
			}
		}
	})
}

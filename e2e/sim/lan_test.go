package sim

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// discoveryBound is how long after the last of them starts a healthy LAN
// of our nodes must take to find each other: the newcomer's start-up
// announce reaches everyone in one hop; its query reaches everyone in one
// hop, each answers within QueryAnswerMax, and the answer takes one more
// hop. The rest of the start-up burst only matters when packets are lost.
func discoveryBound(l netsim.Link) time.Duration {
	return hop(l) + chat.QueryAnswerMax + hop(l)
}

// startLAN starts n of our nodes on one segment, each at a random offset
// within spread (drawn from the network's seed), and returns them with the
// time the last one started.
func startLAN(c *cluster, n int, spread time.Duration, tweak ...func(*chat.Config)) ([]*peer, time.Duration) {
	lan := c.nw.AddSegment("lan")
	hosts := addHosts(c.nw, lan, "h", n)
	offsets := make([]time.Duration, n)
	for i := range offsets {
		if spread > 0 {
			offsets[i] = time.Duration(c.seeds.Int64N(int64(spread)))
		}
	}
	// Start in time order; hosts keep their index order among equals.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sortStable(order, func(a, b int) bool { return offsets[a] < offsets[b] })
	peers := make([]*peer, n)
	begin := c.nw.Now()
	for _, i := range order {
		if d := begin + offsets[i] - c.nw.Now(); d > 0 {
			time.Sleep(d)
		}
		peers[i] = c.start(hosts[i], fmt.Sprintf("p%d", i+1), tweak...)
	}
	return peers, c.nw.Now()
}

func sortStable(xs []int, less func(a, b int) bool) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && less(xs[j], xs[j-1]); j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}

// LAN discovery: 2, 10 and 200 peers on one segment, started at random
// moments within a second, all find each other within discoveryBound of
// the last start, and each /peers view is exactly the live set.
func TestLANDiscovery(t *testing.T) {
	for _, n := range []int{2, 10, 200} {
		t.Run(fmt.Sprintf("%d peers", n), func(t *testing.T) {
			if n > 10 && testing.Short() {
				t.Skip("-short")
			}
			simTest(t, func(t *testing.T, c *cluster) {
				c.nw.SetDefaultLink(lanLink)
				peers, last := startLAN(c, n, time.Second)
				bound := discoveryBound(lanLink)
				// No polling while 200 nodes discover: run to the bound.
				c.nw.RunFor(bound + quantum)
				if err := viewsErr(peers); err != nil {
					t.Errorf("discovery incomplete %v after the last start:\n%v", bound, err)
					if !c.nw.RunUntil(func() bool { return viewsMatch(peers) }, 2*chat.DefaultAnnounceInterval) {
						t.Fatalf("discovery still incomplete %v later:\n%v", 2*chat.DefaultAnnounceInterval, viewsErr(peers))
					}
				}
				full := fullDiscovery(t, peers)
				t.Logf("%d peers: last start %v, full discovery %v after it (bound %v); %d datagram deliveries",
					n, last, full-last, bound, c.nw.Stats().Deliveries)
				if full-last > bound {
					t.Errorf("full discovery %v after the last start, want within %v", full-last, bound)
				}
				// The views stay right through the steady state, longer than
				// a timeout (the registries' expiry is linear in the peers, so
				// the big LAN gets just over one).
				steady := 2 * chat.DefaultTimeout
				if n > 10 {
					steady = chat.DefaultTimeout + time.Second
				}
				c.nw.RunFor(steady)
				if err := viewsErr(peers); err != nil {
					t.Errorf("after %v of steady state: %v", steady, err)
				}
				for _, p := range peers {
					if k := p.Rec().Count(chat.EventPeerExpired) + p.Rec().Count(chat.EventPeerLeft); k != 0 {
						t.Errorf("%v saw %d departures on a healthy LAN", p, k)
					}
				}
			})
		})
	}
}

// Messaging: every peer sends to every other; each message arrives exactly
// once, at the right peer, with the right sender and text, and is
// acknowledged (Delivered).
func TestLANMessaging(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 10, time.Second)
		if !c.nw.RunUntil(func() bool { return viewsMatch(peers) }, 2*time.Second) {
			t.Fatalf("no discovery: %v", viewsErr(peers))
		}
		// Twice: the second round reuses the kept-open connections.
		var all []*message
		for round := range 2 {
			msgs := sendAllPairs(t.Context(), peers, fmt.Sprintf("round %d", round))
			all = append(all, msgs...)
			c.nw.Settle()
			if notDone := checkExactlyOnce(t, peers, all); notDone > 0 {
				t.Errorf("round %d: %d of %d sends failed or were queued on a healthy LAN", round, notDone, len(msgs))
			}
			for _, m := range msgs {
				if m.err == nil && m.res.Status != chat.Delivered {
					t.Errorf("%v: status %v, want delivered (the peer acks)", m, m.res.Status)
				}
			}
			c.nw.RunFor(time.Second)
		}
	})
}

// Departure: a peer that quits is dropped by everyone at once (its goodbye
// takes one hop); a peer that crashes is dropped exactly Timeout after the
// last announce each peer heard, not a quantum before; a crashed peer that
// restarts with the same nickname (and so the same address) is seen as a
// new instance, its old entry gone.
func TestLANDeparture(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 5, time.Second)
		if !c.nw.RunUntil(func() bool { return viewsMatch(peers) }, 2*time.Second) {
			t.Fatalf("no discovery: %v", viewsErr(peers))
		}
		c.nw.RunFor(7 * time.Second)
		quitter, crasher, others := peers[0], peers[1], peers[2:]

		{ // quit
			old := quitter.Instance()
			quitAt := c.nw.Now()
			quitter.Quit()
			c.nw.RunFor(hop(lanLink))
			for _, o := range append([]*peer{crasher}, others...) {
				ev, ok := o.Rec().FirstAbout(old, chat.EventPeerLeft)
				if !ok || listsNick(o, quitter.Nick()) {
					t.Errorf("%v still lists %s %v after its goodbye", o, quitter.Nick(), c.nw.Now()-quitAt)
					continue
				}
				if d := c.at(ev.Time) - quitAt; d > hop(lanLink) {
					t.Errorf("%v dropped %s %v after it quit, want within one hop (%v)", o, quitter.Nick(), d, hop(lanLink))
				}
			}
		}

		{ // crash
			old := crasher.Instance()
			crasher.Crash()
			c.nw.RunFor(hop(lanLink)) // announces already in flight land
			// When each survivor last heard the crashed peer.
			deadline := map[*peer]time.Duration{}
			first, last := time.Duration(1<<63-1), time.Duration(0)
			for _, o := range others {
				for _, rp := range o.Chat().Peers() {
					if rp.Instance == old {
						deadline[o] = c.at(rp.LastSeen) + chat.DefaultTimeout
						first, last = min(first, deadline[o]), max(last, deadline[o])
					}
				}
				if _, ok := deadline[o]; !ok {
					t.Fatalf("%v dropped %s before its timeout", o, crasher.Nick())
				}
			}
			c.nw.RunFor(first - quantum - c.nw.Now())
			for _, o := range others {
				if !listsNick(o, crasher.Nick()) {
					t.Errorf("%v dropped %s a quantum before the timeout", o, crasher.Nick())
				}
			}
			c.nw.RunFor(last + quantum - c.nw.Now())
			for _, o := range others {
				ev, ok := o.Rec().FirstAbout(old, chat.EventPeerExpired)
				if !ok {
					t.Errorf("%v never expired %s", o, crasher.Nick())
					continue
				}
				if got := c.at(ev.Time); got < deadline[o] || got > deadline[o]+quantum {
					t.Errorf("%v expired %s at %v, want at its timeout %v", o, crasher.Nick(), got, deadline[o])
				}
			}
			if err := viewsErr(others); err != nil {
				t.Error(err)
			}
		}

		{ // restart with the same nickname
			// The others have expired the crashed peer: it comes back as
			// a newcomer. Crash it again and restart it while they still
			// list it: then it replaces its old entry.
			crasher.restart()
			if !c.nw.RunUntil(func() bool { return viewsMatch(append([]*peer{crasher}, others...)) }, discoveryBound(lanLink)+quantum) {
				t.Fatalf("restarted peer not rediscovered: %v", viewsErr(append([]*peer{crasher}, others...)))
			}
			oldInst := crasher.Instance()
			oldAddr := crasher.Addr()
			c.nw.RunFor(2 * time.Second)
			crasher.Crash()
			c.nw.RunFor(time.Second) // well within the timeout: everyone still lists it
			for _, o := range others {
				if !listsNick(o, crasher.Nick()) {
					t.Fatalf("%v dropped the crashed %s within a second", o, crasher.Nick())
				}
			}
			restartAt := c.nw.Now()
			crasher.restart()
			if crasher.Addr() != oldAddr {
				t.Fatalf("restarted on %v, was %v: a fresh host should hand out the same port", crasher.Addr(), oldAddr)
			}
			c.nw.RunFor(hop(lanLink))
			for _, o := range others {
				ev, ok := o.Rec().FirstAbout(crasher.Instance(), chat.EventPeerRestarted)
				if !ok {
					t.Errorf("%v did not see %s restart within one hop", o, crasher.Nick())
					continue
				}
				if ev.Old.Instance != oldInst {
					t.Errorf("%v: restart replaced instance %s, want %s", o, ev.Old.Instance, oldInst)
				}
				if d := c.at(ev.Time) - restartAt; d > hop(lanLink) {
					t.Errorf("%v saw the restart %v after it, want within one hop", o, d)
				}
				n := 0
				for _, rp := range o.Chat().Peers() {
					if rp.Nickname == crasher.Nick() {
						n++
						if rp.Instance != crasher.Instance() {
							t.Errorf("%v lists %s as instance %s, want the new %s", o, crasher.Nick(), rp.Instance, crasher.Instance())
						}
					}
				}
				if n != 1 {
					t.Errorf("%v lists %s %d times, want once", o, crasher.Nick(), n)
				}
			}
			// The old instance never expires later: it is gone already.
			c.nw.RunFor(chat.DefaultTimeout + time.Second)
			for _, o := range others {
				if _, ok := o.Rec().FirstAbout(oldInst, chat.EventPeerExpired); ok {
					t.Errorf("%v expired the replaced instance of %s after the restart", o, crasher.Nick())
				}
			}
			if err := viewsErr(append([]*peer{crasher}, others...)); err != nil {
				t.Error(err)
			}
		}
	})
}

// Duplicate nicknames: two bobs are two entries; a plain "bob" is refused
// as ambiguous, naming both; each can be picked by the selector the error
// offers (nickname@ip:port), by an instance prefix and by a fingerprint
// prefix, and each gets exactly its own messages. alice's first session
// pins the nickname bob to the first bob's key (trust on first use), so
// the second bob is a key change to her: nothing reaches it until she
// accepts its key by fingerprint. The bobs see each other too.
func TestLANDuplicateNicknames(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		lan := c.nw.AddSegment("lan")
		hs := addHosts(c.nw, lan, "h", 3)
		alice := c.start(hs[0], "alice")
		bob1 := c.start(hs[1], "bob")
		bob2 := c.start(hs[2], "bob")
		all := []*peer{alice, bob1, bob2}
		if !c.nw.RunUntil(func() bool { return viewsMatch(all) }, discoveryBound(lanLink)+quantum) {
			t.Fatalf("no discovery: %v", viewsErr(all))
		}
		_, err := alice.Chat().Send(t.Context(), "bob", "which one?")
		var amb *registry.AmbiguousError
		if !errors.As(err, &amb) || len(amb.Candidates) != 2 {
			t.Fatalf(`send to "bob": %v, want an AmbiguousError naming both bobs`, err)
		}
		if !strings.Contains(err.Error(), registry.Selector(amb.Candidates[0])) || !strings.Contains(err.Error(), registry.Selector(amb.Candidates[1])) {
			t.Errorf("the ambiguity error %q does not show how to pick each bob", err)
		}
		byAddr := map[string]*peer{bob1.Addr().String(): bob1, bob2.Addr().String(): bob2}
		var msgs []*message
		for i, cand := range amb.Candidates {
			to := byAddr[cand.Addr.String()]
			if to == nil {
				t.Fatalf("candidate %v is neither bob", cand)
			}
			fp := protocol.KeyFingerprint(cand.PubKey)
			if i == 1 {
				if _, err := alice.Chat().Send(t.Context(), registry.Selector(cand), "to a key not pinned"); !errors.Is(err, chat.ErrKeyChanged) {
					t.Errorf("send to the second bob before trusting its key: %v, want ErrKeyChanged", err)
				}
				if _, err := alice.Chat().Trust("bob#" + fp[:7]); err != nil {
					t.Fatalf("trust the second bob: %v", err)
				}
			}
			msgs = append(msgs, send(t.Context(), alice, to, registry.Selector(cand), fmt.Sprintf("by selector %d", i)))
			msgs = append(msgs, send(t.Context(), alice, to, "bob#"+to.Instance()[:6], fmt.Sprintf("by instance %d", i)))
			msgs = append(msgs, send(t.Context(), alice, to, "bob#"+fp[:7], fmt.Sprintf("by fingerprint %d", i)))
		}
		msgs = append(msgs, send(t.Context(), bob1, bob2, "bob", "bob to the other bob"))
		msgs = append(msgs, send(t.Context(), bob2, bob1, "bob", "the other bob back"))
		c.nw.Settle()
		if notDone := checkExactlyOnce(t, all, msgs); notDone > 0 {
			t.Errorf("%d sends failed or were queued", notDone)
		}
	})
}

// The same seed gives the same run: discovery of 10 peers and a round of
// messages, twice, with equal trace hashes.
func TestLANDeterminism(t *testing.T) {
	netsim.CheckDeterminism(t, netsim.SeedFromEnv(t), clusterBody(func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 10, time.Second)
		c.nw.RunUntil(func() bool { return viewsMatch(peers) }, 2*time.Second)
		for _, p := range peers[1:] {
			send(t.Context(), peers[0], p, p.Nick(), "hi "+p.Nick())
		}
		peers[3].Crash()
		peers[4].Quit()
		c.nw.RunFor(20 * time.Second)
	}))
}

// A send cut short because the sender's own node closes ends Queued at
// the Close, without an error (Close settles every waiting send): the
// message stays Pending in the sender's store, and once both peers run
// again it is delivered exactly once, within discovery plus one session.
// (Found by the schedule property, "send n1->n0; crash n0; quit n1", when
// such a send failed with ErrClosed.)
func TestLANSendInterruptedByClose(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 2, 0)
		alice, bob := peers[0], peers[1]
		c.nw.RunFor(discoveryBound(lanLink) + quantum)
		bob.Crash() // alice's dial to bob now waits for an answer
		ob := newOutbox(t.Context())
		ob.post(alice, bob, "into the void")
		c.nw.RunFor(time.Second)
		closedAt := c.nw.Now()
		alice.Quit()
		msgs := ob.wait()
		if len(msgs) != 1 {
			t.Fatalf("%d sends, want 1", len(msgs))
		}
		m := msgs[0]
		if m.err != nil || m.res.Status != chat.Queued || m.done != closedAt {
			t.Errorf("send interrupted by Close: %v, returned %v after the Close; want queued at the Close", m, m.done-closedAt)
		}
		if row, err := storedRow(t.Context(), m); err != nil || row.Status != store.Pending {
			t.Errorf("after the Close the sender's store holds %+v (%v), want it Pending", row, err)
		}
		checkNotArrived(t, peers, msgs, "while both are down")

		bob.restart()
		alice.restart()
		drain(t, c, msgs, discoveryBound(lanLink)+rejoinDrain(lanLink), "after both restarted")
		for _, err := range deliveryErrs(t.Context(), peers, msgs) {
			t.Error(err)
		}
	})
}

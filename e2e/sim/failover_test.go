package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
)

// failoverWithin is client/internal/rendezvous.FailoverWithin (not
// importable from here): once the connection to the server a client was
// registered with is lost, the next attempt, to the next server of its
// list, starts within the backoff's first wait, which its registration
// started over.
const failoverWithin = time.Second

// serverBURL is the second bootstrap server of the failover scenario, on
// host "boot-b"; serverURL, on "boot", is the first.
var serverBURL = fmt.Sprintf("ws://boot-b:%d/", serverPort)

// registeredWith returns when p's current instance first reported being
// registered with the server at url, at or after t0.
func registeredWith(p *peer, url string, t0 time.Duration) (time.Duration, bool) {
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventStatus && ev.Err == nil && strings.HasPrefix(ev.Text, "registered with "+url+" as ") && p.c.at(ev.Time) >= t0 {
			return p.c.at(ev.Time), true
		}
	}
	return 0, false
}

// statusSince returns the status lines p's current instance showed at or
// after t0.
func statusSince(p *peer, t0 time.Duration) []string {
	var out []string
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventStatus && p.c.at(ev.Time) >= t0 {
			out = append(out, ev.Text)
		}
	}
	return out
}

// Two independent bootstrap servers (nothing shared, each on a host of its
// own) and two clients that list both, [boot, boot-b], each behind a
// symmetric NAT, so that every session between them goes through the
// relay of the server they are registered with. Both register with the
// first and chat. Then its host crashes: each client is told at once (the
// reset), says which server it lost and which it tries next, and is
// registered with the second within failoverWithin plus the reset's trip
// and one registration. A message alice posts while both are between
// servers ends Queued (the relay of the dead server leads nowhere) and is
// delivered, once, after both are registered with the second server.
// Across the switch alice is the same node: her identity key and instance
// are unchanged, bob's pin of her key holds, and neither sees the other
// leave or join again. With the first server back, they stay with the
// second, and new sessions both ways go through its relay.
func TestInternetFailover(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		w := newNATWorld(c, nil)
		bootB := c.nw.AddHost("boot-b", w.internet)
		s := &natScenario{c: c, w: w, sites: pairCell(natSymmetric, natSymmetric).build(w), site: map[*peer]*natSite{}, paths: map[*message]string{}}
		s.srv = startServer(t, c, w.boot)
		startServer(t, c, bootB)
		servers := func(cfg *chat.Config) {
			cfg.Mode = chat.ModeInternet
			cfg.BootstrapServers = []string{serverURL, serverBURL}
		}
		for i, nick := range []string{"alice", "bob"} {
			c.nw.RunFor(time.Duration(c.seeds.Int64N(int64(startSpread))))
			s.peers[i] = c.start(s.sites[i].host, nick, servers)
			s.site[s.peers[i]] = s.sites[i]
		}
		s.start = c.nw.Now()
		alice, bob := s.peers[0], s.peers[1]

		t.Logf("step: both register with the first server and chat through its relay")
		s.discovered(t, registerHops*hop(wanLink))
		for _, p := range s.peers {
			if _, ok := registeredWith(p, serverURL, 0); !ok {
				t.Fatalf("%v is not registered with %s: %q", p, serverURL, statusSince(p, 0))
			}
		}
		msgs := []*message{
			s.sendTimed(t, alice, bob, "before 1", chat.PathRelayed, 0),
			s.sendTimed(t, bob, alice, "before 2", chat.PathRelayed, 0),
		}
		aliceKey, aliceInst := alice.Chat().PublicKey(), alice.Instance()
		c.nw.RunFor(5 * time.Second)

		t.Logf("step: the first server's host crashes")
		lost := c.nw.Now()
		w.boot.Crash()
		// Both have the reset, neither has waited out the backoff's
		// first half: both are between servers.
		c.nw.RunFor(2 * hop(wanLink))
		for _, p := range s.peers {
			if _, ok := registeredWith(p, serverBURL, lost); ok {
				t.Fatalf("%v registered with %s already: the scenario posts too late", p, serverBURL)
			}
		}
		posted := newOutbox(t.Context())
		posted.post(alice, bob, "between servers")

		bound := failoverWithin + hop(wanLink) + registerHops*hop(wanLink)
		if !c.nw.RunUntil(func() bool {
			_, ra := registeredWith(alice, serverBURL, lost)
			_, rb := registeredWith(bob, serverBURL, lost)
			return ra && rb
		}, bound+quantum) {
			t.Fatalf("not both registered with %s within %v of the crash: alice %q, bob %q", serverBURL, bound, statusSince(alice, lost), statusSince(bob, lost))
		}
		var onB time.Duration
		for _, p := range s.peers {
			at, _ := registeredWith(p, serverBURL, lost)
			onB = max(onB, at)
			t.Logf("%v registered with %s %v after the crash (bound %v)", p, serverBURL, at-lost, bound)
			lines := statusSince(p, lost)
			want := "lost the bootstrap server " + serverURL + "; trying " + serverBURL + " in "
			if len(lines) == 0 || !strings.HasPrefix(lines[0], want) {
				t.Errorf("%v says %q after the crash, want first %q...", p, lines, want)
			}
		}

		t.Logf("step: the message posted between servers is delivered once both are on the second")
		between := posted.wait()
		checkQueued(t, between, maxSendTime, "posted between servers")
		for _, m := range between {
			t.Logf("%v: queued %v after it was posted", m, m.done-m.at)
		}
		drainBound := maxSendTime + queueRetryMax + chat.RelayDelay + relayTrips*hop(wanLink)
		drain(t, c, between, drainBound, "after both moved to the second server")
		for _, m := range between {
			row, err := storedRow(t.Context(), m)
			if err != nil || row.Status != store.Delivered {
				t.Errorf("%v: alice's store says %v (%v), want delivered", m, row.Status, err)
			}
			for _, r := range receipts(s.peers[:])[m.text] {
				if at := c.at(r.msg.Received); at < onB {
					t.Errorf("%v shown by %v at %v, before both were on the second server (%v)", m, r.at, at, onB)
				}
			}
		}
		msgs = append(msgs, between...)

		t.Logf("step: alice is the same node")
		if alice.Chat().PublicKey() != aliceKey || alice.Instance() != aliceInst {
			t.Errorf("alice's key or instance changed across the switch")
		}
		found := false
		for _, st := range bob.Chat().PeerStatuses() {
			if st.Nickname != "alice" {
				continue
			}
			found = true
			if st.PubKey != aliceKey || st.Trust == trust.StateChanged || st.Instance != aliceInst {
				t.Errorf("bob lists alice with key %q (%v), instance %s; want her key %q, instance %s", st.PubKey, st.Trust, st.Instance, aliceKey, aliceInst)
			}
		}
		if !found {
			t.Errorf("bob does not list alice after the switch")
		}
		for _, p := range s.peers {
			for _, ev := range p.Rec().All() {
				if c.at(ev.Time) < lost || ev.Peer.Nickname == "" || ev.Peer.Nickname == p.Nick() {
					continue
				}
				switch ev.Kind {
				case chat.EventPeerJoined, chat.EventPeerLeft, chat.EventPeerExpired, chat.EventPeerRestarted:
					t.Errorf("%v saw %v at %v, after the crash at %v: want no churn across the switch", p, ev.Kind, c.at(ev.Time), lost)
				}
			}
		}

		t.Logf("step: the first server comes back; they stay with the second and chat through its relay")
		w.boot.Restart()
		startServer(t, c, w.boot)
		// Let the kept-open sessions close, so that each send below
		// opens a relayed stream of its own.
		c.nw.RunFor(chat.DefaultIdleTimeout + time.Second)
		msgs = append(msgs,
			s.sendTimed(t, alice, bob, "after 1", chat.PathRelayed, 0),
			s.sendTimed(t, bob, alice, "after 2", chat.PathRelayed, 0),
		)
		for _, p := range s.peers {
			if _, ok := registeredWith(p, serverURL, lost); ok {
				t.Errorf("%v went back to %s while %s held: %q", p, serverURL, serverBURL, statusSince(p, lost))
			}
		}
		c.nw.Settle()
		s.checkMessages(t, msgs)
	})
}

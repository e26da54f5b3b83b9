package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// startOriginalPeer starts the original LAN client double called nick on
// h; it is closed at the end of the scenario.
func startOriginalPeer(t *testing.T, c *cluster, h *netsim.Host, nick string) *original.Peer {
	t.Helper()
	op, err := original.StartPeer(h.Context(), h, nick)
	if err != nil {
		t.Fatal(err)
	}
	c.onClose(op.Close)
	return op
}

// receivedFrom returns the texts p's instances showed from nick, with the
// message ids they carried.
func receivedFrom(p *peer, nick string) (texts, ids []string) {
	for _, r := range p.Recs() {
		for _, m := range r.Messages() {
			if m.From == nick {
				texts, ids = append(texts, m.Text), append(ids, m.ID)
			}
		}
	}
	return texts, ids
}

// Mixed LAN: an original peer (announces without instance or caps, cannot
// query, one connection per message) and ours see each other (ours answer
// a newcomer that cannot query within QueryAnswerMax), our messages reach
// it with status Sent, and its messages reach ours.
func TestMixedLANOriginalPeer(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		lan := c.nw.AddSegment("lan")
		hs := addHosts(c.nw, lan, "h", 3)
		alice, bob := c.start(hs[0], "alice"), c.start(hs[1], "bob")
		c.nw.RunFor(2 * time.Second)
		joined := c.nw.Now()
		olga := startOriginalPeer(t, c, hs[2], "olga")
		bound := hop(lanLink) + chat.QueryAnswerMax + hop(lanLink)
		c.nw.RunFor(bound + quantum)
		if got := olga.Peers(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("the original peer lists %v %v after it started, want [alice bob] (ours answer at once)", got, bound)
		}
		for _, p := range []*peer{alice, bob} {
			ev, ok := firstNick(p, "olga")
			if !ok {
				t.Errorf("%v does not list the original peer", p)
				continue
			}
			if d := c.at(ev.Time) - joined; d > hop(lanLink) {
				t.Errorf("%v learnt of the original peer %v after it started, want within one hop", p, d)
			}
			if ev.Peer.Instance != "" || len(ev.Peer.Caps) != 0 {
				t.Errorf("%v lists the original peer with instance %q caps %v, want none", p, ev.Peer.Instance, ev.Peer.Caps)
			}
		}

		for i, p := range []*peer{alice, bob} {
			text := fmt.Sprintf("hello olga from %s", p.Nick())
			res, err := p.Chat().Send(t.Context(), "olga", text)
			if err != nil || res.Status != chat.Sent || res.ID != "" {
				t.Errorf("%v -> olga: %+v %v, want status Sent without id", p, res, err)
			}
			c.nw.RunFor(hop(lanLink)) // Sent means written, not arrived
			got := olga.Received()
			if len(got) != i+1 || got[i].From != p.Nick() || got[i].Content != text || got[i].ID != "" {
				t.Errorf("the original peer received %+v, want %q from %s without id", got, text, p.Nick())
			}
		}
		for _, p := range []*peer{alice, bob} {
			if err := olga.Send(t.Context(), p.Nick(), "hi "+p.Nick()); err != nil {
				t.Fatalf("olga -> %v: %v", p, err)
			}
		}
		c.nw.RunFor(hop(lanLink))
		for _, p := range []*peer{alice, bob} {
			texts, ids := receivedFrom(p, "olga")
			if !slices.Equal(texts, []string{"hi " + p.Nick()}) || ids[0] != "" {
				t.Errorf("%v got %q (ids %q) from olga, want [hi %s] without id", p, texts, ids, p.Nick())
			}
		}
		// Steady state: ours keep the original (it announces every 5 s,
		// within our 15 s timeout) and it keeps ours.
		c.nw.RunFor(2 * chat.DefaultTimeout)
		if got := olga.Peers(); !slices.Equal(got, []string{"alice", "bob"}) {
			t.Errorf("the original peer lists %v, want [alice bob]", got)
		}
		for _, p := range []*peer{alice, bob} {
			if !listsNick(p, "olga") {
				t.Errorf("%v dropped the original peer", p)
			}
		}
		// A node of ours that starts, then quits, next to the original:
		// the original warns once per datagram of a type it does not know
		// (goodbye it knows and only logs). PROTOCOL.md §6 allows at most
		// one such warning per start-up: our one query.
		before := olga.UnknownTypes()
		carol := c.start(c.nw.AddHost("h4", lan), "carol")
		c.nw.RunFor(lastBurst() + time.Second)
		carol.Quit()
		c.nw.RunFor(hop(lanLink))
		if n := olga.UnknownTypes() - before; n > 1 {
			t.Errorf("one start-up and quit of ours cost the original %d warnings (unknown datagram types), want at most 1", n)
		}
	})
}

func firstNick(p *peer, nick string) (chat.Event, bool) {
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventPeerJoined && ev.Peer.Nickname == nick {
			return ev, true
		}
	}
	return chat.Event{}, false
}

// namesAndAddrs is a view without instance ids: the original server does
// not relay them.
func namesAndAddrs(p *peer) []entry {
	var v []entry
	for _, e := range p.View() {
		e.Instance = ""
		v = append(v, e)
	}
	return v
}

func expectedSansInstance(p *peer, set []*peer) []entry {
	var v []entry
	for _, e := range expected(p, set) {
		e.Instance = ""
		v = append(v, e)
	}
	return v
}

// Mixed internet mode, our client against the original server: it never
// pushes, so our clients poll it; each learns of the others within one
// poll interval of the last registration, and they message each other
// (status Sent: the original server does not relay capabilities, so our
// clients treat each other as originals).
func TestMixedOurClientOriginalServer(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 3)
		srv := startOriginalServer(t, c, boot)
		peers, last := startClients(c, hosts, time.Second, "i")
		bound := registerHops*hop(wanLink) + rendezvousPollInterval + 2*hop(wanLink)
		c.nw.RunFor(bound + quantum)
		for _, p := range peers {
			if got, want := namesAndAddrs(p), expectedSansInstance(p, peers); !slices.Equal(got, want) {
				t.Errorf("%v lists %v %v after the last start, want %v", p, got, bound, want)
			}
		}
		var full time.Duration
		for _, p := range peers {
			for _, q := range peers {
				if ev, ok := firstNick(p, q.Nick()); ok {
					full = max(full, c.at(ev.Time))
				}
			}
		}
		t.Logf("full discovery %v after the last start (bound %v); the server lists %d peers", full-last, bound, len(srv.PeerIDs()))
		msgs := sendAllPairs(t.Context(), peers, "via original server")
		c.nw.RunFor(hop(wanLink)) // Sent means written, not arrived
		if notDone := checkExactlyOnce(t, peers, msgs); notDone > 0 {
			t.Errorf("%d sends failed or were queued", notDone)
		}
		for _, m := range msgs {
			if m.err == nil && m.res.Status != chat.Sent {
				t.Errorf("%v: status %v, want sent (no caps through the original server)", m, m.res.Status)
			}
		}
		// Heartbeats keep everyone past the original's 30 s expiry.
		c.nw.RunFor(2 * original.ServerExpiry)
		for _, p := range peers {
			if got, want := namesAndAddrs(p), expectedSansInstance(p, peers); !slices.Equal(got, want) {
				t.Errorf("%v lists %v after a minute, want %v", p, got, want)
			}
		}
	})
}

// Mixed internet mode, the original client against our server: it
// registers without instance or caps, lists peers by polling, and sees
// ours; ours see it by push; messages flow both ways (Sent to it); when it
// disconnects, our server drops it and ours hear of it at once.
func TestMixedOriginalClientOurServer(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 3)
		startServer(t, c, boot)
		peers, _ := startClients(c, hosts[:2], time.Second, "i")
		c.nw.RunFor(registerHops * hop(wanLink))
		oh := hosts[2]
		op := startOriginalPeer(t, c, oh, "olga") // its TCP listener (and a useless multicast socket, as the original)
		started := c.nw.Now()
		oc := original.StartBootstrapClient(oh.Context(), oh, serverURL, "olga", op.Port())
		c.onClose(oc.Close)
		bound := registerHops * hop(wanLink)
		c.nw.RunFor(bound + quantum)
		if got := oc.Peers(); !slices.Equal(got, []string{"i1", "i2"}) {
			t.Errorf("the original client lists %v %v after it started, want [i1 i2]", got, bound)
		}
		for _, p := range peers {
			ev, ok := firstNick(p, "olga")
			if !ok {
				t.Errorf("%v does not list the original client", p)
				continue
			}
			if d := c.at(ev.Time) - started; d > bound {
				t.Errorf("%v learnt of the original client %v after it started, want within %v", p, d, bound)
			}
			want := fmt.Sprintf("%v:%d", oh.IP(), op.Port())
			if ev.Peer.Addr.String() != want {
				t.Errorf("%v lists the original client at %v, want %v", p, ev.Peer.Addr, want)
			}
		}
		for i, p := range peers {
			text := "hello olga from " + p.Nick()
			res, err := p.Chat().Send(t.Context(), "olga", text)
			if err != nil || res.Status != chat.Sent {
				t.Errorf("%v -> olga: %+v %v, want Sent", p, res, err)
			}
			c.nw.RunFor(hop(wanLink)) // Sent means written, not arrived
			if got := op.Received(); len(got) != i+1 || got[i].From != p.Nick() || got[i].Content != text {
				t.Errorf("the original received %+v", got)
			}
			info, ok := oc.Peer(p.Nick())
			if !ok {
				t.Fatalf("the original client does not know %v", p)
			}
			err = original.SendLine(t.Context(), oh, info.PublicAddr, &protocol.ChatMessage{From: "olga", Content: "hi " + p.Nick(), Timestamp: time.Now().Unix()})
			if err != nil {
				t.Fatalf("olga -> %v at %s: %v", p, info.PublicAddr, err)
			}
			c.nw.RunFor(hop(wanLink))
			if texts, _ := receivedFrom(p, "olga"); !slices.Equal(texts, []string{"hi " + p.Nick()}) {
				t.Errorf("%v got %q from olga", p, texts)
			}
		}
		c.nw.RunFor(2 * rendezvous.DefaultExpiry)
		if got := oc.Peers(); !slices.Equal(got, []string{"i1", "i2"}) {
			t.Errorf("the original client lists %v after a minute, want [i1 i2]", got)
		}
		if errs := oc.Errors(); len(errs) != 0 {
			t.Errorf("the original client met errors: %q", errs)
		}
		left := c.nw.Now()
		oc.Close()
		c.nw.RunFor(2*hop(wanLink) + quantum)
		for _, p := range peers {
			if listsNick(p, "olga") {
				t.Errorf("%v still lists the original client %v after it disconnected", p, c.nw.Now()-left)
			}
		}
	})
}

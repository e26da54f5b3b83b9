package chat_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/chat/chattest"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

var _ chat.Network = (*netsim.Host)(nil)

// first returns the first event of kind that r recorded about nickname
// (any if ""), and whether there is one.
func first(r *chattest.Recorder, kind chat.EventKind, nickname string) (chat.Event, bool) {
	return r.First(func(ev chat.Event) bool {
		return ev.Kind == kind && (nickname == "" || ev.Peer.Nickname == nickname || ev.Message.From == nickname)
	})
}

type testNode struct {
	*chat.Node
	host *netsim.Host
	rec  *chattest.Recorder
}

// start starts a node called nick on host h and records its events; the
// node is closed at the end of the test unless closed before.
func start(t *testing.T, h *netsim.Host, nick string, seed uint64, tweak ...func(*chat.Config)) *testNode {
	t.Helper()
	cfg := chat.Config{Network: h, Nickname: nick, Rand: rand.New(rand.NewPCG(seed, 1)), CryptoRand: rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})}
	for _, f := range tweak {
		f(&cfg)
	}
	n, err := chat.Start(h.Context(), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", nick, err)
	}
	tn := &testNode{Node: n, host: h, rec: chattest.Record(n)}
	t.Cleanup(tn.close)
	return tn
}

func (tn *testNode) close() {
	tn.Node.Close()
	<-tn.rec.Done()
}

func hasPeer(tn *testNode, nick string) bool {
	for _, p := range tn.Peers() {
		if p.Nickname == nick {
			return true
		}
	}
	return false
}

// sniffer records every discovery datagram seen on the segment, with the
// simulated time it arrived.
type sniffer struct {
	mu  sync.Mutex
	got []sniffed
}

type sniffed struct {
	at  time.Duration
	src netip.Addr
	msg protocol.Datagram
}

func sniff(t *testing.T, nw *netsim.Network, h *netsim.Host) *sniffer {
	t.Helper()
	pc, err := h.ListenMulticastUDP(h.Context(), "udp4", nil, chat.GroupAddr())
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{}
	h.Go(func(ctx context.Context) {
		context.AfterFunc(ctx, func() { pc.Close() })
		buf := make([]byte, protocol.MaxDatagramSize)
		for {
			k, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d, err := protocol.DecodeDatagram(buf[:k])
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, sniffed{at: nw.Now(), src: addr.(*net.UDPAddr).AddrPort().Addr().Unmap(), msg: d})
			s.mu.Unlock()
		}
	})
	t.Cleanup(func() { pc.Close() })
	return s
}

// announces returns the arrival times of announces from nick.
func (s *sniffer) announces(nick string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var at []time.Duration
	for _, d := range s.got {
		if a, ok := d.msg.(*protocol.Announce); ok && a.Nickname == nick {
			at = append(at, d.at)
		}
	}
	return at
}

func (s *sniffer) count(typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.got {
		switch d.msg.(type) {
		case *protocol.Query:
			if typ == "query" {
				n++
			}
		case *protocol.Goodbye:
			if typ == "goodbye" {
				n++
			}
		case *protocol.Announce:
			if typ == "announce" {
				n++
			}
		}
	}
	return n
}

func TestStartRequiresNetwork(t *testing.T) {
	_, err := chat.Start(t.Context(), chat.Config{Nickname: "alice"})
	if !errors.Is(err, chat.ErrNoNetwork) {
		t.Fatalf("Start without Network: got %v, want ErrNoNetwork", err)
	}
}

// Two peers started one second apart see each other fast: the newcomer's
// announce reaches the first at once, the first answers its query after
// 20-120 ms.
func TestDiscoveryIsFast(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		nw.RunFor(time.Second)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, time.Second) {
			t.Fatal("no mutual discovery within 1 s")
		}
		aSaw, _ := first(alice.rec, chat.EventPeerJoined, "bob")
		bSaw, _ := first(bob.rec, chat.EventPeerJoined, "alice")
		bDelay := bSaw.Time.Sub(aSaw.Time)
		t.Logf("alice saw bob at %v, bob saw alice %v later", aSaw.Time.Format("05.000"), bDelay)
		// With one peer known, the answer spread is 2/16 of the window.
		if hi := chat.QueryAnswerMin + (chat.QueryAnswerMax-chat.QueryAnswerMin)/8; bDelay < chat.QueryAnswerMin || bDelay > hi+5*time.Millisecond {
			t.Errorf("bob learnt of alice %v after alice learnt of bob, want the small-LAN answer delay of %v-%v", bDelay, chat.QueryAnswerMin, hi)
		}
	})
}

// A node announces and queries at start, repeats the announce in a short
// burst, then announces every interval with ±10% jitter.
func TestAnnounceSchedule(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		s := sniff(t, nw, nw.AddHost("sniffer", lan))
		t0 := nw.Now()
		start(t, nw.AddHost("a", lan), "alice", 7)
		nw.RunFor(60 * time.Second)
		at := s.announces("alice")
		burst := chat.StartupBurst()
		if len(at) < len(burst)+5 {
			t.Fatalf("only %d announces in 60 s: %v", len(at), at)
		}
		for i, want := range burst {
			if got := at[i] - t0; got < want || got > want+5*time.Millisecond {
				t.Errorf("burst announce %d at %v, want %v", i, got, want)
			}
		}
		if q := s.count("query"); q != 1 {
			t.Errorf("%d queries, want one per start-up (an original peer logs a warning for each)", q)
		}
		distinct := map[time.Duration]bool{}
		for i := len(burst); i < len(at); i++ {
			gap := at[i] - at[i-1]
			distinct[gap.Round(10*time.Millisecond)] = true
			lo, hi := time.Duration(0.9*float64(chat.DefaultAnnounceInterval)), time.Duration(1.1*float64(chat.DefaultAnnounceInterval))
			if gap < lo-2*time.Millisecond || gap > hi+2*time.Millisecond {
				t.Errorf("announce %d came %v after the previous, want %v-%v", i, gap, lo, hi)
			}
		}
		if len(distinct) < 3 {
			t.Errorf("intervals are not jittered: %v", distinct)
		}
	})
}

// A query is answered after a random delay in 20-120 ms, and queries
// arriving while an answer is pending share that answer.
func TestQueryAnswerDelay(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		qh := nw.AddHost("q", lan)
		s := sniff(t, nw, qh)
		// No steady announces during the test: only answers.
		start(t, nw.AddHost("a", lan), "alice", 3, func(c *chat.Config) { c.AnnounceInterval = time.Hour })
		nw.RunFor(3 * time.Second) // past the start-up burst
		pc, err := qh.ListenPacket(qh.Context(), "udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		q, _ := protocol.EncodeDatagram(&protocol.Query{Instance: "0123456789abcdef"})
		var delays []time.Duration
		for i := range 20 {
			before := len(s.announces("alice"))
			sent := nw.Now()
			pc.WriteTo(q, chat.GroupAddr())
			pc.WriteTo(q, chat.GroupAddr()) // a second query shares the answer
			nw.RunFor(200 * time.Millisecond)
			at := s.announces("alice")
			if len(at) != before+1 {
				t.Fatalf("two queries gave %d announces, want 1", len(at)-before)
			}
			d := at[len(at)-1] - sent
			delays = append(delays, d)
			if d < chat.QueryAnswerMin || d > chat.QueryAnswerMax+2*time.Millisecond {
				t.Errorf("query answered after %v, want %v-%v", d, chat.QueryAnswerMin, chat.QueryAnswerMax)
			}
			nw.RunFor(time.Duration(137*(i+1)) * time.Millisecond) // not in step with the interval
		}
		t.Logf("answer delays: %v", delays)
	})
}

// A goodbye removes the peer at once; a crashed peer expires at Timeout
// after its last announce, not before.
func TestGoodbyeAndExpiry(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		carolHost := nw.AddHost("c", lan)
		carol := start(t, carolHost, "carol", 3)
		if !nw.RunUntil(func() bool { return len(alice.Peers()) == 2 }, time.Second) {
			t.Fatal("alice did not find bob and carol")
		}
		nw.RunFor(10 * time.Second)

		left := nw.Now()
		bob.close()
		nw.RunFor(5 * time.Millisecond)
		if hasPeer(alice, "bob") {
			t.Errorf("bob still listed %v after his goodbye", nw.Now()-left)
		}
		if _, ok := first(alice.rec, chat.EventPeerLeft, "bob"); !ok {
			t.Error("no peer-left event for bob")
		}

		// Carol crashes: no goodbye. Find her last announce.
		s := sniff(t, nw, nw.AddHost("sniffer", lan))
		nw.RunFor(6 * time.Second) // at least one announce seen
		carolHost.Crash()
		_ = carol
		at := s.announces("carol")
		last := at[len(at)-1]
		timeout := chat.DefaultTimeout
		nw.RunFor(last + timeout - nw.Now() - 10*time.Millisecond)
		if !hasPeer(alice, "carol") {
			t.Fatalf("carol expired before the timeout (%v after her last announce)", nw.Now()-last)
		}
		nw.RunFor(20 * time.Millisecond)
		if hasPeer(alice, "carol") {
			t.Fatalf("carol still listed %v after her last announce, timeout %v", nw.Now()-last, timeout)
		}
		if _, ok := first(alice.rec, chat.EventPeerExpired, "carol"); !ok {
			t.Error("no peer-expired event for carol")
		}
	})
}

// Messages to a peer of ours are acknowledged; same-named peers are both
// listed and each can be picked; a restart is noticed.
func TestSendDeliveredAndAmbiguous(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob1 := start(t, nw.AddHost("b1", lan), "bob", 2)
		bob2 := start(t, nw.AddHost("b2", lan), "bob", 3)
		if !nw.RunUntil(func() bool { return len(alice.Peers()) == 2 && hasPeer(bob1, "bob") }, time.Second) {
			t.Fatalf("discovery incomplete: alice knows %v", alice.Peers())
		}
		ctx := t.Context()
		_, err := alice.Send(ctx, "bob", "which one?")
		var amb *registry.AmbiguousError
		if !errors.As(err, &amb) || len(amb.Candidates) != 2 {
			t.Fatalf("send to two bobs: got %v, want an AmbiguousError with 2 candidates", err)
		}
		sel0, sel1 := registry.Selector(amb.Candidates[0]), registry.Selector(amb.Candidates[1])
		res, err := alice.Send(ctx, sel0, "hi 0")
		if err != nil || res.Status != chat.Delivered || !res.Encrypted || res.Trust != trust.StateNew {
			t.Fatalf("send to %s: %+v, %v", sel0, res, err)
		}
		// That first session pinned the nickname bob to the key of the
		// bob that got it (trust on first use): "bob" now means that one.
		if res, err = alice.Send(ctx, "bob", "hi again"); err != nil || res.Peer.Key != amb.Candidates[0].Key {
			t.Fatalf("send to bob after pinning: %+v, %v", res.Peer, err)
		}
		// The other bob has another key: nothing goes to it until the user
		// accepts its key, by fingerprint.
		if _, err = alice.Send(ctx, sel1, "hi 1"); !errors.Is(err, chat.ErrKeyChanged) {
			t.Fatalf("send to the other bob: %v, want ErrKeyChanged", err)
		}
		if _, err = alice.Trust(sel1); !errors.Is(err, chat.ErrKeyChanged) {
			t.Fatalf("trust the other bob without its fingerprint: %v, want ErrKeyChanged", err)
		}
		fp1 := protocol.KeyFingerprint(amb.Candidates[1].PubKey)
		if st, err := alice.Trust("bob#" + strings.ToLower(fp1[:7])); err != nil || st.Trust != trust.StateVerified {
			t.Fatalf("trust bob#%s: %+v, %v", fp1[:7], st, err)
		}
		if res, err = alice.Send(ctx, sel1, "hi 1"); err != nil || res.Status != chat.Delivered || res.Trust != trust.StateVerified {
			t.Fatalf("send to %s after trusting it: %+v, %v", sel1, res, err)
		}
		if _, err = alice.Send(ctx, sel0, "hi 0"); !errors.Is(err, chat.ErrKeyChanged) {
			t.Fatalf("send to the first bob after trusting the other: %v, want ErrKeyChanged", err)
		}
		nw.Settle()
		got := bob1.rec.Count(chat.EventMessage) + bob2.rec.Count(chat.EventMessage)
		if got != 3 {
			t.Errorf("bobs got %d messages, want 3", got)
		}
		// Back: bob1 sends to alice twice on one kept-open connection.
		for i := range 2 {
			res, err := bob1.Send(ctx, "alice", fmt.Sprintf("reply %d", i))
			if err != nil || res.Status != chat.Delivered {
				t.Fatalf("reply %d: %v %v", i, res, err)
			}
		}
		nw.Settle()
		if n := alice.rec.Count(chat.EventMessage); n != 2 {
			t.Errorf("alice got %d messages, want 2", n)
		}
		if _, err := alice.Send(ctx, "nobody", "x"); !errors.Is(err, registry.ErrUnknownPeer) {
			t.Errorf("send to unknown: got %v, want ErrUnknownPeer", err)
		}
	})
}

// A kept-open connection the receiver has closed is redialled
// transparently, and the message is shown once.
func TestSendRedialsClosedConnection(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		dials := &countingNetwork{Network: nw.AddHost("a", lan)}
		alice := start(t, nw.Host("a"), "alice", 1, func(c *chat.Config) { c.Network = dials })
		bob := start(t, nw.AddHost("b", lan), "bob", 2, func(c *chat.Config) { c.ReceiveIdleTimeout = time.Second })
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("no discovery")
		}
		for i := range 3 {
			if res, err := alice.Send(t.Context(), "bob", fmt.Sprintf("m%d", i)); err != nil || res.Status != chat.Delivered {
				t.Fatalf("send %d: %v %v", i, res, err)
			}
			nw.RunFor(2 * time.Second) // bob closes the idle connection
		}
		var texts []string
		for _, ev := range bob.rec.All() {
			if ev.Kind == chat.EventMessage {
				texts = append(texts, ev.Message.Text)
			}
		}
		if strings.Join(texts, ",") != "m0,m1,m2" {
			t.Errorf("bob got %q, want m0,m1,m2 once each", texts)
		}
		if n := dials.count(); n != 3 {
			t.Errorf("%d dials, want 3 (one per message: each kept-open connection was closed by bob)", n)
		}
		// Within the idle timeouts, one connection carries every message.
		before := dials.count()
		for i := range 5 {
			if _, err := alice.Send(t.Context(), "bob", fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
			nw.RunFor(100 * time.Millisecond)
		}
		if n := dials.count() - before; n != 1 {
			t.Errorf("5 quick messages took %d dials, want 1", n)
		}
	})
}

// countingNetwork counts dials.
type countingNetwork struct {
	chat.Network
	mu    sync.Mutex
	dials int
}

func (c *countingNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	c.dials++
	c.mu.Unlock()
	return c.Network.DialContext(ctx, network, addr)
}

func (c *countingNetwork) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// fakeOriginal is an original peer: it announces without instance or
// caps, and reads one line per connection.
func fakeOriginal(t *testing.T, h *netsim.Host, nick string, listen bool) (lines chan string) {
	t.Helper()
	lines = make(chan string, 16)
	port := 4242
	if listen {
		ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		h.Go(func(ctx context.Context) {
			context.AfterFunc(ctx, func() { ln.Close() })
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				lr := protocol.NewLineReader(c)
				for {
					b, err := lr.ReadLine()
					if err != nil {
						break
					}
					lines <- string(b)
				}
				c.Close()
			}
		})
		t.Cleanup(func() { ln.Close() })
	}
	pc, err := h.ListenPacket(h.Context(), "udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	b, _ := protocol.EncodeDatagram(&protocol.Announce{Nickname: nick, TCPPort: uint16(port)})
	pc.WriteTo(b, chat.GroupAddr())
	return lines
}

// Original peers are discovered, answered at once (they cannot query),
// and messaged the original way: the result is Sent, the line has no id.
// A peer that does not listen gives ErrRefused.
func TestOriginalPeer(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		nw.RunFor(3 * time.Second)
		oh := nw.AddHost("o", lan)
		s := sniff(t, nw, oh)
		joined := nw.Now()
		lines := fakeOriginal(t, oh, "olga", true)
		fakeOriginal(t, nw.AddHost("d", lan), "dead", false)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "olga") && hasPeer(alice, "dead") }, time.Second) {
			t.Fatal("original peers not discovered")
		}
		nw.RunFor(200 * time.Millisecond)
		at := s.announces("alice")
		if len(at) == 0 || at[len(at)-1]-joined > chat.QueryAnswerMax+5*time.Millisecond {
			t.Errorf("alice did not announce within %v of an original peer joining: %v", chat.QueryAnswerMax, at)
		}
		res, err := alice.Send(t.Context(), "olga", "hello")
		if err != nil || res.Status != chat.Sent {
			t.Fatalf("send to original: %v %v", res, err)
		}
		select {
		case l := <-lines:
			m, err := protocol.DecodeChatLine([]byte(l))
			if err != nil || m.ID != "" || m.Content != "hello" || m.From != "alice" {
				t.Errorf("original got %q (%v)", l, err)
			}
		case <-time.After(time.Second):
			t.Error("original got nothing")
		}
		if _, err := alice.Send(t.Context(), "dead", "x"); !errors.Is(err, chat.ErrRefused) {
			t.Errorf("send to a closed port: got %v, want ErrRefused", err)
		}
	})
}

// A line longer than the protocol bound is refused: the receiver closes
// the connection, shows nothing, and keeps serving others.
func TestOverlongLineClosesConnection(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		mh := nw.AddHost("m", lan)
		c, err := mh.DialContext(t.Context(), "tcp", fmt.Sprintf("%s:%d", nw.Host("b").IP(), bob.Port()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		big := `{"from":"mallory","content":"` + strings.Repeat("x", protocol.MaxLineSize) + `","timestamp":1}` + "\n"
		go c.Write([]byte(big))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after an over-long line")
		}
		nw.Settle()
		if n := bob.rec.Count(chat.EventMessage); n != 0 {
			t.Errorf("%d messages shown, want 0", n)
		}
		// A too-long message is refused by the sender too.
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second)
		if _, err := alice.Send(t.Context(), "bob", strings.Repeat("y", protocol.MaxLineSize)); !errors.Is(err, chat.ErrTooLong) {
			t.Errorf("send of an over-long message: got %v, want ErrTooLong", err)
		}
	})
}

// The same seed gives the same run, events and all.
func TestDeterministic(t *testing.T) {
	netsim.CheckDeterminism(t, 42, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		a := start(t, nw.AddHost("a", lan), "alice", 1)
		nw.RunFor(700 * time.Millisecond)
		start(t, nw.AddHost("b", lan), "bob", 2)
		nw.RunUntil(func() bool { return hasPeer(a, "bob") }, time.Second)
		a.Send(t.Context(), "bob", "hi")
		nw.RunFor(12 * time.Second)
	})
}

// A send to a peer with a key cut short by the node's own Close ends
// Queued: the message is in the store and goes out on a later run.
func TestSendInterruptedByClose(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bh := nw.AddHost("b", lan)
		start(t, bh, "bob", 2)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("no discovery")
		}
		bh.Crash() // the dial to bob now waits for an answer that never comes
		type result struct {
			res chat.SendResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := alice.Send(context.Background(), "bob", "hello?")
			done <- result{res, err}
		}()
		nw.RunFor(time.Second)
		alice.close()
		// Bob has a key: the message was stored before the dial, so Close
		// leaves it queued, not lost.
		if r := <-done; r.err != nil || r.res.Status != chat.Queued {
			t.Errorf("send interrupted by Close: %v %v, want Queued", r.res.Status, r.err)
		}
	})
}

// A send waiting for an ack on a kept-open connection is cut short by
// Close while the connection is reset: the deadline callback set up for
// the cancel must not touch the pooled connection the failed send clears
// (it read pc.conn after sendAcked set it to nil: a data race and a nil
// dereference; found by the e2e schedule property under -race).
func TestSendAckWaitCutByCloseAndReset(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			netsim.Run(t, uint64(i), nil, func(t *testing.T, nw *netsim.Network) {
				lan := nw.AddSegment("lan")
				ah, bh := nw.AddHost("a", lan), nw.AddHost("b", lan)
				alice := start(t, ah, "alice", 1)
				start(t, bh, "bob", 2)
				if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
					t.Fatal("no discovery")
				}
				if _, err := alice.Send(t.Context(), "bob", "warm up"); err != nil {
					t.Fatal(err)
				}
				hold := nw.Hold([]*netsim.Host{bh}, []*netsim.Host{ah}) // no ack comes back
				done := make(chan chat.Status, 1)
				go func() {
					res, _ := alice.Send(context.Background(), "bob", "held")
					done <- res.Status
				}()
				nw.RunFor(time.Second)
				// Reset the stream and close the node at the same instant.
				nw.ResetStreams([]*netsim.Host{ah}, []*netsim.Host{bh})
				alice.close()
				if st := <-done; st != chat.Queued {
					t.Errorf("send with no ack ended %v, want queued", st)
				}
				hold.Release()
			})
		})
	}
}

// When a starting node's first announce and query are lost, its next
// burst announce makes it new to the others, who answer at once: it does
// not have to wait for their next interval.
func TestLostFirstQueryCoveredByBurst(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		nw.RunFor(2 * time.Second)
		ha := nw.AddHost("a", lan)
		dropped := 0
		nw.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.From == ha && p.Proto == "udp" && p.Time < nw.Now()+time.Millisecond && dropped < 2 {
				dropped++
				return netsim.Verdict{Drop: true}
			}
			return netsim.Verdict{}
		})
		begin := time.Now()
		alice := start(t, ha, "alice", 1)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, 2*time.Second) {
			t.Fatal("no mutual discovery within 2 s")
		}
		if dropped != 2 {
			t.Fatalf("dropped %d of alice's first datagrams, want her announce and query", dropped)
		}
		saw, _ := first(alice.rec, chat.EventPeerJoined, "bob")
		second := chat.StartupBurst()[1]
		if d := saw.Time.Sub(begin); d < second || d > second+chat.QueryAnswerMax+5*time.Millisecond {
			t.Errorf("alice learnt of bob %v after start, want between the second burst announce (%v) and %v later", d, second, chat.QueryAnswerMax)
		}
	})
}

// On a larger LAN the answers to a newcomer spread over the whole
// QueryAnswerMin-QueryAnswerMax window, so they do not all arrive at once.
func TestAnswersSpreadOnLargerLAN(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		const peers = 20
		for i := range peers {
			start(t, nw.AddHost(fmt.Sprint("p", i), lan), fmt.Sprint("peer", i), uint64(i+10))
		}
		nw.RunFor(2 * time.Second)
		s := sniff(t, nw, nw.AddHost("sniffer", lan))
		t0 := nw.Now()
		start(t, nw.AddHost("new", lan), "newcomer", 99)
		nw.RunFor(time.Second)
		var first, last time.Duration
		for i := range peers {
			at := s.announces(fmt.Sprint("peer", i))
			if len(at) == 0 {
				t.Fatalf("peer%d did not answer the newcomer", i)
			}
			d := at[0] - t0
			if d < chat.QueryAnswerMin || d > chat.QueryAnswerMax+5*time.Millisecond {
				t.Errorf("peer%d answered after %v, want %v-%v", i, d, chat.QueryAnswerMin, chat.QueryAnswerMax)
			}
			if i == 0 || d < first {
				first = d
			}
			last = max(last, d)
		}
		if spread := last - first; spread < (chat.QueryAnswerMax-chat.QueryAnswerMin)/2 {
			t.Errorf("%d answers came within %v of each other, want them spread over most of the %v window", peers, spread, chat.QueryAnswerMax-chat.QueryAnswerMin)
		}
	})
}

// Room tags for the tests (protocol.RoomTagLen lowercase hex each).
const (
	tagA = "0f1e2d3c4b5a69788796a5b4"
	tagB = "c3d2e1f00112233445566778"
)

// peerNamed returns the peer tn lists as nick.
func peerNamed(tn *testNode, nick string) (registry.Peer, bool) {
	for _, p := range tn.Peers() {
		if p.Nickname == nick {
			return p, true
		}
	}
	return registry.Peer{}, false
}

// A change of a node's room tags reaches the LAN at once, in an announce
// sent there and then (well within the announce interval), sorted; the
// peers list it with the node as an update.
func TestRoomTagsAnnouncedAtOnce(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, time.Second) {
			t.Fatal("no mutual discovery within 1 s")
		}
		nw.RunFor(10 * time.Second) // past the start-up burst
		roomsAt := func(tn *testNode, nick string) []string {
			p, _ := peerNamed(tn, nick)
			return p.Rooms
		}
		alice.SetRoomTagsForTest([]string{tagB, tagA, tagB})
		if !nw.RunUntil(func() bool { return slices.Equal(roomsAt(bob, "alice"), []string{tagA, tagB}) }, 50*time.Millisecond) {
			t.Fatalf("bob lists alice with rooms %q 50 ms after she joined, want %q", roomsAt(bob, "alice"), []string{tagA, tagB})
		}
		if _, ok := bob.rec.First(func(ev chat.Event) bool {
			return ev.Kind == chat.EventPeerUpdated && ev.Peer.Nickname == "alice" && len(ev.Peer.Rooms) == 2
		}); !ok {
			t.Error("no peer-updated event for alice's rooms")
		}
		alice.SetRoomTagsForTest(nil)
		if !nw.RunUntil(func() bool { return roomsAt(bob, "alice") == nil }, 50*time.Millisecond) {
			t.Fatalf("bob lists alice with rooms %q after she left them all", roomsAt(bob, "alice"))
		}
		// The same tags again send nothing new; the next interval's
		// announce still carries them.
		alice.SetRoomTagsForTest([]string{tagA})
		nw.RunFor(10 * time.Second)
		if got := roomsAt(bob, "alice"); !slices.Equal(got, []string{tagA}) {
			t.Fatalf("bob lists alice with rooms %q, want %q", got, []string{tagA})
		}
	})
}

package chat_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// texts returns the texts of the messages r recorded from nick, in order.
func texts(tn *testNode, nick string) []string {
	var out []string
	for _, ev := range tn.rec.All() {
		if ev.Kind == chat.EventMessage && ev.Message.From == nick {
			out = append(out, ev.Message.Text)
		}
	}
	return out
}

func storedEvents(tn *testNode, kind chat.EventKind) []string {
	var out []string
	for _, ev := range tn.rec.All() {
		if ev.Kind == kind {
			out = append(out, ev.Stored.Text)
		}
	}
	return out
}

// openStore opens a file store in dir that the test closes at its end
// (after the nodes using it: cleanups run last first).
func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func withStore(st *store.Store) func(*chat.Config) { return func(c *chat.Config) { c.Store = st } }

func withTrust(ts *trust.Store) func(*chat.Config) { return func(c *chat.Config) { c.Trust = ts } }

// A message to a known peer that is away is queued, not failed; it is
// delivered, in order, as soon as the peer is back, and the sender is told
// of each delivery. A nickname never seen still fails at once.
func TestQueueDeliveredWhenPeerReturns(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bh := nw.AddHost("b", lan)
		bob := start(t, bh, "bob", 2)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("no discovery")
		}
		if res, err := alice.Send(t.Context(), "bob", "first"); err != nil || res.Status != chat.Delivered {
			t.Fatalf("first send: %v %v", res.Status, err)
		}
		bob.close()
		if !nw.RunUntil(func() bool { return !hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("bob's goodbye not seen")
		}
		for i := range 3 {
			res, err := alice.Send(t.Context(), "bob", fmt.Sprintf("queued %d", i))
			if err != nil || res.Status != chat.Queued {
				t.Fatalf("send to away bob: %v %v, want queued", res.Status, err)
			}
		}
		if _, err := alice.Send(t.Context(), "nobody", "x"); !errors.Is(err, registry.ErrUnknownPeer) {
			t.Errorf("send to a nickname never seen: %v, want ErrUnknownPeer", err)
		}
		q, err := alice.Store().Queue(t.Context())
		if err != nil || len(q) != 3 {
			t.Fatalf("queue: %d messages (%v), want 3", len(q), err)
		}

		nw.RunFor(10 * time.Second)
		bob2 := start(t, bh, "bob", 2) // same key: same seed
		want := []string{"queued 0", "queued 1", "queued 2"}
		if !nw.RunUntil(func() bool {
			return len(texts(bob2, "alice")) >= 3 && len(storedEvents(alice, chat.EventDelivered)) >= 3
		}, 2*time.Second) {
			t.Fatalf("bob got %q, alice told of %q", texts(bob2, "alice"), storedEvents(alice, chat.EventDelivered))
		}
		nw.RunFor(time.Second)
		if got := texts(bob2, "alice"); !slices.Equal(got, want) {
			t.Errorf("bob got %q, want %q in order, once each", got, want)
		}
		if got := storedEvents(alice, chat.EventDelivered); !slices.Equal(got, want) {
			t.Errorf("alice told of deliveries %q, want %q", got, want)
		}
		if q, _ := alice.Store().Queue(t.Context()); len(q) != 0 {
			t.Errorf("queue after delivery: %d messages, want 0", len(q))
		}
	})
}

// The queue survives the sender's restart: a new run with the same store
// and known peers delivers what the last one queued.
func TestQueueSurvivesSenderRestart(t *testing.T) {
	dir := t.TempDir()
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		ah, bh := nw.AddHost("a", lan), nw.AddHost("b", lan)
		st := openStore(t, filepath.Join(dir, "alice.db"))
		known := trust.Memory()
		alice := start(t, ah, "alice", 1, withStore(st), withTrust(known))
		bob := start(t, bh, "bob", 2)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("no discovery")
		}
		if _, err := alice.Send(t.Context(), "bob", "hello"); err != nil {
			t.Fatal(err)
		}
		bob.close()
		nw.RunUntil(func() bool { return !hasPeer(alice, "bob") }, time.Second)
		for i := range 2 {
			if res, err := alice.Send(t.Context(), "bob", fmt.Sprint("while away ", i)); err != nil || res.Status != chat.Queued {
				t.Fatalf("%v %v", res.Status, err)
			}
		}
		alice.close()

		alice2 := start(t, ah, "alice", 1, withStore(st), withTrust(known))
		bob2 := start(t, bh, "bob", 2)
		if !nw.RunUntil(func() bool { return len(texts(bob2, "alice")) >= 2 }, 2*time.Second) {
			t.Fatalf("bob got %q after alice's restart", texts(bob2, "alice"))
		}
		nw.RunFor(time.Second)
		if got, want := texts(bob2, "alice"), []string{"while away 0", "while away 1"}; !slices.Equal(got, want) {
			t.Errorf("bob got %q, want %q", got, want)
		}
		if got := storedEvents(alice2, chat.EventDelivered); len(got) != 2 {
			t.Errorf("alice's second run told of %d deliveries, want 2", len(got))
		}
	})
}

// A queued message that outlives its TTL expires: the sender is told, and
// the peer never gets it, even when it comes back.
func TestQueueExpires(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		ttl := func(c *chat.Config) { c.MessageTTL, c.AckTimeout = 3*time.Second, time.Second }
		alice := start(t, nw.AddHost("a", lan), "alice", 1, ttl)
		bh := nw.AddHost("b", lan)
		bob := start(t, bh, "bob", 2)
		nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second)
		if _, err := alice.Send(t.Context(), "bob", "hello"); err != nil {
			t.Fatal(err)
		}
		bob.close()
		nw.RunUntil(func() bool { return !hasPeer(alice, "bob") }, time.Second)
		out, err := alice.Post(t.Context(), "bob", "too late")
		if err != nil {
			t.Fatal(err)
		}
		posted := nw.Now()
		if res, err := out.Wait(t.Context()); err != nil || res.Status != chat.Queued {
			t.Fatalf("%v %v after %v; peers %v", res.Status, err, nw.Now()-posted, alice.Peers())
		}
		if !nw.RunUntil(func() bool { return len(storedEvents(alice, chat.EventExpired)) > 0 }, 5*time.Second) {
			t.Fatal("no expiry")
		}
		if d := nw.Now() - posted; d < 3*time.Second || d > 3*time.Second+time.Second {
			t.Errorf("expired %v after posting, want just after the 3 s TTL", d)
		}
		bob2 := start(t, bh, "bob", 2)
		nw.RunFor(3 * time.Second)
		if got := texts(bob2, "alice"); len(got) != 0 {
			t.Errorf("bob got %q after it expired", got)
		}
		if got := storedEvents(alice, chat.EventDelivered); len(got) != 0 {
			t.Errorf("alice told of deliveries %q after expiry", got)
		}
		if m, err := alice.Store().Stats(t.Context()); err != nil || m.Expired != 1 {
			t.Errorf("store stats %+v (%v), want 1 expired", m, err)
		}
	})
}

// A receiver that crashed after storing a message but before its ack left
// shows the message once: the resend after its restart is acknowledged
// and dropped, because the store remembers the id.
func TestReceiverDropsDuplicatesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		ah, bh := nw.AddHost("a", lan), nw.AddHost("b", lan)
		alice := start(t, ah, "alice", 1)
		st := openStore(t, filepath.Join(dir, "bob.db"))
		bob := start(t, bh, "bob", 2, withStore(st))
		nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second)
		if _, err := alice.Send(t.Context(), "bob", "warm up"); err != nil {
			t.Fatal(err)
		}
		cut := nw.PartitionOneWay([]*netsim.Host{bh}, []*netsim.Host{ah}) // bob's acks never arrive
		out, err := alice.Post(t.Context(), "bob", "once only")
		if err != nil {
			t.Fatal(err)
		}
		if !nw.RunUntil(func() bool { return len(texts(bob, "alice")) == 2 }, time.Second) {
			t.Fatal("bob did not get the message")
		}
		bob.close()
		bob2 := start(t, bh, "bob", 2, withStore(st))
		cut.Heal()
		res, err := out.Wait(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !nw.RunUntil(func() bool {
			return res.Status == chat.Delivered || len(storedEvents(alice, chat.EventDelivered)) == 1
		}, 30*time.Second) {
			t.Fatalf("never acknowledged: %v, %q", res.Status, storedEvents(alice, chat.EventDelivered))
		}
		nw.RunFor(time.Second)
		if got := texts(bob2, "alice"); len(got) != 0 {
			t.Errorf("bob's second run showed %q again", got)
		}
	})
}

// Many messages posted at once go out pipelined on one connection, all
// delivered, in order, each once.
func TestPipelinedInOrder(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		ah := nw.AddHost("a", lan)
		counting := &countingNetwork{Network: ah}
		alice := start(t, ah, "alice", 1, func(c *chat.Config) { c.Network = counting })
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second)
		const n = 3 * chat.Window
		outs := make([]*chat.Outgoing, n)
		want := make([]string, n)
		for i := range n {
			want[i] = fmt.Sprint("m", i)
			o, err := alice.Post(t.Context(), "bob", want[i])
			if err != nil {
				t.Fatal(err)
			}
			outs[i] = o
		}
		if !nw.RunUntil(func() bool { return len(texts(bob, "alice")) >= n }, 10*time.Second) {
			t.Fatalf("bob got %d of %d", len(texts(bob, "alice")), n)
		}
		for i, o := range outs {
			if res, err := o.Wait(t.Context()); err != nil || res.Status != chat.Delivered {
				t.Fatalf("message %d: %v %v", i, res.Status, err)
			}
		}
		if got := texts(bob, "alice"); !slices.Equal(got, want) {
			t.Errorf("bob got the messages out of order or twice")
		}
		if c := counting.count(); c != 1 {
			t.Errorf("%d connections for %d messages, want 1", c, n)
		}
	})
}

// A peer that crashed and came back elsewhere is listed twice, with one
// key, until its old entry expires: a send to its nickname goes to the
// entry seen last instead of asking which one.
func TestSendToRestartedIdentityPicksNewest(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bh := nw.AddHost("b", lan)
		start(t, bh, "bob", 2)
		nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second)
		if _, err := alice.Send(t.Context(), "bob", "before"); err != nil {
			t.Fatal(err)
		}
		bh.Crash()
		// Same seed: same key; a new run has a new instance id.
		bob2 := start(t, nw.AddHost("b2", lan), "bob", 2, func(c *chat.Config) { c.Rand = rand.New(rand.NewPCG(99, 1)) })
		if !nw.RunUntil(func() bool { return len(alice.Peers()) == 2 }, time.Second) {
			t.Fatalf("alice lists %v", alice.Peers())
		}
		res, err := alice.Send(t.Context(), "bob", "after the crash")
		if err != nil || res.Status != chat.Delivered {
			t.Fatalf("send: %v %v", res.Status, err)
		}
		if got := texts(bob2, "alice"); !slices.Equal(got, []string{"after the crash"}) {
			t.Errorf("the new bob got %q", got)
		}
	})
}

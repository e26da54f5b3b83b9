package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// maxSendTime bounds one Send to a peer that does not answer, until it
// ends Queued (or, for a peer without a key, fails): a dial that times
// out, or a write and an ack wait that do, once more for the redial of a
// kept-open connection found broken.
const maxSendTime = 2 * (chat.DefaultDialTimeout + chat.DefaultWriteTimeout + chat.DefaultAckTimeout)

// retryDrain bounds how long after a heal the queue to a peer that stayed
// listed takes to drain: its outbox may be waiting out the longest retry
// backoff, after an attempt that was under way at the heal and may still
// time out; then one new session delivers.
func retryDrain(l netsim.Link) time.Duration {
	return maxSendTime + queueRetryMax + sessionHops*hop(l)
}

// rejoinDrain bounds how long after a peer is listed again the messages
// queued for it take to be delivered: its return wakes the outbox at
// once, and one new session delivers them.
func rejoinDrain(l netsim.Link) time.Duration { return sessionHops*hop(l) + quantum }

// converge runs until every live peer of set lists exactly the other live
// peers, failing t if that takes longer than bound; it returns how long it
// took.
func converge(t *testing.T, c *cluster, set []*peer, bound time.Duration, what string) time.Duration {
	t.Helper()
	start := c.nw.Now()
	if !c.nw.RunUntil(func() bool { return viewsMatch(set) }, bound) {
		if d := start + bound - c.nw.Now(); d > 0 {
			c.nw.RunFor(d)
		}
		if err := viewsErr(set); err != nil {
			t.Errorf("%s: views not converged within %v:\n%v", what, bound, err)
			return c.nw.Now() - start
		}
	}
	took := c.nw.Now() - start
	t.Logf("%s: converged in %v (bound %v)", what, took, bound)
	return took
}

// outbox sends messages in the background, one goroutine per sender so
// that each sender sends one message at a time, as a user does.
type outbox struct {
	ctx   context.Context
	mu    sync.Mutex
	wg    sync.WaitGroup
	msgs  []*message
	lanes map[*peer]chan func()
}

func newOutbox(ctx context.Context) *outbox {
	return &outbox{ctx: ctx, lanes: map[*peer]chan func(){}}
}

// post queues a message from -> to; it returns at once.
func (o *outbox) post(from, to *peer, text string) {
	lane, ok := o.lanes[from]
	if !ok {
		lane = make(chan func(), 1024)
		o.lanes[from] = lane
		o.wg.Go(func() {
			for f := range lane {
				f()
			}
		})
	}
	node := from.Chat()
	lane <- func() {
		m := &message{from: from, to: to, name: to.Nick(), text: text, at: from.c.nw.Now()}
		m.res, m.err = node.Send(o.ctx, to.Nick(), text)
		m.done = from.c.nw.Now()
		o.mu.Lock()
		o.msgs = append(o.msgs, m)
		o.mu.Unlock()
	}
}

// wait waits for every queued send to return and returns the messages,
// sorted by text.
func (o *outbox) wait() []*message {
	for _, lane := range o.lanes {
		close(lane)
	}
	o.lanes = map[*peer]chan func(){}
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	slices.SortFunc(o.msgs, func(a, b *message) int { return strings.Compare(a.text, b.text) })
	return slices.Clone(o.msgs)
}

// Loss: with 20% of datagrams lost and 5 ms of jitter, 10 peers still find
// each other within the start-up burst plus three steady announces (a pair
// stays apart only if every one of those datagrams and answers is lost).
// Messages ride streams, which lose nothing: each is Delivered at once,
// unless the sender has expired the peer after losing three announces in
// a row; then it is Queued for the peer's pinned key (or, with no key
// pinned yet, fails with ErrUnknownPeer). After the loss stops the views
// are exact within one steady announce, the queued messages are delivered
// within one session of their receiver's return, and every message has
// arrived exactly once (a failed one never).
func TestFaultLossWithJitter(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lossy := netsim.Link{Latency: lanLink.Latency, Jitter: 5 * time.Millisecond, Loss: 0.2}
		c.nw.SetDefaultLink(lossy)
		peers, last := startLAN(c, 10, time.Second)
		bound := lastBurst() + chat.QueryAnswerMax + 3*steadyMax(chat.DefaultAnnounceInterval) + hop(lossy)
		c.nw.RunFor(bound + quantum)
		full := fullDiscovery(t, peers)
		t.Logf("full discovery %v after the last start (bound %v); faults %v", full-last, bound, c.nw.FaultCounts())
		if full-last > bound {
			t.Errorf("full discovery %v after the last start, want within %v", full-last, bound)
		}
		msgs := sendAllPairs(t.Context(), peers, "lossy")
		c.nw.Settle()
		// Streams do not lose data; the only send not Delivered at once
		// is one to a peer the sender had expired after losing every
		// announce of a timeout's worth (about 0.2^3 per pair and
		// window): Queued for the key pinned by an earlier session, or,
		// with none, ErrUnknownPeer.
		expired, queued := 0, 0
		for _, p := range peers {
			expired += p.Rec().Count(chat.EventPeerExpired)
		}
		for _, m := range msgs {
			switch {
			case m.err != nil && !errors.Is(m.err, registry.ErrUnknownPeer):
				t.Errorf("%v: datagram loss must not touch streams", m)
			case m.err == nil && m.res.Status == chat.Queued:
				queued++
				if m.res.Peer.Instance != "" {
					t.Errorf("%v: queued while the sender listed %v: datagram loss must not touch streams", m, registry.Selector(m.res.Peer))
				}
			}
		}
		t.Logf("%d false expiries under loss; %d messages queued", expired, queued)
		if c.nw.FaultCount(netsim.FaultLoss) == 0 || c.nw.FaultCount(netsim.FaultJitter) == 0 {
			t.Errorf("the faults never fired: %v", c.nw.FaultCounts())
		}
		c.nw.SetDefaultLink(lanLink)
		converge(t, c, peers, steadyMax(chat.DefaultAnnounceInterval)+hop(lossy), "after the loss stopped")
		drain(t, c, msgs, rejoinDrain(lossy), "after the loss stopped")
		checkExactlyOnce(t, peers, msgs)
	})
}

// Duplication: half the datagrams arrive twice (the copy later, so they
// reorder): discovery is as fast as on a clean LAN, each peer joins each
// view exactly once, nothing restarts or leaves, messages arrive once.
func TestFaultDuplication(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		dup := netsim.Link{Latency: lanLink.Latency, Jitter: 2 * time.Millisecond, Duplicate: 0.5}
		c.nw.SetDefaultLink(dup)
		peers, last := startLAN(c, 8, time.Second)
		c.nw.RunFor(discoveryBound(dup) + quantum)
		if err := viewsErr(peers); err != nil {
			t.Fatalf("discovery incomplete %v after the last start: %v", discoveryBound(dup), err)
		}
		t.Logf("full discovery %v after the last start", fullDiscovery(t, peers)-last)
		msgs := sendAllPairs(t.Context(), peers, "dup")
		c.nw.RunFor(2 * chat.DefaultTimeout)
		checkExactlyOnce(t, peers, msgs)
		if err := viewsErr(peers); err != nil {
			t.Error(err)
		}
		for _, p := range peers {
			joined := p.Rec().Count(chat.EventPeerJoined)
			other := p.Rec().Count(chat.EventPeerRestarted) + p.Rec().Count(chat.EventPeerUpdated) +
				p.Rec().Count(chat.EventPeerLeft) + p.Rec().Count(chat.EventPeerExpired)
			if joined != len(peers)-1 || other != 0 {
				t.Errorf("%v: %d joins and %d other peer events, want %d joins only", p, joined, other, len(peers)-1)
			}
		}
		if c.nw.FaultCount(netsim.FaultDuplicate) == 0 {
			t.Errorf("no datagram was duplicated: %v", c.nw.FaultCounts())
		}
	})
}

// checkQueued checks that every send of msgs ended Queued, without an
// error, within bound of the call: the peer could not be reached, and the
// message waits in the sender's store.
func checkQueued(t *testing.T, msgs []*message, bound time.Duration, what string) {
	t.Helper()
	for _, m := range msgs {
		switch {
		case m.err != nil || m.res.Status != chat.Queued:
			t.Errorf("%s: %v, want queued", what, m)
		case m.done-m.at > bound:
			t.Errorf("%s: %v took %v to end queued, want at most %v", what, m, m.done-m.at, bound)
		}
	}
}

// checkNotArrived checks that no message of msgs has arrived anywhere yet.
func checkNotArrived(t *testing.T, set []*peer, msgs []*message, what string) {
	t.Helper()
	got := receipts(set)
	for _, m := range msgs {
		if k := len(got[m.text]); k != 0 {
			t.Errorf("%s: %v arrived %d times already", what, m, k)
		}
	}
}

// Partition: a LAN split in two for longer than the timeout. A message
// across ends Queued at the sender within the send bounds (a dial or an
// ack wait timed out), never Delivered, and none arrives while the split
// lasts; each side expires the other exactly as for a crash and keeps
// talking within itself; a send to a peer expired meanwhile is Queued too
// (within the send bounds: its queue may be in a retry), for the key the
// earlier sessions pinned (a nickname never seen still fails at once,
// ErrUnknownPeer). Once healed, everyone is back
// within one steady announce; each return wakes the queues for that peer,
// so within one session more every queued message has arrived exactly
// once.
func TestFaultPartitionHeals(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 6, time.Second)
		a, b := peers[:3], peers[3:]
		converge(t, c, peers, discoveryBound(lanLink)+time.Second, "start")
		all := sendAllPairs(t.Context(), peers, "before") // keeps connections open
		c.nw.RunFor(3 * time.Second)

		split := c.nw.Partition(hostsOf(a), hostsOf(b))
		splitAt := c.nw.Now()
		ob := newOutbox(t.Context())
		for i := range a {
			ob.post(a[i], a[(i+1)%3], fmt.Sprintf("inside a %d", i))
			ob.post(b[i], b[(i+1)%3], fmt.Sprintf("inside b %d", i))
			ob.post(a[i], b[i], fmt.Sprintf("across a->b %d", i))
			ob.post(b[i], a[(i+1)%3], fmt.Sprintf("across b->a %d", i))
		}
		msgs := ob.wait()
		all = append(all, msgs...)
		var across []*message
		for _, m := range msgs {
			if strings.HasPrefix(m.text, "across") {
				across = append(across, m)
			} else if m.err != nil {
				t.Errorf("%v: failed within one side of the partition", m)
			}
		}
		checkQueued(t, across, maxSendTime, "send across the partition")

		// Each side drops the other a timeout after the last announce it
		// heard, which was before the split.
		c.nw.RunFor(splitAt + hop(lanLink) + chat.DefaultTimeout + quantum - c.nw.Now())
		if err := viewsErr(a); err != nil {
			t.Errorf("side a: %v", err)
		}
		if err := viewsErr(b); err != nil {
			t.Errorf("side b: %v", err)
		}
		late := send(t.Context(), a[0], b[0], b[0].Nick(), "across after expiry")
		all = append(all, late)
		// Queued once the attempt of its queue under way (a retry of the
		// messages across) has failed.
		checkQueued(t, []*message{late}, maxSendTime, "send to an expired peer")
		if late.res.Peer.Instance != "" || late.res.Peer.PubKey != b[0].Chat().PublicKey() {
			t.Errorf("send to an expired peer: queued for %+v, want for its pinned key alone", late.res.Peer)
		}
		if _, err := a[0].Chat().Send(t.Context(), "nobody", "to a nickname never seen"); !errors.Is(err, registry.ErrUnknownPeer) {
			t.Errorf("send to a nickname never seen: %v, want ErrUnknownPeer", err)
		}
		if c.nw.FaultCount(netsim.FaultPartition) == 0 || c.nw.FaultCount(netsim.FaultStall) == 0 {
			t.Errorf("the partition never acted: %v", c.nw.FaultCounts())
		}
		checkNotArrived(t, peers, append(across, late), "before the heal")

		split.Heal()
		converge(t, c, peers, steadyMax(chat.DefaultAnnounceInterval)+hop(lanLink), "after the heal")
		drain(t, c, all, rejoinDrain(lanLink), "after the heal")
		for _, err := range deliveryErrs(t.Context(), peers, all) {
			t.Error(err)
		}
	})
}

func hostsOf(ps []*peer) []*netsim.Host {
	hs := make([]*netsim.Host, len(ps))
	for i, p := range ps {
		hs[i] = p.Host()
	}
	return hs
}

// One-way partition: one peer's packets stop reaching the others while it
// still hears them. It keeps listing everyone; they expire it after the
// timeout. Sends both ways end Queued within the send bounds (a session
// needs both directions) and nothing arrives while the cut lasts; a send
// to the expired mute peer fails at once (ErrUnknownPeer): no session ever
// pinned its key there. After the heal it is back in every view within
// one steady announce, and every queued message has arrived exactly once
// within retryDrain: the mute peer kept listing its receiver, so only its
// retry backoff wakes its queue.
func TestFaultOneWayPartition(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 4, time.Second)
		mute, rest := peers[0], peers[1:]
		converge(t, c, peers, discoveryBound(lanLink)+time.Second, "start")
		cut := c.nw.PartitionOneWay([]*netsim.Host{mute.Host()}, hostsOf(rest))
		cutAt := c.nw.Now()
		ob := newOutbox(t.Context())
		ob.post(mute, rest[0], "from the mute peer")
		ob.post(rest[1], mute, "to the mute peer")
		msgs := ob.wait()
		checkQueued(t, msgs, maxSendTime, "send over a one-way partition")

		c.nw.RunFor(cutAt + hop(lanLink) + chat.DefaultTimeout + quantum - c.nw.Now())
		if got, want := mute.View(), expected(mute, peers); !slices.Equal(got, want) {
			t.Errorf("the mute peer lists %v, want everyone %v: it still hears them", got, want)
		}
		if err := viewsErr(rest); err != nil {
			t.Errorf("the others should have expired the mute peer: %v", err)
		}
		late := send(t.Context(), rest[0], mute, mute.Nick(), "to the expired mute peer")
		msgs = append(msgs, late)
		if !errors.Is(late.err, registry.ErrUnknownPeer) {
			t.Errorf("%v: want ErrUnknownPeer", late)
		}
		checkNotArrived(t, peers, msgs, "before the heal")
		cut.Heal()
		converge(t, c, peers, steadyMax(chat.DefaultAnnounceInterval)+hop(lanLink), "after the heal")
		drain(t, c, msgs, retryDrain(lanLink), "after the heal")
		for _, err := range deliveryErrs(t.Context(), peers, msgs) {
			t.Error(err)
		}
	})
}

// Link flaps: one peer's link goes down and up at random (down 0.5-8 s,
// up 1-4 s) while messages flow both ways. Every send ends Delivered or
// Queued, or, to a peer the sender has expired with no key pinned (no
// session yet), fails at once with ErrUnknownPeer; once the link stays up,
// the views are exact within one steady announce, the queues drain within
// retryDrain, and every message that did not fail has arrived exactly
// once, a failed one never.
func TestFaultLinkFlaps(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		peers, _ := startLAN(c, 5, time.Second)
		flapper, rest := peers[0], peers[1:]
		converge(t, c, peers, discoveryBound(lanLink)+time.Second, "start")
		ob := newOutbox(t.Context())
		for i := range 8 {
			down := 500*time.Millisecond + time.Duration(c.seeds.Int64N(int64(7500*time.Millisecond)))
			up := time.Second + time.Duration(c.seeds.Int64N(int64(3*time.Second)))
			other := rest[c.seeds.IntN(len(rest))]
			flapper.Host().LinkDown()
			ob.post(flapper, other, fmt.Sprintf("flap %d out", i))
			ob.post(other, flapper, fmt.Sprintf("flap %d in", i))
			c.nw.RunFor(down)
			flapper.Host().LinkUp()
			ob.post(flapper, other, fmt.Sprintf("flap %d out while up", i))
			c.nw.RunFor(up)
		}
		converge(t, c, peers, steadyMax(chat.DefaultAnnounceInterval)+hop(lanLink), "after the last flap")
		msgs := ob.wait()
		drain(t, c, msgs, retryDrain(lanLink), "after the last flap")
		for _, err := range deliveryErrs(t.Context(), peers, msgs) {
			t.Error(err)
		}
		failed, queued := 0, 0
		for _, m := range msgs {
			switch {
			case m.err != nil:
				failed++
				if !errors.Is(m.err, registry.ErrUnknownPeer) {
					t.Errorf("%v: want delivered or queued (or ErrUnknownPeer)", m)
				}
			case m.res.Status == chat.Queued:
				queued++
			}
		}
		t.Logf("%d of %d sends queued, %d failed during the flaps; faults %v", queued, len(msgs), failed, c.nw.FaultCounts())
		if c.nw.FaultCount(netsim.FaultLinkDown) == 0 {
			t.Errorf("the link never dropped a datagram: %v", c.nw.FaultCounts())
		}
	})
}

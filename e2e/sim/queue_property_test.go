package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/chat/chattest"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// queueSchedules is how many schedules TestPropertyQueue runs when the
// schedule count is TestMain's default; -rapid.checks=N or RAPID_CHECKS=N
// scale it as they scale mitmSchedules, -short divides it by five.
const queueSchedules = 50

// A short-lived run's messages live queueTTL (its nodes' AckTimeout is
// queueAckTimeout, as MessageTTL must exceed twice it), so that a peer
// away for a few of a schedule's waits makes them expire.
const (
	queueTTL        = 20 * time.Second
	queueAckTimeout = 2 * time.Second
)

type queueKind int

const (
	queueWait queueKind = iota
	queueSend
	queueQuit
	queueCrash
	queueRestart
	queuePartition
	queueOneWay
	queueHeal
	queueLoss
)

var queueKindNames = [...]string{"wait", "send", "quit", "crash", "restart", "partition", "oneway", "heal", "loss"}

// queueOp is one step of a queue schedule.
type queueOp struct {
	Kind queueKind
	A, B int           // peers (send: from A to B)
	N    int           // send: how many messages, posted back to back
	Side uint          // partition: bit i puts peer i on the first side
	D    time.Duration // wait
	Loss float64
}

func (o queueOp) String() string {
	switch o.Kind {
	case queueWait:
		return fmt.Sprintf("wait %v", o.D)
	case queueSend:
		return fmt.Sprintf("send %d n%d->n%d", o.N, o.A, o.B)
	case queueQuit, queueCrash, queueRestart:
		return fmt.Sprintf("%s n%d", queueKindNames[o.Kind], o.A)
	case queuePartition, queueOneWay:
		return fmt.Sprintf("%s %b", queueKindNames[o.Kind], o.Side)
	case queueLoss:
		return fmt.Sprintf("loss %.0f%%", 100*o.Loss)
	}
	return queueKindNames[o.Kind]
}

// queueSchedule is one random run: how many peers, the network's seed,
// whether messages live queueTTL (else the default, a week), the steps.
type queueSchedule struct {
	Peers    int
	Seed     uint64
	ShortTTL bool
	Ops      []queueOp
}

func (s queueSchedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers, netsim seed %d", s.Peers, s.Seed)
	if s.ShortTTL {
		fmt.Fprintf(&b, ", MessageTTL %v, AckTimeout %v", queueTTL, queueAckTimeout)
	}
	b.WriteString(":")
	for _, o := range s.Ops {
		b.WriteString(" " + o.String() + ";")
	}
	return b.String()
}

func drawQueueSchedule(rt *rapid.T) queueSchedule {
	n := rapid.IntRange(2, 4).Draw(rt, "peers")
	seed := rapid.Uint64().Draw(rt, "netsim seed")
	short := rapid.Bool().Draw(rt, "short TTL")
	peerIdx := rapid.IntRange(0, n-1)
	kinds := rapid.SampledFrom([]queueKind{
		queueWait, queueWait, queueWait, queueSend, queueSend, queueSend, queueSend,
		queueQuit, queueCrash, queueRestart, queueRestart, queuePartition, queueOneWay, queueHeal, queueLoss,
	})
	gen := rapid.Custom(func(t *rapid.T) queueOp {
		o := queueOp{Kind: kinds.Draw(t, "kind")}
		switch o.Kind {
		case queueWait:
			o.D = time.Duration(rapid.IntRange(1, 150).Draw(t, "tenths of a second")) * 100 * time.Millisecond
		case queueSend:
			o.A, o.B = peerIdx.Draw(t, "from"), peerIdx.Draw(t, "to")
			o.N = rapid.IntRange(1, 3).Draw(t, "messages")
		case queueQuit, queueCrash, queueRestart:
			o.A = peerIdx.Draw(t, "peer")
		case queuePartition, queueOneWay:
			o.Side = uint(rapid.IntRange(1, 1<<n-2).Draw(t, "side"))
		case queueLoss:
			o.Loss = rapid.SampledFrom([]float64{0, 0.2, 0.5}).Draw(t, "loss")
		}
		return o
	})
	return queueSchedule{Peers: n, Seed: seed, ShortTTL: short, Ops: rapid.SliceOfN(gen, 6, 30).Draw(rt, "ops")}
}

// posted is one message handed to Post, and what became of it.
type posted struct {
	from, to *peer
	text     string
	nth      int                // its place among the posts from its sender to its receiver
	at       time.Duration      // when Post was called
	inst     *chattest.Recorder // the sender's instance that took it
	out      *chat.Outgoing
	err      error // Post's own error: nothing was stored
	// racedClose: the instance that took it stopped in the same instant
	// (see knownCloseHang).
	racedClose bool
}

func (p *posted) String() string {
	return fmt.Sprintf("%q %v->%v posted at %v", p.text, p.from, p.to, p.at)
}

// queueEnd bounds the end of a schedule, once every fault is healed and
// every stopped peer restarted: the peers find each other, and a queue
// whose receiver stayed listed may be waiting out the longest retry
// backoff (retryDrain). By then a short-lived run's messages have been
// delivered or have expired.
func queueEnd() time.Duration { return discoveryBound(lanLink) + retryDrain(lanLink) }

// runQueueSchedule runs s and returns every invariant it broke. Before
// the schedule every peer sends every other one message (so that every
// key is pinned); after it, every fault is healed, every stopped peer
// restarted, and the network runs until no store holds a Pending message
// (within queueEnd). Then:
//
//   - every Post that returned an error (ErrUnknownPeer: a peer neither
//     listed nor pinned; an AmbiguousError: a receiver that quit and came
//     back at another port while its goodbye was lost) was never shown;
//   - every other message's outcome is known (Wait does not block):
//     Delivered or Queued, or Queued with ErrExpired; its row in the
//     sender's store holds its text and ends Delivered or Expired, never
//     Pending, and only a short-lived run has Expired rows;
//   - a Delivered row was shown exactly once, at its receiver, from its
//     sender's nickname and key, inside a session; its Wait did not say
//     ErrExpired, and the sender never reported it expired;
//   - an Expired row was shown at most once, and then before its expiry:
//     the receiver's Message.Received is before the row's Expires and
//     before the sender's EventExpired; its Wait did not say Delivered, and
//     the sender never reported it delivered (EventDelivered);
//   - a message that ended Queued and was delivered later was reported
//     once by an EventDelivered; one that expired, by an EventExpired at
//     most once, and never before its Expires;
//   - among the messages one sender posted to one receiver, those the
//     receiver showed (across all its instances) came in the order they
//     were posted;
//   - nothing is shown that was not posted, or shown twice across a
//     receiver's restarts.
//
// Goroutines that outlive their node make the bubble fail (synctest).
func runQueueSchedule(t *testing.T, nw *netsim.Network, s queueSchedule, st *queueStats) []error {
	ctx := t.Context()
	c := newCluster(t, nw)
	defer c.closeAll()
	nw.SetDefaultLink(lanLink)
	hosts := addHosts(nw, nw.AddSegment("lan"), "h", s.Peers)
	tweak := func(cfg *chat.Config) {
		if s.ShortTTL {
			cfg.MessageTTL, cfg.AckTimeout = queueTTL, queueAckTimeout
		}
	}
	peers := make([]*peer, s.Peers)
	keys := map[*peer]string{}
	for i, h := range hosts {
		peers[i] = c.start(h, fmt.Sprintf("n%d", i), tweak)
		keys[peers[i]] = peers[i].Chat().PublicKey()
	}
	nw.RunFor(discoveryBound(lanLink) + quantum) // everyone knows everyone

	var (
		posts    []*posted
		nth      = map[[2]*peer]int{}
		rules    []*netsim.Rule
		closedAt = map[*chattest.Recorder]time.Duration{} // when each instance was stopped
	)
	post := func(a, b int) {
		from, to := peers[a], peers[b]
		pair := [2]*peer{from, to}
		p := &posted{from: from, to: to, nth: nth[pair], at: nw.Now(), inst: from.Rec(),
			text: fmt.Sprintf("q%d n%d->n%d", len(posts), a, b)}
		nth[pair]++
		p.out, p.err = from.Chat().Post(ctx, to.Nick(), p.text)
		posts = append(posts, p)
	}
	// A first message between every pair: the sessions pin every key, so
	// that a peer expired later is queued for rather than unknown.
	for a := range peers {
		for b := range peers {
			if a != b {
				post(a, b)
			}
		}
	}
	nw.RunFor(sessionHops*hop(lanLink) + quantum)
	sides := func(mask uint) (a, b []*netsim.Host) { return splitHosts(hosts, mask) }
	for _, o := range s.Ops {
		switch o.Kind {
		case queueWait:
			nw.RunFor(o.D)
		case queueSend:
			if !peers[o.A].Up() || o.A == o.B {
				continue
			}
			for range o.N {
				post(o.A, o.B)
			}
		case queueQuit:
			if p := peers[o.A]; p.Up() {
				closedAt[p.Rec()] = nw.Now()
				p.Quit()
			}
		case queueCrash:
			if p := peers[o.A]; p.Up() {
				closedAt[p.Rec()] = nw.Now()
				p.Crash()
			}
		case queueRestart:
			if p := peers[o.A]; !p.Up() {
				p.restart()
			}
		case queuePartition:
			rules = append(rules, nw.Partition(sides(o.Side)))
		case queueOneWay:
			rules = append(rules, nw.PartitionOneWay(sides(o.Side)))
		case queueHeal:
			for _, r := range rules {
				r.Heal()
			}
			rules = nil
		case queueLoss:
			nw.SetDefaultLink(netsim.Link{Latency: lanLink.Latency, Jitter: lanLink.Jitter, Loss: o.Loss})
		}
	}

	// The end: everything healed, everyone up, until the queues are empty.
	for _, r := range rules {
		r.Heal()
	}
	nw.SetDefaultLink(lanLink)
	for _, p := range peers {
		if !p.Up() {
			p.restart()
		}
	}
	var errs []error
	endAt := nw.Now()
	var pending int
	var qerr error
	if !runUntilEvery(nw, func() bool {
		pending, qerr = queued(ctx, peers)
		return qerr == nil && pending == 0
	}, 100*time.Millisecond, queueEnd()) {
		errs = append(errs, fmt.Errorf("%d messages still queued %v after everything healed and every peer ran again (%v)", pending, queueEnd(), qerr))
	}
	st.end = max(st.end, nw.Now()-endAt)

	for _, p := range posts {
		if at, ok := closedAt[p.inst]; ok && at == p.at {
			p.racedClose = true
		}
	}
	errs = append(errs, checkQueueOutcomes(ctx, c, s, peers, keys, posts, st)...)
	st.add(nw)
	return errs
}

// knownCloseHang tolerated a client bug, reproduced by
// TestQueuePostRacingClose: a Post whose commit landed just after its
// node's Close never learned its outcome (Wait blocked for ever). Fixed:
// an outbox's runner stopped by Close now marks itself stopped and tells
// every waiting Post "queued". Kept as a switch, false, so that a
// regression fails the property instead of being judged by the store row.
const knownCloseHang = false

// seqOf finds the row of p in its sender's store by its text, for a
// message whose Wait never returned.
func seqOf(ctx context.Context, p *posted, toKey string) (int64, error) {
	ms, err := p.from.Store().History(ctx, toKey, "", 1<<20)
	if err != nil {
		return 0, fmt.Errorf("the sender's history: %w", err)
	}
	for _, m := range ms {
		if m.Dir == store.Out && m.Text == p.text {
			return m.Seq, nil
		}
	}
	return 0, errors.New("no row in the sender's store with its text")
}

// runUntilEvery lets simulated time pass until cond returns true,
// evaluating it every step after the network has settled, for at most
// limit (RunUntil polls every 10 ms, too often for a query of every
// store).
func runUntilEvery(nw *netsim.Network, cond func() bool, step, limit time.Duration) bool {
	deadline := nw.Now() + limit
	for {
		nw.Settle()
		if cond() {
			return true
		}
		left := deadline - nw.Now()
		if left <= 0 {
			return false
		}
		nw.RunFor(min(left, step))
	}
}

// queued counts the Pending messages of every peer's store.
func queued(ctx context.Context, peers []*peer) (int, error) {
	n := 0
	for _, p := range peers {
		// A message in flight may be held back in memory by the store
		// (store.Options.FoldWait): write it, so that it counts.
		if err := p.Store().Settle(ctx); err != nil {
			return 0, fmt.Errorf("%v's store: %w", p, err)
		}
		q, err := p.Store().Queue(ctx)
		if err != nil {
			return 0, fmt.Errorf("%v's queue: %w", p, err)
		}
		n += len(q)
	}
	return n, nil
}

// shownMsg is one message a receiver showed.
type shownMsg struct {
	at  *peer
	msg chat.Message
}

// storedEvents returns the EventDelivered and EventExpired events of p's
// instances, by the store row they are about.
func storedEvents(p *peer) (delivered, expired map[int64][]chat.Event) {
	delivered, expired = map[int64][]chat.Event{}, map[int64][]chat.Event{}
	for _, r := range p.Recs() {
		for _, ev := range r.All() {
			switch ev.Kind {
			case chat.EventDelivered:
				delivered[ev.Stored.Seq] = append(delivered[ev.Stored.Seq], ev)
			case chat.EventExpired:
				expired[ev.Stored.Seq] = append(expired[ev.Stored.Seq], ev)
			}
		}
	}
	return delivered, expired
}

// checkQueueOutcomes is runQueueSchedule's verdict (see there).
func checkQueueOutcomes(ctx context.Context, c *cluster, s queueSchedule, peers []*peer, keys map[*peer]string, posts []*posted, st *queueStats) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	byText := map[string]*posted{}
	for _, p := range posts {
		byText[p.text] = p
	}
	shown := map[string][]shownMsg{}
	for _, r := range peers {
		for _, rec := range r.Recs() {
			for _, m := range rec.Messages() {
				shown[m.Text] = append(shown[m.Text], shownMsg{r, m})
				p, ok := byText[m.Text]
				switch {
				case !ok:
					fail("%v showed %q from %s, which nobody posted", r, m.Text, m.From)
				case p.to != r:
					fail("%v showed %v, posted to another peer", r, p)
				case m.From != p.from.Nick() || m.Key != keys[p.from] || !m.Encrypted:
					fail("%v showed %v from %q with key %q (encrypted %v), want the sender's nickname and key", r, p, m.From, m.Key, m.Encrypted)
				}
			}
		}
	}
	delivered, expired := map[*peer]map[int64][]chat.Event{}, map[*peer]map[int64][]chat.Event{}
	for _, p := range peers {
		delivered[p], expired[p] = storedEvents(p)
	}

	for _, p := range posts {
		st.posts++
		got := shown[p.text]
		if len(got) > 1 {
			fail("%v shown %d times", p, len(got))
		}
		if p.err != nil {
			st.refused++
			var amb *registry.AmbiguousError
			if !errors.Is(p.err, registry.ErrUnknownPeer) && !errors.As(p.err, &amb) {
				fail("%v: Post failed with %v, want only ErrUnknownPeer (a peer neither listed nor pinned) or an AmbiguousError (a receiver's old instance still listed)", p, p.err)
			}
			if len(got) != 0 {
				fail("%v: Post failed (%v), yet the message was shown", p, p.err)
			}
			continue
		}
		var (
			res chat.SendResult
			err error
		)
		select {
		case <-p.out.Done():
			res, err = p.out.Wait(ctx)
		default:
			if !p.racedClose || !knownCloseHang {
				fail("%v: its outcome is still unknown (Wait would block) with every queue empty", p)
				continue
			}
			// The known hang: judge the message by its row, found by
			// its text.
			st.hung++
			res = chat.SendResult{Status: chat.Queued}
			var serr error
			if res.Seq, serr = seqOf(ctx, p, keys[p.to]); serr != nil {
				fail("%v: %v", p, serr)
				continue
			}
		}
		switch {
		case err == nil && res.Status == chat.Delivered:
			st.deliveredAtOnce++
		case err == nil && res.Status == chat.Queued:
			st.queued++
		case errors.Is(err, chat.ErrExpired) && res.Status == chat.Queued:
			st.queued++
		default:
			fail("%v: Wait says %v, %v; want delivered or queued, or queued and expired", p, res.Status, err)
			continue
		}
		if res.Seq == 0 {
			fail("%v: no row in the sender's store (Seq 0)", p)
			continue
		}
		row, rerr := p.from.Store().Get(ctx, res.Seq)
		if rerr != nil || row.Text != p.text || row.Dir != store.Out {
			fail("%v: row %d of the sender's store is %+v (%v)", p, res.Seq, row, rerr)
			continue
		}
		dev, eev := delivered[p.from][row.Seq], expired[p.from][row.Seq]
		if len(eev) > 1 {
			fail("%v: reported expired %d times", p, len(eev))
		}
		for _, ev := range eev {
			if ev.Time.Before(row.Expires) {
				fail("%v: reported expired at %v, before its TTL ended at %v", p, c.at(ev.Time), c.at(row.Expires))
			}
		}
		switch row.Status {
		case store.Delivered:
			if len(got) != 1 {
				fail("%v: delivered (the sender's store says so) but shown %d times", p, len(got))
			}
			if err != nil {
				fail("%v: Wait said %v, yet the sender's store says delivered", p, err)
			}
			if len(eev) > 0 {
				fail("%v: delivered, and reported expired at %v", p, c.at(eev[0].Time))
			}
			if res.Status == chat.Queued {
				st.deliveredLater++
				if len(dev) != 1 {
					fail("%v: queued, then delivered: %d EventDelivered, want 1", p, len(dev))
				}
			}
		case store.Expired:
			st.expired++
			if !s.ShortTTL {
				fail("%v: expired with the default TTL of %v", p, chat.DefaultMessageTTL)
			}
			if res.Status == chat.Delivered {
				fail("%v: Wait said delivered, yet the sender's store says expired", p)
			}
			if len(dev) > 0 {
				fail("%v: expired, and reported delivered at %v", p, c.at(dev[0].Time))
			}
			if len(got) == 1 {
				st.shownExpired++
				rcv := got[0].msg.Received
				if !rcv.Before(row.Expires) {
					fail("%v: shown at %v, after its TTL ended at %v", p, c.at(rcv), c.at(row.Expires))
				}
				if len(eev) > 0 && !rcv.Before(eev[0].Time) {
					fail("%v: shown at %v, after the sender reported it expired at %v", p, c.at(rcv), c.at(eev[0].Time))
				}
			}
		default:
			fail("%v: the sender's store says %v at the end, want delivered or expired", p, row.Status)
		}
	}

	// Order per sender and receiver, among what was shown.
	for _, r := range peers {
		last := map[*peer]*posted{}
		for _, rec := range r.Recs() {
			for _, m := range rec.Messages() {
				p, ok := byText[m.Text]
				if !ok || p.to != r {
					continue
				}
				if q := last[p.from]; q != nil && p.nth <= q.nth {
					fail("%v showed %v after %v: not the order they were posted in", r, p, q)
				}
				last[p.from] = p
			}
		}
	}
	return errs
}

// queueExamples run before the random schedules, so that every outcome
// the property checks is reached whatever rapid draws (a random draw
// rarely keeps a peer away past the short TTL): a receiver that quit
// while messages were posted to it comes back in time (they are queued,
// then delivered), or after their TTL (they expire, and are never shown).
var queueExamples = []queueSchedule{
	{Peers: 2, Seed: 1, Ops: []queueOp{
		{Kind: queueQuit, A: 1}, {Kind: queueSend, A: 0, B: 1, N: 3},
		{Kind: queueWait, D: 3 * time.Second}, {Kind: queueRestart, A: 1},
	}},
	{Peers: 3, Seed: 2, ShortTTL: true, Ops: []queueOp{
		{Kind: queueQuit, A: 1}, {Kind: queueSend, A: 0, B: 1, N: 3}, {Kind: queueSend, A: 2, B: 1, N: 2},
		{Kind: queueWait, D: queueTTL + 5*time.Second}, {Kind: queueRestart, A: 1},
	}},
}

// Random schedules of messages between two to four of our nodes (posted
// in bursts, so that they pipeline) with quits, crashes and restarts of
// either side, partitions (two-way and one-way) and heals, datagram loss
// and waits; half the schedules give messages a TTL of 20 s, so that
// some expire. See runQueueSchedule for the invariants: in short, every
// message is delivered exactly once or reported expired (and then shown at
// most once, before it expired), in order per pair, never twice across
// restarts. The fixed queueExamples run first and must between them
// deliver messages at once, queue and deliver them later, and expire
// them.
func TestPropertyQueue(t *testing.T) {
	var ex queueStats
	runExamples(t, queueExamples, func(s queueSchedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s queueSchedule) []error {
			return runQueueSchedule(t, nw, s, &ex)
		})
	t.Logf("examples: %s", &ex)
	for what, n := range map[string]int{"delivered at once": ex.deliveredAtOnce, "queued, then delivered": ex.deliveredLater, "expired": ex.expired} {
		if n == 0 {
			t.Errorf("no message was %s in the fixed examples: %v", what, &ex)
		}
	}

	withRapidChecks(t, queueSchedules)
	var st queueStats
	checkSimulated(t, drawQueueSchedule, func(s queueSchedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s queueSchedule) []error {
			return runQueueSchedule(t, nw, s, &st)
		})
	t.Logf("%s", &st)
}

// queueStats sums what the queue schedules did, to show that messages
// are delivered at once, queued, delivered later and expired.
type queueStats struct {
	schedules                                   int
	posts, refused, deliveredAtOnce, queued     int
	deliveredLater, expired, shownExpired, hung int
	simulated, end                              time.Duration
	faults                                      map[netsim.FaultKind]int64
}

func (st *queueStats) add(nw *netsim.Network) {
	st.schedules++
	st.simulated += nw.Now()
	if st.faults == nil {
		st.faults = map[netsim.FaultKind]int64{}
	}
	for k, v := range nw.FaultCounts() {
		st.faults[k] += v
	}
}

func (st *queueStats) String() string {
	kinds := make([]string, 0, len(st.faults))
	for k, v := range st.faults {
		if v > 0 {
			kinds = append(kinds, fmt.Sprintf("%s:%d", k, v))
		}
	}
	slices.Sort(kinds)
	return fmt.Sprintf("%d schedules, %v simulated (the longest end %v); %d posts: %d refused, %d delivered at once, %d queued (%d delivered later, %d expired, %d of those shown before they expired; %d whose Wait hung, the known bug); faults %v",
		st.schedules, st.simulated.Round(time.Second), st.end.Round(time.Millisecond), st.posts, st.refused, st.deliveredAtOnce,
		st.queued, st.deliveredLater, st.expired, st.shownExpired, st.hung, kinds)
}

// A Post in the instant its node closes learns its outcome: Close settles
// every waiting Post as Queued, and the message stays in the store.
// (Found by TestPropertyQueue.) alice posts three messages to bob, each
// letting the network settle but the last, so that her queue's runner is
// dialling when she crashes; a seed in about fifteen leaves the last
// Post's Wait blocked for ever: its commit lands after Close settled the
// waiting Posts, and the runner, stopped by the Close while a wake-up was
// pending, left its outbox marked running, so the push of that commit
// neither starts a runner nor settles the Post. The order of those
// goroutines within one instant is not fixed by the seed, so the test
// tries up to 100 seeds; a Wait left blocked fails it.
func TestQueuePostRacingClose(t *testing.T) {
	for seed := range uint64(100) {
		var hung []string
		netsim.Run(t, seed, nil, func(t *testing.T, nw *netsim.Network) {
			c := newCluster(t, nw)
			defer c.closeAll()
			nw.SetDefaultLink(lanLink)
			hs := addHosts(nw, nw.AddSegment("lan"), "h", 2)
			alice, bob := c.start(hs[0], "alice"), c.start(hs[1], "bob")
			nw.RunFor(discoveryBound(lanLink) + quantum)
			var outs []*chat.Outgoing
			for i := range 3 {
				o, err := alice.Chat().Post(t.Context(), "bob", fmt.Sprintf("racing %d", i))
				if err != nil {
					t.Fatal(err)
				}
				outs = append(outs, o)
				if i < 2 {
					nw.Settle()
				}
			}
			alice.Crash()
			nw.RunFor(time.Second)
			for i, o := range outs {
				select {
				case <-o.Done():
					if res, err := o.Wait(t.Context()); err != nil || res.Status != chat.Queued && res.Status != chat.Delivered {
						t.Errorf("post %d: %v %v, want queued or delivered", i, res.Status, err)
					}
				default:
					hung = append(hung, fmt.Sprintf("racing %d", i))
				}
			}
			// Nothing is lost, hung or not: the next run delivers.
			alice.restart()
			if !nw.RunUntil(func() bool { return len(shownTexts(bob)) == 3 }, discoveryBound(lanLink)+rejoinDrain(lanLink)) {
				t.Errorf("bob showed %q, want the 3 messages", shownTexts(bob))
			}
		})
		if len(hung) > 0 {
			msg := fmt.Sprintf("seed %d: the Wait of %q never returned after alice's Close", seed, hung)
			if knownCloseHang {
				t.Skipf("known client bug (client/chat outbox: run's exits on Close ignore stopUnlessWoken's false and leave the outbox running): %s", msg)
			}
			t.Fatal(msg)
		}
		if t.Failed() {
			return
		}
	}
}

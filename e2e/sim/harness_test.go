package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/chat/chattest"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/e2e/simchat"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// The simulated host is what both our node and the original's doubles run on.
var (
	_ chat.Network     = (*netsim.Host)(nil)
	_ original.Network = (*netsim.Host)(nil)
)

// quantum is netsim's default delivery quantum: a packet due within a
// quantum is delivered at its end, so every hop may take up to one quantum
// more than its link's latency and jitter.
const quantum = time.Millisecond

// lanLink is a switched LAN: sub-millisecond latency, a little jitter so
// that datagrams reorder.
var lanLink = netsim.Link{Latency: 500 * time.Microsecond, Jitter: time.Millisecond}

// hop bounds the time one datagram or stream segment takes on link l.
func hop(l netsim.Link) time.Duration { return l.Latency + l.Jitter + quantum }

// steadyMax is the longest gap between two steady announces of our node:
// the interval stretched by its jitter.
func steadyMax(interval time.Duration) time.Duration {
	return time.Duration(float64(interval) * (1 + chat.AnnounceJitter))
}

// lastBurst is when, after start, a node sends its last start-up announce.
func lastBurst() time.Duration {
	b := chat.StartupBurst()
	return b[len(b)-1]
}

// simTest runs body in a fresh simulated network (netsim.Test: seeded by
// NETSIM_SEED or the test name, replay command logged on failure) with a
// cluster whose nodes are closed when body returns.
func simTest(t *testing.T, body func(t *testing.T, c *cluster), opts ...netsim.Options) {
	t.Helper()
	netsim.Test(t, clusterBody(body), opts...)
}

// clusterBody adapts a cluster body to netsim's body signature.
func clusterBody(body func(t *testing.T, c *cluster)) func(t *testing.T, nw *netsim.Network) {
	return func(t *testing.T, nw *netsim.Network) {
		c := newCluster(t, nw)
		defer c.closeAll()
		body(t, c)
	}
}

// cluster is the set of nodes of one scenario.
type cluster struct {
	t     *testing.T
	nw    *netsim.Network
	g     *simchat.Group
	seeds *rand.Rand // node seeds, derived from the network's seed
	// closers run at the end, last first (servers, doubles).
	closers []func()
}

func newCluster(t *testing.T, nw *netsim.Network) *cluster {
	g := simchat.NewGroup(nw)
	return &cluster{t: t, nw: nw, g: g, seeds: g.Seeds()}
}

// at converts a node's clock reading to simulated time since the start.
func (c *cluster) at(tm time.Time) time.Duration { return c.g.At(tm) }

func (c *cluster) closeAll() {
	c.g.Close()
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

func (c *cluster) onClose(f func()) { c.closers = append(c.closers, f) }

// peer is one of our nodes on its host, across restarts.
type peer struct {
	*simchat.Node
	c *cluster
}

// start starts one of our nodes called nick on h. tweak adjusts its
// config (mode, timeouts) on this start and every restart.
func (c *cluster) start(h *netsim.Host, nick string, tweak ...func(*chat.Config)) *peer {
	c.t.Helper()
	n, err := c.g.Start(h, nick, tweak...)
	if err != nil {
		c.t.Fatal(err)
	}
	return &peer{Node: n, c: c}
}

// restart brings a stopped peer back on its host: a new instance.
func (p *peer) restart() {
	p.c.t.Helper()
	if err := p.Restart(); err != nil {
		p.c.t.Fatal(err)
	}
}

// entry is one line of a /peers view, as compared by the scenarios.
type entry = simchat.Entry

func sortEntries(v []entry) { simchat.SortEntries(v) }

// expected is the view p should have of the live peers among set.
func expected(p *peer, set []*peer) []entry {
	var v []entry
	for _, q := range set {
		if q != p && q.Up() {
			v = append(v, q.Entry())
		}
	}
	sortEntries(v)
	return v
}

// viewsErr reports every live peer of set whose view is not exactly the
// other live peers of set.
func viewsErr(set []*peer) error {
	var errs []error
	for _, p := range set {
		if !p.Up() {
			continue
		}
		got, want := p.View(), expected(p, set)
		if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%v lists %v, want %v", p, got, want))
		}
	}
	return errors.Join(errs...)
}

func viewsMatch(set []*peer) bool { return viewsErr(set) == nil }

// listsNick reports whether p's node lists anyone called nick.
func listsNick(p *peer, nick string) bool {
	for _, rp := range p.Chat().Peers() {
		if rp.Nickname == nick {
			return true
		}
	}
	return false
}

// discoveries returns when p's current instance first learnt of each
// instance, in simulated time.
func discoveries(p *peer) map[string]time.Duration {
	at := map[string]time.Duration{}
	for _, ev := range p.Rec().All() {
		switch ev.Kind {
		case chat.EventPeerJoined, chat.EventPeerRestarted, chat.EventPeerUpdated:
			if _, ok := at[ev.Peer.Instance]; !ok {
				at[ev.Peer.Instance] = p.c.at(ev.Time)
			}
		}
	}
	return at
}

// fullDiscovery returns when the last pair of set found each other.
func fullDiscovery(t *testing.T, set []*peer) time.Duration {
	t.Helper()
	var last time.Duration
	for _, p := range set {
		if !p.Up() {
			continue
		}
		at := discoveries(p)
		for _, q := range set {
			if p == q || !q.Up() {
				continue
			}
			d, ok := at[q.Instance()]
			if !ok {
				t.Fatalf("%v has no event for %v", p, q)
			}
			last = max(last, d)
		}
	}
	return last
}

// addHosts adds n hosts named prefix1..prefixN.
func addHosts(nw *netsim.Network, seg *netsim.Segment, prefix string, n int) []*netsim.Host {
	hs := make([]*netsim.Host, n)
	for i := range hs {
		hs[i] = nw.AddHost(fmt.Sprintf("%s%d", prefix, i+1), seg)
	}
	return hs
}

// message is one message a scenario sent, and what became of it.
type message struct {
	from, to *peer
	name     string // what the sender asked for (nickname or selector)
	text     string
	at, done time.Duration // when Send was called and when it returned
	res      chat.SendResult
	err      error
}

func (m *message) String() string {
	return fmt.Sprintf("%q %v->%v at %v: %v %v", m.text, m.from, m.to, m.at, m.res.Status, m.err)
}

// send sends one message and records the outcome.
func send(ctx context.Context, from, to *peer, name, text string) *message {
	m := &message{from: from, to: to, name: name, text: text, at: from.c.nw.Now()}
	m.res, m.err = from.Chat().Send(ctx, name, text)
	m.done = from.c.nw.Now()
	return m
}

// sendAllPairs has every peer of set send one message to every other, each
// sender in its own goroutine (one message at a time, like a user), and
// returns the messages once every send has returned.
func sendAllPairs(ctx context.Context, set []*peer, tag string) []*message {
	out := make([][]*message, len(set))
	var wg sync.WaitGroup
	for i, p := range set {
		wg.Go(func() {
			for _, q := range set {
				if q != p {
					out[i] = append(out[i], send(ctx, p, q, q.Nick(), fmt.Sprintf("%s %s->%s", tag, p.Nick(), q.Nick())))
				}
			}
		})
	}
	wg.Wait()
	return slices.Concat(out...)
}

// receipt is one message as a node showed it.
type receipt struct {
	at  *peer
	rec *chattest.Recorder
	msg chat.Message
}

// receipts returns every message shown by any instance of the peers, keyed
// by text.
func receipts(set []*peer) map[string][]receipt {
	got := map[string][]receipt{}
	for _, p := range set {
		for _, r := range p.Recs() {
			for _, m := range r.Messages() {
				got[m.Text] = append(got[m.Text], receipt{p, r, m})
			}
		}
	}
	return got
}

// checkExactlyOnce checks msgs with deliveryErrs and returns the number
// of sends that did not end Delivered or Sent at once (an error, or
// Queued). Texts must be unique.
func checkExactlyOnce(t *testing.T, set []*peer, msgs []*message) (notDone int) {
	t.Helper()
	for _, err := range deliveryErrs(t.Context(), set, msgs) {
		t.Error(err)
	}
	for _, m := range msgs {
		if m.err != nil || m.res.Status == chat.Queued {
			notDone++
		}
	}
	return notDone
}

// deliveryErrs checks what became of msgs, one error per violation:
//
//   - a send that ended Delivered or Sent arrived exactly once, and its
//     row in the sender's store (SendResult.Seq) says so;
//   - a send that ended Queued arrived at most once; exactly once if the
//     sender's store now says Delivered; and it is not still Pending while
//     its sender and its receiver both run: a scenario calls deliveryErrs
//     once its faults are healed and the queues drained (see drain);
//   - a send that failed arrived at most once;
//   - every arrival is at the peer the message was sent to, from its
//     sender's nickname and address, and no text arrives that was never
//     sent.
//
// Texts must be unique.
func deliveryErrs(ctx context.Context, set []*peer, msgs []*message) []error {
	got := receipts(set)
	var errs []error
	sentTexts := map[string]bool{}
	for _, m := range msgs {
		sentTexts[m.text] = true
		rs := got[m.text]
		errs = append(errs, outcomeErrs(ctx, m, len(rs))...)
		for _, r := range rs {
			if r.at != m.to {
				errs = append(errs, fmt.Errorf("message %v arrived at %v, the wrong peer", m, r.at))
			}
			if r.msg.From != m.from.Nick() {
				errs = append(errs, fmt.Errorf("message %v arrived from %q, want %q", m, r.msg.From, m.from.Nick()))
			}
			if r.msg.Remote.Addr() != m.from.Host().IP() {
				errs = append(errs, fmt.Errorf("message %v came from address %v, want the sender's %v", m, r.msg.Remote, m.from.Host().IP()))
			}
		}
	}
	texts := make([]string, 0, len(got))
	for text := range got {
		texts = append(texts, text)
	}
	slices.Sort(texts)
	for _, text := range texts {
		if !sentTexts[text] {
			errs = append(errs, fmt.Errorf("message %q arrived at %v but was never sent", text, got[text][0].at))
		}
	}
	return errs
}

// outcomeErrs checks one message's outcome against the number of times it
// arrived (deliveryErrs' rules).
func outcomeErrs(ctx context.Context, m *message, arrived int) []error {
	if m.err != nil {
		if arrived > 1 {
			return []error{fmt.Errorf("failed message %v arrived %d times, want at most once", m, arrived)}
		}
		return nil
	}
	row, err := storedRow(ctx, m)
	if err != nil {
		return []error{err}
	}
	var errs []error
	switch m.res.Status {
	case chat.Delivered, chat.Sent:
		if arrived != 1 {
			errs = append(errs, fmt.Errorf("message %v arrived %d times, want exactly once", m, arrived))
		}
		want := store.Delivered
		if m.res.Status == chat.Sent {
			want = store.Sent
		}
		if row.Status != want {
			errs = append(errs, fmt.Errorf("message %v: the sender's store says %v, want %v", m, row.Status, want))
		}
	case chat.Queued:
		switch {
		case row.Status == store.Delivered && arrived != 1:
			errs = append(errs, fmt.Errorf("queued message %v, delivered since, arrived %d times, want exactly once", m, arrived))
		case row.Status != store.Delivered && arrived > 1:
			errs = append(errs, fmt.Errorf("queued message %v (now %v) arrived %d times, want at most once", m, row.Status, arrived))
		}
		switch row.Status {
		case store.Delivered, store.Expired:
		case store.Pending:
			if m.from.Up() && m.to.Up() {
				errs = append(errs, fmt.Errorf("queued message %v still waits (Pending) though the network healed and both ends run", m))
			}
		default:
			errs = append(errs, fmt.Errorf("queued message %v: the sender's store says %v", m, row.Status))
		}
	default:
		errs = append(errs, fmt.Errorf("message %v: no error and no status", m))
	}
	return errs
}

// storedRow returns the row of m, a send without error, in its sender's
// store.
func storedRow(ctx context.Context, m *message) (store.Message, error) {
	if m.res.Seq == 0 {
		return store.Message{}, fmt.Errorf("message %v: no row in the sender's store (Seq 0)", m)
	}
	row, err := m.from.Store().Get(ctx, m.res.Seq)
	if err != nil {
		return row, fmt.Errorf("message %v: its row %d in the sender's store: %w", m, m.res.Seq, err)
	}
	if row.Text != m.text || row.Dir != store.Out {
		return row, fmt.Errorf("message %v: row %d of the sender's store holds %v %q", m, m.res.Seq, row.Dir, row.Text)
	}
	return row, nil
}

// waiting returns the messages of msgs that are still queued (Pending in
// the sender's store) while both their sender and their receiver run.
// done caches the messages whose queueing ended (a row never goes back to
// Pending).
func waiting(ctx context.Context, msgs []*message, done map[*message]bool) ([]*message, error) {
	var out []*message
	for _, m := range msgs {
		if m.err != nil || m.res.Status != chat.Queued || done[m] {
			continue
		}
		row, err := storedRow(ctx, m)
		if err != nil {
			return nil, err
		}
		switch {
		case row.Status != store.Pending:
			done[m] = true
		case m.from.Up() && m.to.Up():
			out = append(out, m)
		}
	}
	return out, nil
}

// drainErr runs until no message of msgs waits in a queue between two
// running peers (see waiting), for at most bound; it returns how long
// that took, and an error naming the messages still waiting past bound.
func drainErr(ctx context.Context, c *cluster, msgs []*message, bound time.Duration) (time.Duration, error) {
	start := c.nw.Now()
	done := map[*message]bool{}
	var left []*message
	var err error
	c.nw.RunUntil(func() bool {
		left, err = waiting(ctx, msgs, done)
		return err == nil && len(left) == 0
	}, bound)
	took := c.nw.Now() - start
	switch {
	case err != nil:
		return took, err
	case len(left) > 0:
		return took, fmt.Errorf("%d messages still queued %v after the heal (bound %v): %v", len(left), took, bound, left)
	}
	return took, nil
}

// drain is drainErr for a scenario: it fails t past bound and logs how
// long the queues took to drain.
func drain(t *testing.T, c *cluster, msgs []*message, bound time.Duration, what string) time.Duration {
	t.Helper()
	took, err := drainErr(t.Context(), c, msgs, bound)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return took
	}
	t.Logf("%s: queues drained in %v (bound %v)", what, took, bound)
	return took
}

// The outbox retries a peer that is listed but cannot be reached after a
// backoff that starts at queueRetryMin and doubles up to queueRetryMax
// (client/chat's outbox); a registry change about the peer (a join, a
// restart, an update) retries at once.
const (
	queueRetryMin = 500 * time.Millisecond
	queueRetryMax = 30 * time.Second
)

// sessionHops is how many hops a message on a new session takes to be
// acknowledged: the SYN and its answer, the three Noise XX handshake
// messages (the initiator's last one goes with the first transport frame),
// and the ack.
const sessionHops = 6

// isClearFailure reports whether err is one of the failures Send promises
// (rather than, say, a bare io error or a nil).
func isClearFailure(err error) bool {
	var amb *registry.AmbiguousError
	return errors.Is(err, chat.ErrTimeout) || errors.Is(err, chat.ErrRefused) ||
		errors.Is(err, chat.ErrBroken) || errors.Is(err, chat.ErrClosed) ||
		errors.Is(err, chat.ErrExpired) || errors.Is(err, registry.ErrUnknownPeer) || errors.As(err, &amb)
}

// splitHosts splits hosts in two by the bits of mask: host i goes to a
// when bit i is set, else to b.
func splitHosts(hosts []*netsim.Host, mask uint) (a, b []*netsim.Host) {
	for i, h := range hosts {
		if mask&(1<<i) != 0 {
			a = append(a, h)
		} else {
			b = append(b, h)
		}
	}
	return a, b
}

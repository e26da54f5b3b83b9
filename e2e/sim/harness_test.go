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
	c.g.QuitAll()
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

// checkExactlyOnce checks that every message of msgs whose send succeeded
// arrived exactly once, at the peer it was sent to, with its sender and
// text, and that a failed send arrived at most once. It returns the number
// of failed sends. Texts must be unique.
func checkExactlyOnce(t *testing.T, set []*peer, msgs []*message) (failed int) {
	t.Helper()
	for _, err := range deliveryErrs(set, msgs) {
		t.Error(err)
	}
	for _, m := range msgs {
		if m.err != nil {
			failed++
		}
	}
	return failed
}

// deliveryErrs is checkExactlyOnce's verdict, one error per violation.
func deliveryErrs(set []*peer, msgs []*message) []error {
	got := receipts(set)
	var errs []error
	sentTexts := map[string]bool{}
	for _, m := range msgs {
		sentTexts[m.text] = true
		rs := got[m.text]
		switch {
		case m.err == nil && len(rs) != 1:
			errs = append(errs, fmt.Errorf("message %v arrived %d times, want exactly once", m, len(rs)))
		case m.err != nil && len(rs) > 1:
			errs = append(errs, fmt.Errorf("failed message %v arrived %d times, want at most once", m, len(rs)))
		}
		if m.err == nil && m.res.Status != chat.Delivered && m.res.Status != chat.Sent {
			errs = append(errs, fmt.Errorf("message %v: no error and no status", m))
		}
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

// isClearFailure reports whether err is one of the failures Send promises
// (rather than, say, a bare io error or a nil).
func isClearFailure(err error) bool {
	var amb *registry.AmbiguousError
	return errors.Is(err, chat.ErrTimeout) || errors.Is(err, chat.ErrRefused) ||
		errors.Is(err, chat.ErrBroken) || errors.Is(err, chat.ErrClosed) ||
		errors.Is(err, registry.ErrUnknownPeer) || errors.As(err, &amb)
}

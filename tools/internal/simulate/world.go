package simulate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/chat/chattest"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// world is the set of real chat nodes of one chat scenario, on one
// simulated network.
type world struct {
	t     *testing.T
	nw    *netsim.Network
	seeds *rand.Rand // node seeds and scenario choices, derived from the network's seed
	t0    time.Time  // the bubble's clock when the network was made
	nodes []*node
}

func newWorld(t *testing.T, nw *netsim.Network) *world {
	return &world{
		t:     t,
		nw:    nw,
		seeds: rand.New(rand.NewPCG(nw.Seed(), 0x5eed)),
		t0:    time.Now().Add(-nw.Now()),
	}
}

// at converts a node's clock reading to simulated time since the start.
func (w *world) at(tm time.Time) time.Duration { return tm.Sub(w.t0) }

// node is one real Parlance node (chat.Node) on its host, across restarts.
type node struct {
	w     *world
	host  *netsim.Host
	nick  string
	tweak func(*chat.Config)

	n    *chat.Node         // nil while down
	rec  *chattest.Recorder // the current (or last) instance's events
	recs []*chattest.Recorder
}

// start starts a node called nick on h.
func (w *world) start(h *netsim.Host, nick string, tweak func(*chat.Config)) (*node, error) {
	p := &node{w: w, host: h, nick: nick, tweak: tweak}
	if err := p.boot(); err != nil {
		return nil, err
	}
	w.nodes = append(w.nodes, p)
	return p, nil
}

func (p *node) boot() error {
	cfg := chat.Config{
		Network:  p.host,
		Nickname: p.nick,
		Rand:     rand.New(rand.NewPCG(p.w.seeds.Uint64(), p.w.seeds.Uint64())),
	}
	if p.tweak != nil {
		p.tweak(&cfg)
	}
	n, err := chat.Start(p.host.Context(), cfg)
	if err != nil {
		return fmt.Errorf("start %s on %s: %w", p.nick, p.host.Name(), err)
	}
	p.n = n
	p.rec = chattest.Record(n)
	p.recs = append(p.recs, p.rec)
	return nil
}

func (p *node) up() bool { return p.n != nil }

// quit closes the node as a user's /quit does: it says goodbye.
func (p *node) quit() {
	p.n.Close()
	<-p.rec.Done()
	p.n = nil
}

// crash cuts the power of the node's host: no goodbye.
func (p *node) crash() {
	p.host.Crash()
	p.n.Close() // reaps the node's goroutines; its context is gone already
	<-p.rec.Done()
	p.n = nil
}

// restart brings a stopped node back on its host: a new instance.
func (p *node) restart() error {
	if !p.host.Up() {
		p.host.Restart()
	}
	return p.boot()
}

func (p *node) addr() netip.AddrPort { return netip.AddrPortFrom(p.host.IP(), p.n.Port()) }

func (p *node) instance() string { return p.n.Instance() }

func (p *node) String() string { return p.nick }

// closeAll quits every running node.
func (w *world) closeAll() {
	for _, p := range w.nodes {
		if p.up() {
			p.quit()
		}
	}
}

// entry is one line of a /peers view.
type entry struct{ Nick, Addr, Instance string }

func (p *node) view() []entry {
	var v []entry
	for _, rp := range p.n.Peers() {
		v = append(v, entry{rp.Nickname, rp.Addr.String(), rp.Instance})
	}
	sortEntries(v)
	return v
}

func sortEntries(v []entry) {
	slices.SortFunc(v, func(a, b entry) int {
		return strings.Compare(a.Nick+a.Addr+a.Instance, b.Nick+b.Addr+b.Instance)
	})
}

// viewsMatch reports whether every running node of set lists exactly the
// other running nodes of set.
func viewsMatch(set []*node) bool {
	live := 0
	for _, p := range set {
		if p.up() {
			live++
		}
	}
	for _, p := range set { // cheap test first
		if p.up() && len(p.n.Peers()) != live-1 {
			return false
		}
	}
	for _, p := range set {
		if !p.up() {
			continue
		}
		var want []entry
		for _, q := range set {
			if q != p && q.up() {
				want = append(want, entry{q.nick, q.addr().String(), q.instance()})
			}
		}
		sortEntries(want)
		if !slices.Equal(p.view(), want) {
			return false
		}
	}
	return true
}

// listsInstance reports whether p's node lists the instance inst.
func listsInstance(p *node, inst string) bool {
	for _, rp := range p.n.Peers() {
		if rp.Instance == inst {
			return true
		}
	}
	return false
}

var learnt = []chat.EventKind{chat.EventPeerJoined, chat.EventPeerRestarted, chat.EventPeerUpdated}

var dropped = []chat.EventKind{chat.EventPeerLeft, chat.EventPeerExpired}

// fullDiscovery returns when the last pair of running nodes of set first
// learnt of each other, from their events; ok is false if some pair never
// did.
func fullDiscovery(w *world, set []*node) (last time.Duration, ok bool) {
	for _, p := range set {
		if !p.up() {
			continue
		}
		for _, q := range set {
			if p == q || !q.up() {
				continue
			}
			ev, found := p.rec.FirstAbout(q.instance(), learnt...)
			if !found {
				return 0, false
			}
			last = max(last, w.at(ev.Time))
		}
	}
	return last, true
}

// message is one message a scenario sent, and what became of it.
type message struct {
	from, to *node
	text     string
	at, took time.Duration
	res      chat.SendResult
	err      error
}

// sendAll sends the messages of pairs, each sender in its own goroutine
// sending one message at a time (as a user does), and returns them once
// every send has returned.
func (w *world) sendAll(ctx context.Context, pairs [][2]*node, tag string) []*message {
	bySender := map[*node][]*message{}
	var order []*node
	for _, pr := range pairs {
		from, to := pr[0], pr[1]
		if _, ok := bySender[from]; !ok {
			order = append(order, from)
		}
		bySender[from] = append(bySender[from], &message{from: from, to: to,
			text: fmt.Sprintf("%s %s->%s #%d", tag, from.nick, to.nick, len(bySender[from]))})
	}
	var wg sync.WaitGroup
	for _, from := range order {
		wg.Go(func() {
			for _, m := range bySender[from] {
				m.at = w.nw.Now()
				m.res, m.err = from.n.Send(ctx, m.to.nick, m.text)
				m.took = w.nw.Now() - m.at
			}
		})
	}
	wg.Wait()
	var out []*message
	for _, from := range order {
		out = append(out, bySender[from]...)
	}
	return out
}

// ring pairs each node of set with the next k nodes (wrapping round).
func ring(set []*node, k int) [][2]*node {
	var pairs [][2]*node
	for i, p := range set {
		for j := 1; j <= k && j < len(set); j++ {
			pairs = append(pairs, [2]*node{p, set[(i+j)%len(set)]})
		}
	}
	return pairs
}

// tally is what became of a batch of messages.
type tally struct {
	Sent, Delivered, Failed int
	// Violations: a delivered message that did not arrive exactly once at
	// its recipient from its sender, a failed one that arrived more than
	// once, or a message that arrived but was never sent.
	Violations int
	// Late: failed sends that nevertheless arrived (once), for example
	// after a partition healed.
	Late int
	// Unclear: failed sends whose error is none of those Send promises.
	Unclear int
	Errors  map[string]int // failed sends by kind of error
}

// check compares msgs with every message any instance of set showed.
func check(set []*node, msgs []*message) tally {
	got := map[string][]*node{}
	from := map[string]string{}
	for _, p := range set {
		for _, r := range p.recs {
			for _, ev := range r.All() {
				if ev.Kind == chat.EventMessage {
					got[ev.Message.Text] = append(got[ev.Message.Text], p)
					from[ev.Message.Text] = ev.Message.From
				}
			}
		}
	}
	tl := tally{Errors: map[string]int{}}
	sent := map[string]bool{}
	for _, m := range msgs {
		sent[m.text] = true
		tl.Sent++
		rs := got[m.text]
		if m.err == nil {
			tl.Delivered++
			if len(rs) != 1 || rs[0] != m.to || from[m.text] != m.from.nick {
				tl.Violations++
			}
			continue
		}
		tl.Failed++
		tl.Errors[errKind(m.err)]++
		if errKind(m.err) == "unclear" {
			tl.Unclear++
		}
		switch {
		case len(rs) > 1 || (len(rs) == 1 && rs[0] != m.to):
			tl.Violations++
		case len(rs) == 1:
			tl.Late++
		}
	}
	for text := range got {
		if !sent[text] {
			tl.Violations++
		}
	}
	return tl
}

func (tl tally) String() string {
	s := fmt.Sprintf("sent %d, delivered %d, failed %d", tl.Sent, tl.Delivered, tl.Failed)
	if tl.Failed > 0 {
		var kinds []string
		for k, v := range tl.Errors {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
		}
		slices.Sort(kinds)
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	if tl.Violations == 0 {
		s += "; every delivered message arrived exactly once"
	} else {
		s += fmt.Sprintf("; %d DELIVERY VIOLATIONS (lost, duplicated, misrouted or never sent)", tl.Violations)
	}
	if tl.Late > 0 {
		s += fmt.Sprintf("; %d failed sends arrived later anyway, once", tl.Late)
	}
	return s
}

// errKind names the failure Send reported.
func errKind(err error) string {
	var amb *registry.AmbiguousError
	switch {
	case errors.Is(err, chat.ErrTimeout):
		return "timeout"
	case errors.Is(err, chat.ErrRefused):
		return "refused"
	case errors.Is(err, chat.ErrBroken):
		return "connection lost"
	case errors.Is(err, chat.ErrClosed):
		return "closed"
	case errors.Is(err, registry.ErrUnknownPeer):
		return "unknown peer"
	case errors.As(err, &amb):
		return "ambiguous"
	}
	return "unclear"
}

// ms formats a simulated duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// secs formats a simulated duration in seconds.
func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

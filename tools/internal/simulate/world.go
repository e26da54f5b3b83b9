package simulate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/e2e/simchat"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// world is the set of real chat nodes of one chat scenario, on one
// simulated network.
type world struct {
	t     *testing.T
	nw    *netsim.Network
	g     *simchat.Group
	seeds *rand.Rand // node seeds and scenario choices, derived from the network's seed
}

func newWorld(t *testing.T, nw *netsim.Network) *world {
	g := simchat.NewGroup(nw)
	return &world{t: t, nw: nw, g: g, seeds: g.Seeds()}
}

// at converts a node's clock reading to simulated time since the start.
func (w *world) at(tm time.Time) time.Duration { return w.g.At(tm) }

// node is one real Parlance node (chat.Node) on its host, across restarts.
type node struct {
	*simchat.Node
	w *world
}

// start starts a node called nick on h; tweak, if not nil, adjusts its
// config.
func (w *world) start(h *netsim.Host, nick string, tweak func(*chat.Config)) (*node, error) {
	var tweaks []func(*chat.Config)
	if tweak != nil {
		tweaks = append(tweaks, tweak)
	}
	n, err := w.g.Start(h, nick, tweaks...)
	if err != nil {
		return nil, err
	}
	return &node{Node: n, w: w}, nil
}

func (p *node) String() string { return p.Nick() }

// closeAll quits every running node.
func (w *world) closeAll() { w.g.Close() }

// viewsMatch reports whether every running node of set lists exactly the
// other running nodes of set.
func viewsMatch(set []*node) bool {
	live := 0
	for _, p := range set {
		if p.Up() {
			live++
		}
	}
	for _, p := range set { // cheap test first
		if p.Up() && len(p.Chat().Peers()) != live-1 {
			return false
		}
	}
	for _, p := range set {
		if !p.Up() {
			continue
		}
		var want []simchat.Entry
		for _, q := range set {
			if q != p && q.Up() {
				want = append(want, q.Entry())
			}
		}
		simchat.SortEntries(want)
		if !slices.Equal(p.View(), want) {
			return false
		}
	}
	return true
}

// listsInstance reports whether p's node lists the instance inst.
func listsInstance(p *node, inst string) bool {
	for _, rp := range p.Chat().Peers() {
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
		if !p.Up() {
			continue
		}
		for _, q := range set {
			if p == q || !q.Up() {
				continue
			}
			ev, found := p.Rec().FirstAbout(q.Instance(), learnt...)
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
			text: fmt.Sprintf("%s %s->%s #%d", tag, from.Nick(), to.Nick(), len(bySender[from]))})
	}
	var wg sync.WaitGroup
	for _, from := range order {
		wg.Go(func() {
			for _, m := range bySender[from] {
				m.at = w.nw.Now()
				m.res, m.err = from.Chat().Send(ctx, m.to.Nick(), m.text)
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
	// Queued: sends that ended Queued (the peer was away or unreachable;
	// the message waits in the sender's store); QueuedArrived: those
	// that have arrived since, once each.
	Queued, QueuedArrived int
	// Unclear: failed sends whose error is none of those Send promises.
	Unclear int
	Errors  map[string]int // failed sends by kind of error
}

// check compares msgs with every message any instance of set showed.
func check(set []*node, msgs []*message) tally {
	got := map[string][]*node{}
	from := map[string]string{}
	for _, p := range set {
		for _, r := range p.Recs() {
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
		if m.err == nil && m.res.Status == chat.Queued {
			tl.Queued++
			switch {
			case len(rs) > 1 || (len(rs) == 1 && rs[0] != m.to):
				tl.Violations++
			case len(rs) == 1:
				tl.QueuedArrived++
			}
			continue
		}
		if m.err == nil {
			tl.Delivered++
			if len(rs) != 1 || rs[0] != m.to || from[m.text] != m.from.Nick() {
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
	s := fmt.Sprintf("sent %d, delivered %d, queued %d (arrived since %d), failed %d", tl.Sent, tl.Delivered, tl.Queued, tl.QueuedArrived, tl.Failed)
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

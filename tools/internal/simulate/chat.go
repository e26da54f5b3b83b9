package simulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// MaxChatNodes bounds the chat scenarios: every node is a full Parlance
// node, and LAN discovery traffic grows with the square of the nodes.
const MaxChatNodes = 500

// Facts are what a chat scenario observed, for tests to assert on.
type Facts struct {
	// Discovered: after the start, every node listed every other.
	Discovered bool
	// Discovery is the time from the last node's start until then.
	Discovery time.Duration
	// Messages sums every message the scenario sent.
	Messages tally
	// Dropped (chat-churn): every remaining node dropped every node that
	// quit or crashed. Partitioned (chat-partition): each side dropped the
	// other during the split.
	Dropped bool
	// CrossQueued counts the sends across the partition that the sender
	// queued (chat-partition), CrossArrived those of them that arrived
	// after the heal, CrossSent all of them.
	CrossQueued, CrossArrived, CrossSent int
	// Reregistered counts the nodes that registered with the restarted
	// server again (chat-internet).
	Reregistered int
	// Converged: at the end, every running node listed exactly the other
	// running nodes.
	Converged bool
}

// lanLink is a switched LAN: sub-millisecond latency, a little jitter so
// that datagrams reorder.
var lanLink = netsim.Link{Latency: 500 * time.Microsecond, Jitter: time.Millisecond}

// wanLink joins the segments of chat-internet: 10 ms each way.
var wanLink = netsim.Link{Latency: 10 * time.Millisecond}

// fanout is how many others each node messages in a round.
const fanout = 3

// steady is the longest gap between two steady announces of a node.
var steady = time.Duration(float64(chat.DefaultAnnounceInterval) * (1 + chat.AnnounceJitter))

// runChat runs a chat scenario; it quits every node before it returns.
func runChat(t *testing.T, nw *netsim.Network, cfg Config, out *[]string, f *Facts) {
	w := newWorld(t, nw)
	defer w.closeAll()
	say := func(format string, args ...any) { *out = append(*out, fmt.Sprintf(format, args...)) }
	var err error
	switch cfg.Scenario {
	case "chat-lan":
		err = chatLAN(w, cfg, say, f)
	case "chat-churn":
		err = chatChurn(w, cfg, say, f)
	case "chat-partition":
		err = chatPartition(w, cfg, say, f)
	case "chat-internet":
		err = chatInternet(w, cfg, say, f)
	}
	if err != nil {
		t.Error(err)
	}
}

// startLAN starts n nodes on one segment at random moments within spread,
// in time order, and returns them with the time the last one started.
func startLAN(w *world, n int, spread time.Duration) ([]*node, time.Duration, error) {
	w.nw.SetDefaultLink(lanLink)
	lan := w.nw.AddSegment("lan")
	hosts := make([]*netsim.Host, n)
	offsets := make([]time.Duration, n)
	order := make([]int, n)
	for i := range hosts {
		hosts[i] = w.nw.AddHost(fmt.Sprintf("h%d", i+1), lan)
		offsets[i] = time.Duration(w.seeds.Int64N(int64(spread)))
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(offsets[a] - offsets[b]) })
	nodes := make([]*node, n)
	begin := w.nw.Now()
	for _, i := range order {
		if d := begin + offsets[i] - w.nw.Now(); d > 0 {
			time.Sleep(d)
		}
		p, err := w.start(hosts[i], fmt.Sprintf("p%d", i+1), nil)
		if err != nil {
			return nil, 0, err
		}
		nodes[i] = p
	}
	return nodes, w.nw.Now(), nil
}

// discover waits until every node lists every other and reports when.
func discover(w *world, nodes []*node, last time.Duration, limit time.Duration, say func(string, ...any), f *Facts) {
	w.nw.RunUntil(func() bool { return viewsMatch(nodes) }, limit)
	full, ok := fullDiscovery(w, nodes)
	if ok && viewsMatch(nodes) {
		f.Discovered, f.Discovery = true, full-last
		say("discovery: every node lists every other %s after the last start (at %s)", ms(full-last), secs(full))
		return
	}
	say("discovery: NOT complete %v after the last start", limit)
}

// chatLAN: N nodes start within a second on one LAN, find each other, and
// each messages the next few.
func chatLAN(w *world, cfg Config, say func(string, ...any), f *Facts) error {
	nodes, last, err := lanStart(w, cfg, say, f)
	if err != nil {
		return err
	}
	msgs := w.sendAll(w.t.Context(), ring(nodes, fanout), "hello")
	w.nw.RunFor(time.Second)
	f.Messages = check(nodes, msgs)
	say("messages: each node to the next %d: %v", min(fanout, len(nodes)-1), f.Messages)
	w.nw.RunFor(max(0, cfg.Duration-(w.nw.Now()-last)))
	f.Converged = viewsMatch(nodes)
	say("after %s of steady state: views exact: %v", secs(w.nw.Now()-last), f.Converged)
	return nil
}

func lanStart(w *world, cfg Config, say func(string, ...any), f *Facts) ([]*node, time.Duration, error) {
	nodes, last, err := startLAN(w, cfg.Peers, time.Second)
	if err != nil {
		return nil, 0, err
	}
	say("start: %d nodes on one LAN (latency %v, jitter %v) within %s", len(nodes), lanLink.Latency, lanLink.Jitter, secs(last))
	discover(w, nodes, last, 2*steady, say, f)
	return nodes, last, nil
}

// chatChurn: as chat-lan, then a tenth quit, a tenth crash, and one of
// the crashed restarts.
func chatChurn(w *world, cfg Config, say func(string, ...any), f *Facts) error {
	nodes, _, err := lanStart(w, cfg, say, f)
	if err != nil {
		return err
	}
	msgs := w.sendAll(w.t.Context(), ring(nodes, fanout), "before")
	w.nw.RunFor(7 * time.Second) // into the steady state

	k := max(1, len(nodes)/10)
	perm := w.seeds.Perm(len(nodes))
	quitters, crashers := pick(nodes, perm[:k]), pick(nodes, perm[k:2*k])
	rest := pick(nodes, perm[2*k:])
	type gone struct {
		p     *node
		inst  string
		crash bool
		// heard: when each remaining node last heard it (crashes only).
		heard map[*node]time.Duration
	}
	var departed []gone
	stopAt := w.nw.Now()
	for _, p := range quitters {
		departed = append(departed, gone{p: p, inst: p.Instance()})
		p.Quit()
	}
	for _, p := range crashers {
		g := gone{p: p, inst: p.Instance(), crash: true, heard: map[*node]time.Duration{}}
		p.Crash()
		departed = append(departed, g)
	}
	w.nw.RunFor(5 * time.Millisecond) // announces in flight land
	for _, g := range departed {
		for _, o := range rest {
			for _, rp := range o.Chat().Peers() {
				if g.crash && rp.Instance == g.inst {
					g.heard[o] = w.at(rp.LastSeen)
				}
			}
		}
	}
	say("churn at %s: %d nodes quit (goodbye), %d crash (no goodbye); timeout %v", secs(stopAt), len(quitters), len(crashers), chat.DefaultTimeout)
	allDropped := func() bool {
		for _, g := range departed {
			for _, o := range rest {
				if listsInstance(o, g.inst) {
					return false
				}
			}
		}
		return true
	}
	w.nw.RunUntil(allDropped, chat.DefaultTimeout+steady)
	f.Dropped = allDropped()
	shown := 0
	for _, g := range departed {
		if shown++; shown > 10 {
			say("  ... %d more", len(departed)-10)
			break
		}
		lo, hi, early, late, n := time.Duration(1<<62), time.Duration(0), time.Duration(1<<62), time.Duration(-1<<62), 0
		for _, o := range rest {
			ev, ok := o.Rec().FirstAbout(g.inst, dropped...)
			if !ok {
				continue
			}
			n++
			d := w.at(ev.Time) - stopAt
			lo, hi = min(lo, d), max(hi, d)
			if g.crash {
				rel := w.at(ev.Time) - (g.heard[o] + chat.DefaultTimeout)
				early, late = min(early, rel), max(late, rel)
			}
		}
		switch {
		case n == 0:
			say("  %s: dropped by none of the %d others", g.p, len(rest))
		case !g.crash:
			say("  %s quit: dropped by %d of %d others %s after its goodbye", g.p, n, len(rest), span(lo, hi, ms))
		default:
			say("  %s crashed: dropped by %d of %d others %s after the crash, i.e. %s after the last announce each had heard + the timeout",
				g.p, n, len(rest), span(lo, hi, secs), span(early, late, ms))
		}
	}

	back := crashers[0]
	restartAt := w.nw.Now()
	if err := back.Restart(); err != nil {
		return err
	}
	live := append(slices.Clone(rest), back)
	w.nw.RunUntil(func() bool { return viewsMatch(live) }, 2*steady)
	seenBy, last := 0, time.Duration(0)
	for _, o := range rest {
		if ev, ok := o.Rec().FirstAbout(back.Instance(), learnt...); ok {
			seenBy, last = seenBy+1, max(last, w.at(ev.Time)-restartAt)
		}
	}
	say("restart: %s came back at %s as a new instance; listed by %d of %d others within %s", back, secs(restartAt), seenBy, len(rest), ms(last))
	msgs = append(msgs, w.sendAll(w.t.Context(), ring(live, fanout), "after")...)
	w.nw.RunFor(time.Second)
	f.Messages = check(nodes, msgs)
	say("messages (before and after the churn): %v", f.Messages)
	f.Converged = viewsMatch(live)
	say("at the end: views of the %d running nodes exact: %v", len(live), f.Converged)
	return nil
}

// span formats the range lo-hi, or one value if they are equal.
func span(lo, hi time.Duration, f func(time.Duration) string) string {
	if lo == hi {
		return f(lo)
	}
	return f(lo) + " to " + f(hi)
}

func pick(nodes []*node, idx []int) []*node {
	idx = slices.Clone(idx)
	slices.Sort(idx)
	var out []*node
	for _, i := range idx {
		out = append(out, nodes[i])
	}
	return out
}

// chatPartition: the LAN splits in two halves for longer than the
// timeout, then heals.
func chatPartition(w *world, cfg Config, say func(string, ...any), f *Facts) error {
	nodes, _, err := lanStart(w, cfg, say, f)
	if err != nil {
		return err
	}
	all := w.sendAll(w.t.Context(), ring(nodes, fanout), "before") // opens connections
	w.nw.RunFor(3 * time.Second)
	half := len(nodes) / 2
	a, b := nodes[:half], nodes[half:]
	split := w.nw.Partition(hosts(a), hosts(b))
	splitAt := w.nw.Now()
	say("split at %s: %d | %d nodes", secs(splitAt), len(a), len(b))
	var within, across [][2]*node
	for i, p := range a {
		within = append(within, [2]*node{p, a[(i+1)%len(a)]})
		across = append(across, [2]*node{p, b[i%len(b)]})
	}
	for i, p := range b {
		within = append(within, [2]*node{p, b[(i+1)%len(b)]})
		across = append(across, [2]*node{p, a[i%len(a)]})
	}
	within = slices.DeleteFunc(within, func(pr [2]*node) bool { return pr[0] == pr[1] })
	pairs := append(within, across...)
	msgs := w.sendAll(w.t.Context(), pairs, "split")
	all = append(all, msgs...)
	var in, x []*message
	for _, m := range msgs {
		if sameSide(m.from, m.to, a) {
			in = append(in, m)
		} else {
			x = append(x, m)
		}
	}
	tin, tx := check(nodes, in), check(nodes, x)
	f.CrossSent, f.CrossQueued = tx.Sent, tx.Queued
	var slowest time.Duration
	for _, m := range x {
		slowest = max(slowest, m.took)
	}
	say("during the split: within a side %d of %d delivered; across %d of %d queued at the sender, %d failed (%v), the slowest after %s; %d unclear errors",
		tin.Delivered, tin.Sent, tx.Queued, tx.Sent, tx.Failed, errSummary(tx), secs(slowest), tx.Unclear)

	sides := func() bool { return viewsMatch(a) && viewsMatch(b) }
	w.nw.RunUntil(sides, splitAt+chat.DefaultTimeout+steady-w.nw.Now())
	f.Dropped = sides()
	say("each side dropped the other %s after the split: %v (timeout %v)", secs(w.nw.Now()-splitAt), f.Dropped, chat.DefaultTimeout)
	late := w.sendAll(w.t.Context(), [][2]*node{{a[0], b[0]}}, "expired")
	all = append(all, late...)
	if late[0].err != nil {
		say("a send to a dropped peer fails at once: %s", errKind(late[0].err))
	}

	w.nw.RunFor(max(0, splitAt+20*time.Second-w.nw.Now()))
	split.Heal()
	healAt := w.nw.Now()
	w.nw.RunUntil(func() bool { return viewsMatch(nodes) }, 2*steady)
	f.Converged = viewsMatch(nodes)
	say("healed at %s: every node lists every other again after %s: %v", secs(healAt), secs(w.nw.Now()-healAt), f.Converged)
	// Stalled stream segments flow, and the queues go out: a peer seen
	// again wakes its sender's queue at once.
	w.nw.RunUntil(func() bool { return check(nodes, x).QueuedArrived == len(x) }, 10*time.Second)
	w.nw.RunFor(time.Second)
	f.CrossArrived = check(nodes, x).QueuedArrived
	say("queued across the split and arrived after the heal: %d of %d, %s after the heal", f.CrossArrived, len(x), secs(w.nw.Now()-healAt))
	f.Messages = check(nodes, all)
	say("messages (all): %v", f.Messages)
	return nil
}

func sameSide(p, q *node, a []*node) bool { return slices.Contains(a, p) == slices.Contains(a, q) }

func errSummary(tl tally) string {
	var kinds []string
	for k, v := range tl.Errors {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(kinds)
	return strings.Join(kinds, ", ")
}

func hosts(ps []*node) []*netsim.Host {
	hs := make([]*netsim.Host, len(ps))
	for i, p := range ps {
		hs[i] = p.Host()
	}
	return hs
}

const serverPort = 8080

var serverURL = fmt.Sprintf("ws://boot:%d/", serverPort)

// startServer runs the real rendezvous server on h until h crashes.
func startServer(w *world, h *netsim.Host) error {
	var seed [32]byte
	for i := range 4 {
		v := w.seeds.Uint64()
		for j := range 8 {
			seed[8*i+j] = byte(v >> (8 * j))
		}
	}
	srv, err := rendezvous.NewServer(rendezvous.Config{Rand: rand.NewChaCha8(seed)})
	if err != nil {
		return err
	}
	ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf(":%d", serverPort))
	if err != nil {
		srv.Close()
		return err
	}
	h.Go(func(ctx context.Context) {
		srv.Serve(ctx, ln)
		srv.Close()
	})
	return nil
}

// registeredAfter returns when p's current instance last reported being
// registered with the server, if at or after t0.
func registeredAfter(p *node, t0 time.Duration) (time.Duration, bool) {
	var at time.Duration
	ok := false
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventStatus && ev.Err == nil && strings.HasPrefix(ev.Text, "registered with") && p.w.at(ev.Time) >= t0 {
			at, ok = p.w.at(ev.Time), true
		}
	}
	return at, ok
}

// chatInternet: nodes on segments of their own find each other through
// the real rendezvous server, which crashes and comes back empty.
func chatInternet(w *world, cfg Config, say func(string, ...any), f *Facts) error {
	w.nw.SetDefaultLink(wanLink)
	boot := w.nw.AddHost("boot", w.nw.AddSegmentPrefix("dc", netip.MustParsePrefix("10.0.0.0/24")))
	if err := startServer(w, boot); err != nil {
		return err
	}
	internet := func(c *chat.Config) {
		c.Mode = chat.ModeInternet
		c.BootstrapServers = []string{serverURL}
	}
	nodes := make([]*node, cfg.Peers)
	begin := w.nw.Now()
	for i := range nodes {
		w.nw.RunFor(time.Duration(w.seeds.Int64N(int64(time.Second) / int64(cfg.Peers))))
		prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i>>8), byte(i), 0}), 24)
		h := w.nw.AddHost(fmt.Sprintf("home%d", i+1), w.nw.AddSegmentPrefix(fmt.Sprintf("home%d", i+1), prefix))
		p, err := w.start(h, fmt.Sprintf("i%d", i+1), internet)
		if err != nil {
			return err
		}
		nodes[i] = p
	}
	last := w.nw.Now()
	say("start: server %s, %d nodes each on a segment of its own (WAN latency %v) within %s", serverURL, len(nodes), wanLink.Latency, secs(last-begin))
	discover(w, nodes, last, 30*time.Second, say, f)
	msgs := w.sendAll(w.t.Context(), ring(nodes, fanout), "wan")
	w.nw.RunFor(10 * time.Second)

	boot.Crash()
	crashAt := w.nw.Now()
	w.nw.RunFor(20 * time.Second)
	keep := 0
	for _, p := range nodes {
		if len(p.Chat().Peers()) == len(nodes)-1 {
			keep++
		}
	}
	boot.Restart()
	if err := startServer(w, boot); err != nil {
		return err
	}
	back := w.nw.Now()
	say("server crashed at %s, back (empty) at %s; meanwhile %d of %d nodes kept their last list", secs(crashAt), secs(back), keep, len(nodes))
	allBack := func() bool {
		for _, p := range nodes {
			if _, ok := registeredAfter(p, back); !ok {
				return false
			}
		}
		return true
	}
	w.nw.RunUntil(allBack, time.Minute)
	var times []time.Duration
	for _, p := range nodes {
		if at, ok := registeredAfter(p, back); ok {
			times = append(times, at-back)
		}
	}
	slices.Sort(times)
	f.Reregistered = len(times)
	if len(times) > 0 {
		say("re-registration: %d of %d nodes registered again %s (first), %s (median), %s (last) after the server came back (reconnect backoff at most 30 s, handshake timeout 10 s)",
			len(times), len(nodes), secs(times[0]), secs(times[len(times)/2]), secs(times[len(times)-1]))
	} else {
		say("re-registration: no node registered again within a minute")
	}
	w.nw.RunUntil(func() bool { return viewsMatch(nodes) }, 10*time.Second)
	f.Converged = viewsMatch(nodes)
	say("views exact after the server's return: %v", f.Converged)
	msgs = append(msgs, w.sendAll(w.t.Context(), ring(nodes, fanout), "again")...)
	w.nw.RunFor(time.Second)
	f.Messages = check(nodes, msgs)
	say("messages (before the crash and after the return): %v", f.Messages)
	say("datagrams sent: %d (internet mode uses no multicast)", w.nw.Stats().Datagrams)
	return nil
}

package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
)

// catchup runs the catch-up phase: the last member closes, the others
// post, it restarts with its store and identity, and its worker follows
// it (worker.restart and watch, below) until it has shown everything it
// missed, or shows nothing new for stallAfter.
func (c *coord) catchup(ctx context.Context, sum *summary) error {
	o, w := c.o, c.stdout
	n := o.members
	r := n - 1
	rw := c.owner(r)
	rw.send(fmt.Sprintf("stop node=%d", r))
	st, err := c.await(ctx, rw, "stopped", setupLimit)
	if err != nil {
		return err
	}
	c.live[r] = false
	closed := time.Now()
	d, err := c.waitMembers(ctx, n-2, setupLimit)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\ncatch-up: %s closed (node and store; Close took %.2f s); the others listed %d members %.2f s later\n", nickname(r), time.Duration(st.Int64("took")).Seconds(), n-2, d.Seconds())
	s0, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	rs, span, err := c.posts(ctx, plan{ph: phaseCatchup, n: o.catchup, author: func(i int) int { return i % o.authors }, window: o.window})
	if err != nil {
		return err
	}
	s1, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	seen := 0
	for _, x := range rs {
		if x.seen {
			seen++
		}
	}
	dp := s1.since(s0)
	fmt.Fprintf(w, "  %d of the other %d posted %d messages in turn (at most %d not yet shown by all) in %.2f s; %d shown by all %d; last shown %.2f s after the first post\n",
		o.authors, n-1, o.catchup, o.window, span.Seconds(), seen, n-2, dp.wall.Seconds())
	c.printTraffic("    ", dp, float64(seen*max(1, n-2)), "per message per member")
	if ln, err := c.ask(ctx, c.owner(0), "lines node=0 ph="+phaseCatchup, "lines"); err == nil && ln.Int("n") > 0 {
		k := float64(ln.Int("n"))
		fmt.Fprintf(w, "    their room_msg lines: mean %.0f bytes (min %d, max %d), mean %.1f deps\n", float64(ln.Int("bytes"))/k, ln.Int("min"), ln.Int("max"), float64(ln.Int("deps"))/k)
	}

	if wait := time.Until(closed.Add(o.offline)); wait > 0 {
		fmt.Fprintf(w, "  waiting %.1f s more, so that %s stays closed -offline %v\n", wait.Seconds(), nickname(r), o.offline)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "  %s was closed for %.2f s\n", nickname(r), time.Since(closed).Seconds())
	if o.profile != "" {
		c.profiles(ctx, "catchup")
	}
	s2, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	c.live[r] = true
	rw.send(fmt.Sprintf("restart node=%d want=%d", r, o.catchup))
	if _, err := c.await(ctx, rw, "restarted", setupLimit); err != nil {
		return err
	}
	cu, err := c.await(ctx, rw, "caughtup", time.Until(deadlineOf(ctx)))
	if err != nil {
		return err
	}
	if o.profile != "" {
		c.profiles(ctx, "")
	}
	s3, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	t0 := cu.Time("t0")
	since := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%.3f s", t.Sub(t0).Seconds())
	}
	shown, want := cu.Int("shown"), cu.Int("want")
	sum.catchShown, sum.catchN, sum.stalled = shown, want, cu.Int("stalled") != 0
	sum.catchup = cu.Time("last").Sub(t0)
	fmt.Fprintf(w, "  %s restarted with the same store and identity: store open and chat.Start took %s; first member met (its first peer event) at %s; first missed message shown at %s\n",
		nickname(r), since(cu.Time("started")), since(cu.Time("met")), since(cu.Time("first")))
	if !sum.stalled {
		fmt.Fprintf(w, "  start to all %d missed messages shown: %.3f s\n", want, sum.catchup.Seconds())
	} else {
		fmt.Fprintf(w, "  CAUGHT UP ONLY IN PART: %d of %d shown, the last at %s; nothing more in the %v that followed\n", shown, want, since(cu.Time("last")), stallAfter)
	}
	fmt.Fprintf(w, "  shown after CausalWait without what they depended on (Forced): %d; Late: %d; unmet dependencies listed: %d\n", cu.Int("forced"), cu.Int("late"), cu.Int("unmet"))
	var shows, sums []string
	for _, b := range cu.bursts {
		s := fmt.Sprintf("%s: %d", since(b.Time("at")), b.Int("n"))
		if b.KV["kind"] == "show" {
			shows = append(shows, s)
		} else {
			sums = append(sums, s)
		}
	}
	sum.rounds = fmt.Sprintf("%d (max %d)", cu.Int("rmed"), cu.Int("rmax"))
	fmt.Fprintf(w, "  its summary sends (writes on its own links after the handshakes; each carries a room_sum), in bursts from its start: %s\n", strings.Join(sums, ", "))
	fmt.Fprintf(w, "  missed messages shown, in bursts: %s\n", strings.Join(shows, ", "))
	fmt.Fprintf(w, "  summary rounds until the last was shown: median %d, max %d over its %d links (its summary writes to a member before then; it asks one member per author for what it lacks, and is sent at most RoomHistoryMessages)\n",
		cu.Int("rmed"), cu.Int("rmax"), cu.Int("rlinks"))
	fmt.Fprintf(w, "  %s's traffic from its start to the end of this watch: received %s on the links the others opened to it (%d), sent %s on its own (%d: handshakes and summaries)",
		nickname(r), size(cu.Int64("accr")), cu.Int("accepts"), size(cu.Int64("dialw")), cu.Int("dials"))
	if shown > 0 {
		fmt.Fprintf(w, "; %.0f bytes received per message shown", float64(cu.Int64("accr"))/float64(shown))
	}
	fmt.Fprintln(w)
	dr := s3.since(s2)
	fmt.Fprintf(w, "  links to it: %d of the %d others opened one to the new instance; writes that failed on the members' links meanwhile: %d\n", cu.Int("accepts"), n-1, dr.werrs)
	c.printTraffic("  all, restart to the end of this watch: ", dr, 0, "")

	// And then: what the room costs at rest once the member is back.
	if o.idle > 0 {
		r0, err := c.ask(ctx, rw, fmt.Sprintf("nodestats node=%d", r), "nodestats")
		if err != nil {
			return err
		}
		if err := sleep(ctx, o.idle); err != nil {
			return err
		}
		r1, err := c.ask(ctx, rw, fmt.Sprintf("nodestats node=%d", r), "nodestats")
		if err != nil {
			return err
		}
		s4, err := c.snapshot(ctx)
		if err != nil {
			return err
		}
		di := s4.since(s3)
		sum.idleAfter = int64(float64(di.tcp()) * chat.RoomSyncInterval.Seconds() / di.wall.Seconds())
		fmt.Fprintf(w, "  idle %.1f s after that: %s received %s, sent %s\n", di.wall.Seconds(), nickname(r), size(r1.Int64("accr")-r0.Int64("accr")), size(r1.Int64("dialw")-r0.Int64("dialw")))
		c.printTraffic("    ", di, 0, "")
	}
	return nil
}

// restart starts nd again with its store and identity, then follows its
// catch-up on a goroutine of w.posts, which says "caughtup" at the end.
func (w *worker) restart(nd *wnode, want int) error {
	c := &catchup{nd: nd, want: want, signal: make(chan struct{}, 1), t0: time.Now()}
	w.mu.Lock()
	w.catch = c
	w.mu.Unlock()
	if err := w.start(nd, &writeTrace{}); err != nil {
		return err
	}
	w.mu.Lock()
	c.started = time.Now()
	w.mu.Unlock()
	w.out.Say("restarted", "node", nd.idx, "t0", ns(c.t0), "started", ns(c.started))
	w.posts.Go(func() { w.watch(c) })
	return nil
}

// watch waits until the member has shown all it missed, or nothing new
// for stallAfter, or the end of the run, and reports.
func (w *worker) watch(c *catchup) {
	stall := time.NewTimer(stallAfter)
	defer stall.Stop()
	stalled := false
	for done := false; !done; {
		select {
		case <-c.signal:
			w.mu.Lock()
			done = len(c.shows) >= c.want
			w.mu.Unlock()
			stall.Reset(stallAfter)
		case <-stall.C:
			stalled, done = true, true
		case <-w.ctx.Done():
			stalled, done = true, true
		}
	}
	at := time.Now()
	w.mu.Lock()
	shows := append([]time.Time(nil), c.shows...)
	met, forced, late, unmet := c.met, c.forced, c.late, c.unmet
	w.mu.Unlock()
	last := time.Time{}
	if len(shows) > 0 {
		last = shows[len(shows)-1]
	}
	first := time.Time{}
	if len(shows) > 0 {
		first = shows[0]
	}
	for _, b := range bursts(shows) {
		w.out.Say("burst", "kind", "show", "at", ns(b.at), "end", ns(b.end), "n", b.n)
	}
	writes := c.nd.trace.list()
	var wt []time.Time
	perConn := map[int64]int{} // summary writes before the last message shown
	for _, x := range writes {
		wt = append(wt, x.at)
		if !last.IsZero() && !x.at.After(last) {
			perConn[x.conn]++
		}
	}
	for _, b := range bursts(wt) {
		w.out.Say("burst", "kind", "sum", "at", ns(b.at), "end", ns(b.end), "n", b.n)
	}
	counts := slices.Sorted(maps.Values(perConn))
	rmed, rmax := 0, 0
	if len(counts) > 0 {
		rmed, rmax = counts[(len(counts)-1)/2], counts[len(counts)-1]
	}
	nc := c.nd.c
	w.out.Say("caughtup", "node", c.nd.idx, "t0", ns(c.t0), "started", ns(c.started), "met", ns(met),
		"first", ns(first), "last", ns(last), "shown", len(shows), "want", c.want, "stalled", btoi(stalled), "at", ns(at),
		"forced", forced, "late", late, "unmet", unmet, "rmed", rmed, "rmax", rmax, "rlinks", len(counts),
		"dials", nc.dials.Load(), "accepts", nc.accepts.Load(), "dialw", nc.dialW.Load(), "dialr", nc.dialR.Load(),
		"accw", nc.accW.Load(), "accr", nc.accR.Load(), "werrs", nc.werrs.Load())
}

// burst is a run of times with no gap over burstGap.
type burst struct {
	at, end time.Time
	n       int
}

const burstGap = 250 * time.Millisecond

func bursts(ts []time.Time) []burst {
	var out []burst
	for _, t := range ts {
		if len(out) > 0 && t.Sub(out[len(out)-1].end) <= burstGap {
			out[len(out)-1].end = t
			out[len(out)-1].n++
			continue
		}
		out = append(out, burst{at: t, end: t, n: 1})
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
)

// result is one message of a phase.
type result struct {
	posted, seen        bool
	at, end             time.Time // around PostRoom
	members             int       // PostRoom sent it to
	failed              bool
	expect, reports     int // workers that report it, and have
	first, last, evLast time.Time
}

func (r *result) complete() bool { return r.posted && !r.failed && r.reports >= r.expect }

// plan is a phase's posts.
type plan struct {
	ph       string
	n        int
	author   func(i int) int
	interval time.Duration // post i at start + i*interval; 0: use window
	window   int           // at most this many posted and not complete
}

// expect is the number of workers that report a message of author.
func (c *coord) expect(author int) int {
	n := 0
	for _, w := range c.ws {
		for i := w.first; i < w.last; i++ {
			if c.live[i] && i != author {
				n++
				break
			}
		}
	}
	return n
}

// posts runs a phase's posts and waits until every member showed every
// message, or settleLimit after the last post.
func (c *coord) posts(ctx context.Context, p plan) ([]result, time.Duration, error) {
	rs := make([]result, p.n)
	next, done, open := 0, 0, 0
	start := time.Now()
	var lastPost time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
	post := func() {
		a := p.author(next)
		rs[next].expect = c.expect(a)
		c.owner(a).send(fmt.Sprintf("post ph=%s i=%d node=%d", p.ph, next, a))
		next++
		open++
		if next == p.n {
			lastPost = time.Now()
			settle.Reset(settleLimit)
		}
	}
	finish := func(r *result) {
		if r.complete() && !r.seen {
			r.seen = true
			done++
			open--
		}
	}
	for done < p.n {
		if p.interval == 0 {
			for next < p.n && open < p.window {
				post()
			}
		}
		select {
		case <-timer.C:
			if p.interval > 0 && next < p.n {
				post()
				if next < p.n {
					timer.Reset(time.Until(start.Add(time.Duration(next) * p.interval)))
				}
			}
		case ev := <-c.events:
			l := ev.l
			if l.KV["ph"] != p.ph {
				continue
			}
			i := l.Int("i")
			if i < 0 || i >= p.n {
				continue
			}
			r := &rs[i]
			switch l.Verb {
			case "posted":
				r.posted, r.at, r.end, r.members, r.failed = true, l.Time("at"), l.Time("end"), l.Int("members"), l.Int("err") != 0
				if r.failed {
					done++
					open--
				}
			case "seen":
				r.reports++
				if f := l.Time("first"); r.first.IsZero() || f.Before(r.first) {
					r.first = f
				}
				r.last = later(r.last, l.Time("last"))
				r.evLast = later(r.evLast, l.Time("evlast"))
			}
			finish(r)
		case <-progress.C:
			fmt.Fprintf(c.stderr, "roombench: phase %s after %.0f s: %d of %d posted, %d shown by every member\n", p.ph, time.Since(start).Seconds(), next, p.n, done)
		case <-settle.C:
			fmt.Fprintf(c.stdout, "  %d of %d messages were not shown by every member %v after the last post\n", p.n-done, p.n, settleLimit)
			return rs, lastPost.Sub(start), nil
		case <-ctx.Done():
			return rs, time.Since(start), ctx.Err()
		}
	}
	return rs, lastPost.Sub(start), nil
}

// quantiles returns p50, p99 and max of ds (nearest rank).
func quantiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		k := int(float64(len(s))*p+0.999999) - 1
		return s[max(0, min(len(s)-1, k))]
	}
	return q(0.5), q(0.99), s[len(s)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// summary is what the final table needs.
type summary struct {
	p50, p99, mx       time.Duration
	reached, n         int
	perMsgMember       float64 // TCP payload bytes
	perMsgMemberIP     float64
	line               float64 // mean room_msg line
	deps               float64
	idleTCP            int64
	idleWall           time.Duration
	catchup            time.Duration
	catchShown, catchN int
	rounds             string
	stalled            bool
	idleAfter          int64 // TCP bytes per RoomSyncInterval in an idle window after the catch-up
}

func (c *coord) phases(ctx context.Context) error {
	o, w := c.o, c.stdout
	n := o.members
	var sum summary

	// Setup: every node lists the other members, and every room link
	// is up.
	d, err := c.waitMembers(ctx, n-1, setupLimit)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "setup: every node lists the %d other members %.2f s later\n", n-1, d.Seconds())
	links := int64(n * (n - 1))
	t0 := time.Now()
	var prev snap
	for {
		s, err := c.snapshot(ctx)
		if err != nil {
			return err
		}
		if s.sum("dials") >= links && s.sum("accepts") >= links && prev.ws != nil && s.sum("dialw") == prev.sum("dialw") && s.sum("accw") == prev.sum("accw") {
			fmt.Fprintf(w, "setup: %d room links up and quiet %.2f s later (%d dialled, %d accepted; %s of handshakes and first summaries so far, %d files open in all)\n",
				links, time.Since(t0).Seconds(), s.sum("dials"), s.sum("accepts"), size(s.sum("dialw")+s.sum("dialr")), s.sum("fds"))
			break
		}
		if time.Since(t0) > setupLimit {
			fmt.Fprintf(w, "setup: after %v, %d of %d room links dialled, %d accepted; going on\n", setupLimit, s.sum("dials"), links, s.sum("accepts"))
			break
		}
		prev = s
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	}

	// Post phase.
	s0, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	if o.profile != "" {
		c.profiles(ctx, "post")
	}
	rs, span, err := c.posts(ctx, plan{ph: phasePost, n: o.messages, author: func(i int) int { return i % n }, interval: o.interval})
	if err != nil {
		return err
	}
	if o.profile != "" {
		c.profiles(ctx, "")
	}
	s1, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	var reach, reachEv, postCall, firstOther []time.Duration
	minMembers := n
	for _, r := range rs {
		if r.posted && !r.failed {
			minMembers = min(minMembers, r.members)
			postCall = append(postCall, r.end.Sub(r.at))
		}
		if r.seen {
			reach = append(reach, r.last.Sub(r.at))
			reachEv = append(reachEv, r.evLast.Sub(r.at))
			firstOther = append(firstOther, r.first.Sub(r.at))
		}
	}
	fmt.Fprintf(w, "\npost: %d messages from the members in turn (each posts %.1f), one every %v (%.2f s)\n", o.messages, float64(o.messages)/float64(n), o.interval, span.Seconds())
	sum.p50, sum.p99, sum.mx = quantiles(reach)
	sum.reached, sum.n = len(reach), o.messages
	fmt.Fprintf(w, "  reach all %d other members (PostRoom called to the last member's EventRoomMessage read): p50 %s, p99 %s, max %s (%d of %d messages reached all)\n",
		n-1, ms(sum.p50), ms(sum.p99), ms(sum.mx), len(reach), o.messages)
	a, b, m := quantiles(reachEv)
	fmt.Fprintf(w, "  the same to the last member's Event.Time (when the node took the batch, before storing it): p50 %s, p99 %s, max %s\n", ms(a), ms(b), ms(m))
	a, b, m = quantiles(firstOther)
	fmt.Fprintf(w, "  the first other member: p50 %s, p99 %s, max %s\n", ms(a), ms(b), ms(m))
	a, b, m = quantiles(postCall)
	fmt.Fprintf(w, "  PostRoom itself (store and commit, then queue to the links): p50 %s, p99 %s, max %s; sent to at least %d members each\n", ms(a), ms(b), ms(m), minMembers)
	dp := s1.since(s0)
	per := float64(len(reach) * (n - 1))
	sum.perMsgMember, sum.perMsgMemberIP = float64(dp.tcp())/per, float64(dp.ns.unicast())/per
	c.printTraffic("  ", dp, per, "per message per member")
	if ln, err := c.ask(ctx, c.owner(0), "lines node=0 ph="+phasePost, "lines"); err == nil && ln.Int("n") > 0 {
		k := float64(ln.Int("n"))
		sum.line, sum.deps = float64(ln.Int("bytes"))/k, float64(ln.Int("deps"))/k
		fmt.Fprintf(w, "  room_msg lines of the phase (plaintext, as %s stored them): mean %.0f bytes (min %d, max %d), mean %.1f deps; a room_sum of the %d authors now: %d bytes\n",
			nickname(0), sum.line, ln.Int("min"), ln.Int("max"), sum.deps, ln.Int("authors"), ln.Int("sum"))
		fmt.Fprintf(w, "  (a line travels in a Noise frame: +18 bytes; several queued lines share one. Periodic summaries: every member to every other every %v when changed, about %.1f rounds fell in the phase)\n",
			chat.RoomSyncInterval, dp.wall.Seconds()/chat.RoomSyncInterval.Seconds())
	}

	// Idle.
	if o.idle > 0 {
		if err := sleep(ctx, o.idle); err != nil {
			return err
		}
		s2, err := c.snapshot(ctx)
		if err != nil {
			return err
		}
		di := s2.since(s1)
		sum.idleTCP, sum.idleWall = di.tcp(), di.wall
		fmt.Fprintf(w, "\nidle: %.1f s with nobody posting (a round sends a member's summary to each other member only if it changed since the last one sent there: the round after posts holds up to %d, later ones none)\n", di.wall.Seconds(), n*(n-1))
		c.printTraffic("  ", di, float64(n*(n-1)), "per member per other member")
	}

	// Catch-up.
	if o.catchup > 0 {
		if err := c.catchup(ctx, &sum); err != nil {
			return err
		}
	}

	// The end: every worker's own counts.
	finals := make([]line, len(c.ws))
	for i, wk := range c.ws {
		wk.send("quit")
		if finals[i], err = c.await(ctx, wk, "final", grace); err != nil {
			return err
		}
	}
	dup, reshown, other := 0, 0, 0
	fmt.Fprintf(w, "\nopen files:")
	for i, l := range finals {
		dup += l.Int("dup")
		reshown += l.Int("reshown")
		other += l.Int("other")
		fmt.Fprintf(w, " worker %d (nodes %s..%s) at most %d;", i, nickname(c.ws[i].first), nickname(c.ws[i].last-1), l.Int("fdmax"))
	}
	fmt.Fprintf(w, " sampled every 0.5 s\n")
	fmt.Fprintf(w, "checks: messages shown twice by one member %d; earlier messages shown again after the restart %d; room messages not of this run %d\n", dup, reshown, other)

	fmt.Fprintf(w, "\n| members | messages | reach all: p50 | p99 | max | TCP bytes per message per member | IP bytes (headers, ACKs) | room_msg line, deps | idle TCP per %v (after the catch-up) | catch-up of %d | rounds |\n",
		chat.RoomSyncInterval, o.catchup)
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	catch := "-"
	if o.catchup > 0 {
		catch = fmt.Sprintf("%.2f s", sum.catchup.Seconds())
		if sum.stalled {
			catch = fmt.Sprintf("stalled at %d of %d (last at %.2f s)", sum.catchShown, sum.catchN, sum.catchup.Seconds())
		}
	}
	idle := "-"
	if sum.idleWall > 0 {
		idle = size(int64(float64(sum.idleTCP) * chat.RoomSyncInterval.Seconds() / sum.idleWall.Seconds()))
		if sum.idleAfter > 0 {
			idle += fmt.Sprintf(" (%s)", size(sum.idleAfter))
		}
	}
	if sum.rounds == "" {
		sum.rounds = "-"
	}
	fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %.0f | %.0f | %.0f B, %.1f | %s | %s | %s |\n",
		n, o.messages, ms(sum.p50), ms(sum.p99), ms(sum.mx), sum.perMsgMember, sum.perMsgMemberIP, sum.line, sum.deps, idle, catch, sum.rounds)
	return nil
}

// profiles starts (phase != "") or stops every worker's CPU profile.
func (c *coord) profiles(ctx context.Context, phase string) {
	for _, wk := range c.ws {
		cmd := "profile"
		if phase != "" {
			cmd = fmt.Sprintf("profile path=%s.%s.w%d.pprof", c.o.profile, phase, wk.id)
		}
		if _, err := c.ask(ctx, wk, cmd, "profile"); err != nil {
			fmt.Fprintf(c.stderr, "roombench: %v\n", err)
		}
	}
}

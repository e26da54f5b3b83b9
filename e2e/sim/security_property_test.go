package sim

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/netsim"
)

// mitmSchedules is how many schedules TestPropertyMITM runs when the
// schedule count is TestMain's default; -rapid.checks=N or RAPID_CHECKS=N
// scale it by N/schedulesPerProperty, -short divides it by five.
const mitmSchedules = 100

// withRapidChecks makes rapid.Check run n schedules, scaled as
// mitmSchedules says, until the test ends. rapid reads the flag when a
// check starts; top-level tests that are not parallel never overlap, so
// no other check reads it meanwhile.
func withRapidChecks(t *testing.T, n int) {
	f := flag.Lookup("rapid.checks")
	if f == nil {
		return
	}
	old := f.Value.String()
	if cur, err := strconv.Atoi(old); err == nil && cur != schedulesPerProperty {
		n = max(1, n*cur/schedulesPerProperty)
	}
	flag.Set("rapid.checks", strconv.Itoa(n))
	t.Cleanup(func() { flag.Set("rapid.checks", old) })
}

type mitmKind int

const (
	mitmWait mitmKind = iota
	mitmSend
	mitmRates // what the man in the middle does to stream data segments
	mitmLoss  // datagram loss
)

// mitmOp is one step of a man-in-the-middle schedule.
type mitmOp struct {
	Kind               mitmKind
	A, B               int
	D                  time.Duration
	Drop, Dup, Rewrite float64
	Loss               float64
}

func (o mitmOp) String() string {
	switch o.Kind {
	case mitmWait:
		return fmt.Sprintf("wait %v", o.D)
	case mitmSend:
		return fmt.Sprintf("send n%d->n%d", o.A, o.B)
	case mitmRates:
		return fmt.Sprintf("mitm drop %.0f%% dup %.0f%% rewrite %.0f%%", 100*o.Drop, 100*o.Dup, 100*o.Rewrite)
	case mitmLoss:
		return fmt.Sprintf("loss %.0f%%", 100*o.Loss)
	}
	return "?"
}

type mitmSchedule struct {
	Peers int
	Seed  uint64 // the network's and the man in the middle's
	Ops   []mitmOp
}

func (s mitmSchedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers, netsim seed %d:", s.Peers, s.Seed)
	for _, o := range s.Ops {
		b.WriteString(" " + o.String() + ";")
	}
	return b.String()
}

func drawMITMSchedule(rt *rapid.T) mitmSchedule {
	n := rapid.IntRange(2, 3).Draw(rt, "peers")
	seed := rapid.Uint64().Draw(rt, "netsim seed")
	peerIdx := rapid.IntRange(0, n-1)
	rate := rapid.SampledFrom([]float64{0, 0.05, 0.1, 0.2, 0.4})
	drawRates := func(t *rapid.T) mitmOp {
		return mitmOp{Kind: mitmRates, Drop: rate.Draw(t, "drop"), Dup: rate.Draw(t, "dup"), Rewrite: rate.Draw(t, "rewrite")}
	}
	kinds := rapid.SampledFrom([]mitmKind{mitmWait, mitmWait, mitmSend, mitmSend, mitmSend, mitmSend, mitmSend, mitmSend, mitmRates, mitmLoss})
	gen := rapid.Custom(func(t *rapid.T) mitmOp {
		switch kind := kinds.Draw(t, "kind"); kind {
		case mitmWait:
			return mitmOp{Kind: kind, D: time.Duration(rapid.IntRange(1, 60).Draw(t, "tenths of a second")) * 100 * time.Millisecond}
		case mitmSend:
			return mitmOp{Kind: kind, A: peerIdx.Draw(t, "from"), B: peerIdx.Draw(t, "to")}
		case mitmRates:
			return drawRates(t)
		default:
			return mitmOp{Kind: kind, Loss: rapid.SampledFrom([]float64{0, 0.1, 0.3}).Draw(t, "loss")}
		}
	})
	// The man in the middle is there from the start.
	ops := append([]mitmOp{drawRates(rt)}, rapid.SliceOfN(gen, 6, 40).Draw(rt, "ops")...)
	return mitmSchedule{Peers: n, Seed: seed, Ops: ops}
}

// runMITMSchedule runs s and returns every invariant it broke:
//
//   - every message a node shows was sent to that node, by the node whose
//     key it carries (Message.Key is the sender's PublicKey, From its
//     nickname), inside a session, with the exact text, at most once;
//   - every send goes inside a session and ends Delivered (then shown
//     exactly once) or Queued (the tampering broke its session before the
//     ack), or fails clearly; once the man in the middle stops, the queues
//     drain within retryDrain, and each queued message is then delivered
//     and shown exactly once (outcomeErrs);
//   - no node ever lists a peer with a key other than that peer's, or
//     in state KEY CHANGED: the man in the middle cannot make a node pin
//     or accept a wrong key.
func runMITMSchedule(t *testing.T, nw *netsim.Network, s mitmSchedule, st *scheduleStats) []error {
	c := newCluster(t, nw)
	defer c.closeAll()
	nw.SetDefaultLink(lanLink)
	hosts := addHosts(nw, nw.AddSegment("lan"), "h", s.Peers)
	peers := make([]*peer, s.Peers)
	keyOf := map[string]string{} // address -> the key of the node there
	for i, h := range hosts {
		peers[i] = c.start(h, fmt.Sprintf("n%d", i))
		keyOf[peers[i].Addr().String()] = peers[i].Chat().PublicKey()
	}
	nw.RunFor(discoveryBound(lanLink) + quantum)

	tp := newTap(nw)
	rng := rand.New(rand.NewPCG(s.Seed, 0x3171))
	var rates mitmOp
	tp.setPolicy(func(p *tapped) netsim.Verdict {
		u := rng.Float64()
		switch {
		case u < rates.Drop:
			return netsim.Verdict{Drop: true}
		case u < rates.Drop+rates.Dup:
			return netsim.Verdict{Duplicate: true}
		case u < rates.Drop+rates.Dup+rates.Rewrite && len(p.Payload) > 0:
			out := bytes.Clone(p.Payload)
			out[rng.IntN(len(out))] ^= byte(1 + rng.IntN(255))
			return netsim.Verdict{Replace: out}
		}
		return netsim.Verdict{}
	})
	ob := newOutbox(t.Context())
	for i, o := range s.Ops {
		switch o.Kind {
		case mitmWait:
			nw.RunFor(o.D)
		case mitmSend:
			if o.A != o.B {
				ob.post(peers[o.A], peers[o.B], fmt.Sprintf("m%d n%d->n%d", i, o.A, o.B))
			}
		case mitmRates:
			tp.do(func() { rates = o })
		case mitmLoss:
			nw.SetDefaultLink(netsim.Link{Latency: lanLink.Latency, Jitter: lanLink.Jitter, Loss: o.Loss})
		}
	}
	tp.do(func() { rates = mitmOp{} })
	nw.SetDefaultLink(lanLink)
	msgs := ob.wait()
	var errs []error
	if _, err := drainErr(t.Context(), c, msgs, retryDrain(lanLink)); err != nil {
		errs = append(errs, err)
	}

	sent := map[string]*message{}
	for _, m := range msgs {
		sent[m.text] = m
	}
	count := map[string]int{}
	for _, p := range peers {
		for _, r := range p.Recs() {
			for _, got := range r.Messages() {
				count[got.Text]++
				m, ok := sent[got.Text]
				switch {
				case !ok:
					errs = append(errs, fmt.Errorf("%v showed %q from %s, which nobody sent", p, got.Text, got.From))
				case m.to != p:
					errs = append(errs, fmt.Errorf("%v showed %v, sent to another node", p, m))
				case got.From != m.from.Nick() || got.Key != m.from.Chat().PublicKey() || !got.Encrypted:
					errs = append(errs, fmt.Errorf("%v showed %v from %q with key %q (encrypted %v), want the sender's nickname and key",
						p, m, got.From, got.Key, got.Encrypted))
				}
			}
		}
	}
	for _, m := range msgs {
		errs = append(errs, outcomeErrs(t.Context(), m, count[m.text])...)
		switch {
		case m.err == nil && (m.res.Status != chat.Delivered && m.res.Status != chat.Queued || !m.res.Encrypted):
			errs = append(errs, fmt.Errorf("%v (encrypted %v): want delivered or queued, inside a session", m, m.res.Encrypted))
		case m.err != nil && !isClearFailure(m.err):
			errs = append(errs, fmt.Errorf("%v: not a failure Send promises", m))
		}
	}
	for _, p := range peers {
		for _, ps := range p.Chat().PeerStatuses() {
			if want := keyOf[ps.Addr.String()]; ps.PubKey != want || ps.Trust == trust.StateChanged {
				errs = append(errs, fmt.Errorf("%v lists %s with key %q, trust %v; its key is %q", p, ps.Addr, ps.PubKey, ps.Trust, want))
			}
		}
	}
	st.add(nw, msgs)
	return errs
}

// Random schedules of sends between two or three of our nodes through a
// man in the middle that drops (resets), replays and rewrites stream data
// segments at random rates, with datagram loss: see runMITMSchedule for
// the invariants. Across the schedules, every kind of tampering fires.
func TestPropertyMITM(t *testing.T) {
	withRapidChecks(t, mitmSchedules)
	var st scheduleStats
	checkSimulated(t, drawMITMSchedule, func(s mitmSchedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s mitmSchedule) []error { return runMITMSchedule(t, nw, s, &st) })
	t.Logf("%s", &st)
	if st.schedules >= 50 {
		for _, k := range []netsim.FaultKind{netsim.FaultRule, netsim.FaultReplay, netsim.FaultRewrite} {
			if st.faults[k] == 0 {
				t.Errorf("the man in the middle never fired %q in %d schedules: %v", k, st.schedules, st.faults)
			}
		}
	}
}

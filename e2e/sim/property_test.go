package sim

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// schedulesPerProperty is how many random schedules each property runs by
// default (two properties, run in parallel: 1,000 in all). -rapid.checks=N
// or RAPID_CHECKS=N sets it; -short divides it by five.
const schedulesPerProperty = 500

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "rapid.checks" })
	if _, ok := os.LookupEnv("RAPID_CHECKS"); !ok && !explicit {
		flag.Set("rapid.checks", strconv.Itoa(schedulesPerProperty))
	}
	os.Exit(m.Run())
}

type opKind int

const (
	opWait opKind = iota
	opSend
	opQuit
	opCrash
	opRestart
	opPartition
	opOneWay
	opHeal
	opLoss
	opLinkDown
)

var opNames = [...]string{"wait", "send", "quit", "crash", "restart", "partition", "oneway", "heal", "loss", "linkdown"}

// op is one step of a schedule.
type op struct {
	Kind   opKind
	A, B   int           // peers (send: from A to B)
	Side   uint          // partition: bit i puts peer i on the first side
	D      time.Duration // wait
	Loss   float64
	Jitter time.Duration
}

func (o op) String() string {
	switch o.Kind {
	case opWait:
		return fmt.Sprintf("wait %v", o.D)
	case opSend:
		return fmt.Sprintf("send n%d->n%d", o.A, o.B)
	case opQuit, opCrash, opRestart, opLinkDown:
		return fmt.Sprintf("%s n%d", opNames[o.Kind], o.A)
	case opPartition, opOneWay:
		return fmt.Sprintf("%s %b", opNames[o.Kind], o.Side)
	case opLoss:
		return fmt.Sprintf("loss %.0f%% jitter %v", 100*o.Loss, o.Jitter)
	}
	return opNames[o.Kind]
}

// schedule is one random run: how many peers, the network's seed, and the
// steps.
type schedule struct {
	Peers int
	Seed  uint64
	Ops   []op
}

func (s schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers, netsim seed %d:", s.Peers, s.Seed)
	for _, o := range s.Ops {
		b.WriteString(" " + o.String() + ";")
	}
	return b.String()
}

func drawSchedule(rt *rapid.T, minPeers, maxPeers int) schedule {
	n := rapid.IntRange(minPeers, maxPeers).Draw(rt, "peers")
	seed := rapid.Uint64().Draw(rt, "netsim seed")
	peerIdx := rapid.IntRange(0, n-1)
	// Sends and waits are the common steps; faults are rarer.
	kinds := rapid.SampledFrom([]opKind{
		opWait, opWait, opWait, opSend, opSend, opSend, opSend,
		opQuit, opCrash, opRestart, opRestart, opPartition, opOneWay, opHeal, opLoss, opLinkDown,
	})
	gen := rapid.Custom(func(t *rapid.T) op {
		o := op{Kind: kinds.Draw(t, "kind")}
		switch o.Kind {
		case opWait:
			o.D = time.Duration(rapid.IntRange(1, 80).Draw(t, "tenths of a second")) * 100 * time.Millisecond
		case opSend:
			o.A, o.B = peerIdx.Draw(t, "from"), peerIdx.Draw(t, "to")
		case opQuit, opCrash, opRestart, opLinkDown:
			o.A = peerIdx.Draw(t, "peer")
		case opPartition, opOneWay:
			o.Side = uint(rapid.IntRange(1, 1<<n-2).Draw(t, "side"))
		case opLoss:
			o.Loss = rapid.SampledFrom([]float64{0, 0.1, 0.2, 0.5}).Draw(t, "loss")
			o.Jitter = rapid.SampledFrom([]time.Duration{0, time.Millisecond, 5 * time.Millisecond}).Draw(t, "jitter")
		}
		return o
	})
	return schedule{Peers: n, Seed: seed, Ops: rapid.SliceOfN(gen, 8, 40).Draw(rt, "ops")}
}

// maxJitter is the most jitter a schedule sets.
const maxJitter = 5 * time.Millisecond

// runSchedule runs s on nw and returns every invariant it broke:
//
//   - no message arrives twice or at the wrong peer, or with the wrong
//     sender or text;
//   - every send ends Delivered (all peers are ours and acknowledge),
//     Queued (the peer could not be reached: the message waits in the
//     sender's store) or in a clear failure at the sender (a peer expired
//     with no key pinned, a sender closed first); a Delivered message
//     arrived exactly once, a failed one at most once;
//   - once every fault is healed and one timeout has passed, every live
//     peer lists exactly the live peers;
//   - within retryDrain more, no message waits in a queue between two
//     running peers: each queued message arrived exactly once if its
//     sender's store says Delivered, at most once otherwise (a stopped
//     peer's queues wait for it), as deliveryErrs checks.
//
// Goroutines that outlive their node make the bubble fail (synctest).
func runSchedule(t *testing.T, nw *netsim.Network, s schedule, st *scheduleStats) []error {
	c := newCluster(t, nw)
	defer c.closeAll()
	nw.SetDefaultLink(lanLink)
	hosts := addHosts(nw, nw.AddSegment("lan"), "h", s.Peers)
	peers := make([]*peer, s.Peers)
	for i, h := range hosts {
		peers[i] = c.start(h, fmt.Sprintf("n%d", i))
	}
	nw.RunFor(discoveryBound(lanLink) + quantum) // everyone knows everyone
	ob := newOutbox(t.Context())
	var rules []*netsim.Rule
	var down []*netsim.Host
	sides := func(mask uint) (a, b []*netsim.Host) { return splitHosts(hosts, mask) }
	for i, o := range s.Ops {
		switch o.Kind {
		case opWait:
			nw.RunFor(o.D)
		case opSend:
			from, to := peers[o.A], peers[o.B]
			if from.Up() && o.A != o.B {
				ob.post(from, to, fmt.Sprintf("m%d n%d->n%d", i, o.A, o.B))
			}
		case opQuit:
			if p := peers[o.A]; p.Up() {
				p.Quit()
			}
		case opCrash:
			if p := peers[o.A]; p.Up() {
				p.Crash()
			}
		case opRestart:
			if p := peers[o.A]; !p.Up() {
				p.restart()
			}
		case opPartition:
			rules = append(rules, nw.Partition(sides(o.Side)))
		case opOneWay:
			rules = append(rules, nw.PartitionOneWay(sides(o.Side)))
		case opHeal:
			for _, r := range rules {
				r.Heal()
			}
			for _, h := range down {
				h.LinkUp()
			}
			rules, down = nil, nil
		case opLoss:
			nw.SetDefaultLink(netsim.Link{Latency: lanLink.Latency, Jitter: o.Jitter, Loss: o.Loss})
		case opLinkDown:
			hosts[o.A].LinkDown()
			down = append(down, hosts[o.A])
		}
	}
	for _, r := range rules {
		r.Heal()
	}
	for _, h := range down {
		h.LinkUp()
	}
	nw.SetDefaultLink(lanLink)
	nw.RunFor(chat.DefaultTimeout + lanLink.Latency + maxJitter + 2*quantum)
	var errs []error
	if err := viewsErr(peers); err != nil {
		errs = append(errs, fmt.Errorf("one timeout after the heal: %w", err))
	}
	msgs := ob.wait()
	if _, err := drainErr(t.Context(), c, msgs, retryDrain(lanLink)); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, deliveryErrs(t.Context(), peers, msgs)...)
	st.add(nw, msgs)
	for _, m := range msgs {
		switch {
		case m.err == nil && m.res.Status != chat.Delivered && m.res.Status != chat.Queued:
			errs = append(errs, fmt.Errorf("%v: status %v, want delivered or queued (our peers ack, and have keys)", m, m.res.Status))
		case m.err != nil && !isClearFailure(m.err):
			errs = append(errs, fmt.Errorf("%v: not a failure Send promises", m))
		}
	}
	return errs
}

// checkSchedules runs random schedules, each in its own simulated network,
// and shrinks a failing one to a minimal schedule, printed with its seeds
// and the command that replays it.
func checkSchedules(t *testing.T, minPeers, maxPeers int) {
	var st scheduleStats
	defer func() { t.Logf("%s", &st) }()
	checkSimulated(t, func(rt *rapid.T) schedule { return drawSchedule(rt, minPeers, maxPeers) },
		func(s schedule) uint64 { return s.Seed },
		func(t *testing.T, nw *netsim.Network, s schedule) []error { return runSchedule(t, nw, s, &st) })
}

// runExamples runs each fixed schedule, as a subtest "example N", in a
// netsim run of its seed, and reports the errors its run returns.
func runExamples[S any](t *testing.T, examples []S, seed func(S) uint64, run func(*testing.T, *netsim.Network, S) []error) {
	t.Helper()
	for i, s := range examples {
		t.Run(fmt.Sprintf("example %d", i), func(t *testing.T) {
			netsim.Run(t, seed(s), nil, func(t *testing.T, nw *netsim.Network) {
				for _, err := range run(t, nw, s) {
					t.Errorf("schedule %v: %v", s, err)
				}
			})
		})
	}
}

// checkSimulated runs rapid over schedules that draw makes, each in a
// netsim run of its own seed, as a subtest named by that seed; a schedule
// whose run returns errors, or whose simulation fails, fails the check
// with the schedule, the errors and how to replay it.
func checkSimulated[S any](t *testing.T, draw func(*rapid.T) S, seed func(S) uint64, run func(*testing.T, *netsim.Network, S) []error) {
	t.Helper()
	rapid.Check(t, func(rt *rapid.T) {
		s := draw(rt)
		var errs []error
		ok := t.Run(fmt.Sprintf("seed=%d", seed(s)), func(t *testing.T) {
			netsim.Run(t, seed(s), nil, func(t *testing.T, nw *netsim.Network) {
				errs = run(t, nw, s)
			})
		})
		if !ok || len(errs) > 0 {
			if !ok {
				errs = append(errs, errors.New("the simulation itself failed (leaked goroutine, panic or deadlock): see the subtest's log"))
			}
			rt.Fatalf("schedule %v\n%v\nreplay: go test -run '^%s$' -rapid.seed=N ./e2e/sim, with the N rapid prints",
				s, errors.Join(errs...), t.Name())
		}
	})
}

// Random schedules of joins, quits, crashes, restarts, sends, partitions,
// heals, link failures and loss over three peers, then over four or five.
func TestPropertySchedules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max int
	}{{"3 peers", 3, 3}, {"4-5 peers", 4, 5}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkSchedules(t, tc.min, tc.max)
		})
	}
}

// scheduleStats sums what the schedules did, to show that their faults
// fire and their sends both succeed and fail.
type scheduleStats struct {
	schedules, sends, delivered, queued, failed int
	simulated                                   time.Duration
	faults                                      map[netsim.FaultKind]int64
}

func (st *scheduleStats) add(nw *netsim.Network, msgs []*message) {
	st.schedules++
	st.simulated += nw.Now()
	for _, m := range msgs {
		st.sends++
		switch {
		case m.err != nil:
			st.failed++
		case m.res.Status == chat.Queued:
			st.queued++
		default:
			st.delivered++
		}
	}
	if st.faults == nil {
		st.faults = map[netsim.FaultKind]int64{}
	}
	for k, v := range nw.FaultCounts() {
		st.faults[k] += v
	}
}

func (st *scheduleStats) String() string {
	return fmt.Sprintf("%d schedules, %v simulated; %d sends: %d delivered, %d queued, %d failed; faults %v",
		st.schedules, st.simulated.Round(time.Second), st.sends, st.delivered, st.queued, st.failed, st.faults)
}

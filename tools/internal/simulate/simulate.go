// Package simulate runs named netsim scenarios of simulated discovery peers;
// see tools/cmd/simulate.
package simulate

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
)

// Config is one simulation.
type Config struct {
	Scenario string
	Peers    int
	Seed     uint64
	Duration time.Duration
	Trace    io.Writer // nil: no trace
}

// Scenarios names every scenario with a one-line description.
var Scenarios = map[string]string{
	"lan":       "peers announce on one LAN and learn each other",
	"lossy":     "as lan, with 20% loss, 50 ms jitter and 5% duplication",
	"partition": "the LAN splits in two halves from 1/3 to 2/3 of the run",
	"churn":     "a tenth of the peers crash at 1/3 of the run and restart at 2/3",
}

// Run runs the scenario inside a synctest bubble and writes a summary to w.
func Run(t *testing.T, cfg Config, w io.Writer) error {
	if _, ok := Scenarios[cfg.Scenario]; !ok {
		return fmt.Errorf("simulate: unknown scenario %q (known: %s)", cfg.Scenario, strings.Join(names(), ", "))
	}
	var lines []string
	start := time.Now()
	hash := netsim.Run(t, cfg.Seed, &netsim.Options{Trace: cfg.Trace}, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		n.SetDefaultLink(netsim.Link{Latency: time.Millisecond})
		if cfg.Scenario == "lossy" {
			n.SetDefaultLink(netsim.Link{Latency: time.Millisecond, Jitter: 50 * time.Millisecond, Loss: 0.2, Duplicate: 0.05})
		}
		peers := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: cfg.Peers, Expiry: 15 * time.Second})
		third := cfg.Duration / 3
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
		switch cfg.Scenario {
		case "partition":
			time.Sleep(third)
			var a, b []*netsim.Host
			for i, p := range peers {
				if i < len(peers)/2 {
					a = append(a, p.Host)
				} else {
					b = append(b, p.Host)
				}
			}
			cut := n.Partition(a, b)
			time.Sleep(third)
			lines = append(lines, fmt.Sprintf("during the partition: %s", knownSummary(peers)))
			cut.Heal()
			time.Sleep(cfg.Duration - 2*third)
		case "churn":
			time.Sleep(third)
			victims := rng.Perm(len(peers))[:max(1, len(peers)/10)]
			slices.Sort(victims)
			for _, i := range victims {
				peers[i].Host.Crash()
			}
			time.Sleep(third)
			lines = append(lines, fmt.Sprintf("while %d peers are down: %s", len(victims), knownSummary(peers)))
			for _, i := range victims {
				peers[i].Host.Restart()
				peers[i].Start()
			}
			time.Sleep(cfg.Duration - 2*third)
		default:
			time.Sleep(cfg.Duration)
		}
		lines = append(lines, fmt.Sprintf("at the end: %s", knownSummary(peers)))
		n.Close()
		st := n.Stats()
		res := scenario.Summarize(peers)
		lines = append(lines,
			fmt.Sprintf("announces %d, deliveries %d, decoded %d", res.Announces, st.Deliveries, res.Decoded))
		var faults []string
		for k, v := range st.Faults {
			if v > 0 {
				faults = append(faults, fmt.Sprintf("%s=%d", k, v))
			}
		}
		sort.Strings(faults)
		lines = append(lines, "faults: "+strings.Join(faults, " "), fmt.Sprintf("trace lines %d", n.TraceLines()))
	})
	wall := time.Since(start)
	if t.Failed() {
		return fmt.Errorf("simulate: the run failed")
	}
	fmt.Fprintf(w, "scenario %s: %s\n", cfg.Scenario, Scenarios[cfg.Scenario])
	fmt.Fprintf(w, "peers %d, seed %d, simulated %v, wall %.2fs\n", cfg.Peers, cfg.Seed, cfg.Duration, wall.Seconds())
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "trace hash %s\n", hash)
	return nil
}

// knownSummary says how many peers each running peer knows: min, mean,
// max.
func knownSummary(peers []*scenario.Peer) string {
	lo, hi, sum, up := len(peers), 0, 0, 0
	for i, k := range scenario.Known(peers) {
		if !peers[i].Host.Up() {
			continue
		}
		lo, hi, sum, up = min(lo, k), max(hi, k), sum+k, up+1
	}
	return fmt.Sprintf("each of %d running peers knows min %d, mean %.1f, max %d of %d others",
		up, lo, float64(sum)/float64(max(up, 1)), hi, len(peers)-1)
}

func names() []string {
	var out []string
	for k := range Scenarios {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Package netsimbench runs netsim's multicast announce benchmark; see
// tools/cmd/netsimbench.
package netsimbench

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
)

// Config is one measurement.
type Config struct {
	Peers    int
	Seed     uint64
	Duration time.Duration
	Quantum  time.Duration
	NoDecode bool // skip the peers' JSON decoding, to time the network alone
}

// Run measures one configuration inside a synctest bubble and writes the
// figures to w.
func Run(t *testing.T, cfg Config, w io.Writer) error {
	var (
		stats netsim.Stats
		res   scenario.Result
		hash  string
	)
	start := time.Now() // before the bubble: wall time
	hash = netsim.Run(t, cfg.Seed, &netsim.Options{Quantum: cfg.Quantum}, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		peers := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: cfg.Peers, NoDecode: cfg.NoDecode})
		time.Sleep(cfg.Duration)
		n.Close()
		stats = n.Stats()
		res = scenario.Summarize(peers)
	})
	wall := time.Since(start)
	if t.Failed() {
		return fmt.Errorf("netsimbench: the run failed")
	}
	fmt.Fprintf(w, "peers %d, seed %d, simulated %v, quantum %v, decode %v\n", cfg.Peers, cfg.Seed, cfg.Duration, cfg.Quantum, !cfg.NoDecode)
	fmt.Fprintf(w, "wall time      %.2fs\n", wall.Seconds())
	fmt.Fprintf(w, "announces      %d\n", res.Announces)
	fmt.Fprintf(w, "deliveries     %d\n", stats.Deliveries)
	fmt.Fprintf(w, "decoded        %d\n", res.Decoded)
	fmt.Fprintf(w, "deliveries/s   %.0f (wall)\n", float64(stats.Deliveries)/wall.Seconds())
	fmt.Fprintf(w, "trace hash     %s\n", hash)
	if res.Decoded != int(stats.Deliveries) {
		return fmt.Errorf("netsimbench: %d deliveries but %d decoded", stats.Deliveries, res.Decoded)
	}
	return nil
}

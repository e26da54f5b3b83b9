// Package netsimbench runs netsim's multicast announce benchmark; see
// tools/cmd/netsimbench.
package netsimbench

import (
	"cmp"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
	"github.com/parlance-chat/parlance/protocol"
)

// Config is one measurement.
type Config struct {
	Peers    int
	Seed     uint64
	Duration time.Duration
	Quantum  time.Duration
	NoDecode bool // skip the peers' decoding, to time the network alone
	// Decoder is "protocol" (protocol.DecodeDatagram, what real peers run;
	// the default) or "json" (encoding/json into a three-field struct).
	Decoder string
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
	cpu0 := cpuTimes()
	hash = netsim.Run(t, cfg.Seed, &netsim.Options{Quantum: cfg.Quantum}, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		sc := scenario.Config{Peers: cfg.Peers, NoDecode: cfg.NoDecode}
		if cfg.Decoder != "json" {
			sc.Decode = decodeAnnounce
		}
		peers := scenario.StartAnnouncers(n, lan, sc)
		time.Sleep(cfg.Duration)
		n.Close()
		stats = n.Stats()
		res = scenario.Summarize(peers)
	})
	wall := time.Since(start)
	cpu := cpuTimes().sub(cpu0)
	if t.Failed() {
		return fmt.Errorf("netsimbench: the run failed")
	}
	decoder := "none"
	if !cfg.NoDecode {
		decoder = cmp.Or(cfg.Decoder, "protocol")
	}
	fmt.Fprintf(w, "peers %d, seed %d, simulated %v, quantum %v, decoder %s\n", cfg.Peers, cfg.Seed, cfg.Duration, cfg.Quantum, decoder)
	fmt.Fprintf(w, "wall time      %.2fs\n", wall.Seconds())
	fmt.Fprintf(w, "CPU time       %.2fs user, %.2fs system\n", cpu.user.Seconds(), cpu.sys.Seconds())
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

// decodeAnnounce is the peers' decoder: the protocol's own.
func decodeAnnounce(b []byte) (string, bool) {
	d, err := protocol.DecodeDatagram(b)
	if err != nil {
		return "", false
	}
	a, ok := d.(*protocol.Announce)
	if !ok {
		return "", false
	}
	return a.Nickname, true
}

type cpuTime struct{ user, sys time.Duration }

func (a cpuTime) sub(b cpuTime) cpuTime { return cpuTime{a.user - b.user, a.sys - b.sys} }

// cpuTimes returns the process's CPU time so far.
func cpuTimes() cpuTime {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return cpuTime{}
	}
	return cpuTime{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// Command netsimbench measures netsim's multicast throughput: N peers on one
// segment each multicast a discovery announce every 1-5 s (at random) and
// JSON-decode every datagram they receive, for a span of simulated time.
//
//	go run ./cmd/netsimbench -n 1000 -seed 1 -duration 60s
//
// It prints the wall time, the deliveries and deliveries per wall second.
// netsim needs a testing/synctest bubble, which needs a *testing.T, so the
// command runs its one measurement through testing.Main.
package main

import (
	"flag"
	"os"
	"regexp"
	"testing"

	"github.com/parlance-chat/parlance/tools/internal/netsimbench"
)

func main() {
	var cfg netsimbench.Config
	flag.IntVar(&cfg.Peers, "n", 1000, "number of peers")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "network seed")
	flag.DurationVar(&cfg.Duration, "duration", 60e9, "simulated time to run")
	flag.DurationVar(&cfg.Quantum, "quantum", 1e6, "delivery quantum")
	decode := flag.Bool("decode", true, "JSON-decode every datagram received (false: time the network alone)")
	testing.Init()
	flag.Parse()
	cfg.NoDecode = !*decode
	tests := []testing.InternalTest{{Name: "NetsimBench", F: func(t *testing.T) {
		if err := netsimbench.Run(t, cfg, os.Stdout); err != nil {
			t.Fatal(err)
		}
	}}}
	testing.Main(regexp.MatchString, tests, nil, nil)
}

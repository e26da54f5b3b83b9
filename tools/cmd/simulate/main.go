// Command simulate runs a named scenario of simulated discovery peers on
// netsim and prints a summary, and with -trace the network's event trace
// (JSON lines), so a person can watch the simulator work:
//
//	go run ./cmd/simulate -scenario churn -n 50 -seed 7
//	go run ./cmd/simulate -scenario partition -n 10 -duration 30s -trace trace.jsonl
//
// The same seed prints the same trace hash. netsim needs a synctest bubble,
// which needs a *testing.T, so the command runs through testing.Main.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/parlance-chat/parlance/tools/internal/simulate"
)

func main() {
	var cfg simulate.Config
	flag.StringVar(&cfg.Scenario, "scenario", "lan", "scenario: lan, lossy, partition or churn")
	flag.IntVar(&cfg.Peers, "n", 20, "number of peers")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "network seed")
	flag.DurationVar(&cfg.Duration, "duration", 60e9, "simulated time to run")
	trace := flag.String("trace", "", "write the event trace to this file (- for stdout)")
	testing.Init()
	flag.Parse()
	tests := []testing.InternalTest{{Name: "Simulate", F: func(t *testing.T) {
		switch *trace {
		case "":
		case "-":
			cfg.Trace = os.Stdout
		default:
			f, err := os.Create(*trace)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg.Trace = f
		}
		if err := simulate.Run(t, cfg, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			t.FailNow()
		}
	}}}
	testing.Main(regexp.MatchString, tests, nil, nil)
}

// Command simulate runs a named scenario on netsim, the deterministic
// network simulator, and prints a summary, and with -trace the network's
// event trace (JSON lines), so a person can watch the simulator work.
//
// The chat-* scenarios run the real product: Parlance nodes (client/chat)
// and, in chat-internet, the real rendezvous server (bootstrap-server). The
// others run simple announcing peers (netsim/scenario):
//
//	go run ./cmd/simulate -list
//	go run ./cmd/simulate -scenario chat-lan -n 20 -seed 3
//	go run ./cmd/simulate -scenario chat-churn -n 50 -seed 7
//	go run ./cmd/simulate -scenario chat-partition -n 10 -trace trace.jsonl
//	go run ./cmd/simulate -scenario chat-internet -n 20
//	go run ./cmd/simulate -scenario churn -n 50 -seed 7 -duration 30s
//
// Each scenario is described in the package doc of
// tools/internal/simulate. Every run prints the seed, the simulated and
// wall time, the trace's line count and hash; the same seed prints the
// same hash (in chat-internet a hash of the trace without payload
// checksums, since WebSocket client frames are masked with unseeded
// randomness). The chat scenarios run at most 500 nodes.
//
// netsim needs a synctest bubble, which needs a *testing.T, so the
// command runs through testing.Main.
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
	flag.StringVar(&cfg.Scenario, "scenario", "lan", "scenario (see -list)")
	flag.IntVar(&cfg.Peers, "n", 20, "number of peers (chat scenarios: nodes, at most 500)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "network seed")
	flag.DurationVar(&cfg.Duration, "duration", 60e9, "simulated time to run (chat-lan: steady state after the last start; other chat scenarios run their own phases)")
	trace := flag.String("trace", "", "write the event trace to this file (- for stdout)")
	list := flag.Bool("list", false, "list the scenarios and exit")
	testing.Init()
	flag.Parse()
	if *list {
		for _, name := range simulate.Names() {
			fmt.Printf("%-15s %s\n", name, simulate.Scenarios[name])
		}
		return
	}
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
		if _, err := simulate.Run(t, cfg, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			t.FailNow()
		}
	}}}
	testing.Main(regexp.MatchString, tests, nil, nil)
}

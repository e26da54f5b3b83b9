// Command netsimbench measures netsim's multicast throughput: N peers on one
// segment each multicast a discovery announce every 1-5 s (at random) and
// decode every datagram they receive with protocol.DecodeDatagram (or,
// with -decoder json, encoding/json into a struct), for a span of
// simulated time.
//
//	go run ./cmd/netsimbench -n 1000 -seed 1 -duration 60s
//	go run ./cmd/netsimbench -n 1000 -cpuprofile cpu.out  # then: go tool pprof -top cpu.out
//
// It prints the wall time, the process's CPU time, the deliveries and
// deliveries per wall second, and the trace hash. netsim needs a
// testing/synctest bubble, which needs a *testing.T, so the command runs
// its one measurement through testing.Main.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"testing"

	"github.com/parlance-chat/parlance/tools/internal/netsimbench"
)

func main() {
	var cfg netsimbench.Config
	flag.IntVar(&cfg.Peers, "n", 1000, "number of peers")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "network seed")
	flag.DurationVar(&cfg.Duration, "duration", 60e9, "simulated time to run")
	flag.DurationVar(&cfg.Quantum, "quantum", 1e6, "delivery quantum")
	decode := flag.Bool("decode", true, "decode every datagram received (false: time the network alone)")
	flag.StringVar(&cfg.Decoder, "decoder", "protocol", "protocol (protocol.DecodeDatagram) or json (encoding/json into a struct)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	testing.Init()
	flag.Parse()
	cfg.NoDecode = !*decode
	if cfg.Decoder != "protocol" && cfg.Decoder != "json" {
		fmt.Fprintln(os.Stderr, "netsimbench: -decoder must be protocol or json")
		os.Exit(2)
	}
	tests := []testing.InternalTest{{Name: "NetsimBench", F: func(t *testing.T) {
		if *cpuprofile != "" {
			// Started here: testing.Main exits without returning, and
			// -test.cpuprofile works only in a real test binary.
			f, err := os.Create(*cpuprofile)
			if err != nil {
				t.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		if err := netsimbench.Run(t, cfg, os.Stdout); err != nil {
			t.Fatal(err)
		}
	}}}
	testing.Main(regexp.MatchString, tests, nil, nil)
}

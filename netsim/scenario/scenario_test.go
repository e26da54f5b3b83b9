package scenario_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
)

// TestAnnounceLoad is the benchmark workload as a test, for profiling:
//
//	NETSIM_BENCH_PEERS=1000 go test -run AnnounceLoad -cpuprofile cpu.out ./scenario
//
// Without NETSIM_BENCH_PEERS it runs 50 peers for 20 s and checks that
// everyone hears everyone.
func TestAnnounceLoad(t *testing.T) {
	peers, dur := 50, 20*time.Second
	if s := os.Getenv("NETSIM_BENCH_PEERS"); s != "" {
		peers, _ = strconv.Atoi(s)
		dur = 60 * time.Second
	}
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		expiry := 15 * time.Second
		if os.Getenv("NETSIM_BENCH_PEERS") != "" {
			expiry = 0
		}
		ps := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: peers, Expiry: expiry, NoDecode: os.Getenv("NETSIM_BENCH_NODECODE") != ""})
		time.Sleep(dur)
		n.Close()
		res := scenario.Summarize(ps)
		st := n.Stats()
		if res.Decoded != int(st.Deliveries) || res.Decoded != res.Announces*peers {
			t.Errorf("decoded %d, delivered %d, announced %d x %d peers", res.Decoded, st.Deliveries, res.Announces, peers)
		}
		for i, k := range res.Known {
			if expiry == 0 {
				break
			}
			if k != peers-1 {
				t.Errorf("peer%d knows %d peers, want %d", i, k, peers-1)
			}
		}
	})
}

// A Decode function replaces the default decoding: here it rejects every
// datagram from peer0.
func TestAnnounceDecodeHook(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		decode := func(b []byte) (string, bool) {
			if strings.Contains(string(b), `"peer0"`) {
				return "", false
			}
			return "x", true
		}
		ps := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: 3, Decode: decode})
		time.Sleep(10 * time.Second)
		n.Close()
		res := scenario.Summarize(ps)
		if res.Invalid == 0 || res.Invalid%3 != 0 || res.Decoded == 0 || res.Decoded+res.Invalid != res.Announces*3 {
			t.Errorf("invalid %d, decoded %d, announced %d", res.Invalid, res.Decoded, res.Announces)
		}
	})
}

package netsim_test

import (
	"bufio"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
)

// busyWorld runs a little of everything: multicast announcers over a lossy,
// jittery, duplicating LAN, stream clients talking to an echo server, a
// partition, a crash and a restart.
func busyWorld(t *testing.T, n *netsim.Network) {
	lan := n.AddSegment("lan")
	n.SetDefaultLink(netsim.Link{Latency: 2 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.05, Duplicate: 0.05})
	peers := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: 12, Expiry: 3 * time.Second})
	server := n.AddHost("server", lan)
	echoServer(t, server, 7)
	for i := range 3 {
		h := peers[i].Host
		h.Go(func(ctx context.Context) {
			for ctx.Err() == nil {
				c, err := h.DialContext(ctx, "tcp", "server:7")
				if err != nil {
					return
				}
				r := bufio.NewReader(c)
				for j := 0; ctx.Err() == nil; j++ {
					fmt.Fprintf(c, "%s line %d\n", h.Name(), j)
					if _, err := r.ReadString('\n'); err != nil {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
				c.Close()
			}
		})
	}
	time.Sleep(2 * time.Second)
	cut := n.Partition([]*netsim.Host{peers[0].Host, peers[1].Host}, []*netsim.Host{server, peers[5].Host})
	time.Sleep(time.Second)
	peers[7].Host.Crash()
	time.Sleep(time.Second)
	cut.Heal()
	time.Sleep(time.Second)
	peers[7].Host.Restart()
	peers[7].Start()
	time.Sleep(3 * time.Second)
}

func TestDeterminism(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 0xdeadbeef} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			netsim.CheckDeterminism(t, seed, busyWorld)
		})
	}
}

func TestDifferentSeedsDiffer(t *testing.T) {
	h1 := netsim.Run(t, 1, nil, busyWorld)
	h2 := netsim.Run(t, 2, nil, busyWorld)
	if h1 == h2 {
		t.Errorf("seeds 1 and 2 gave the same trace %s", h1)
	}
}

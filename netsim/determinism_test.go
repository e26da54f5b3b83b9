package netsim_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
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

// fanOutWorld has one host dial sixteen servers at once, from a goroutine
// each, twice: the bubble runs the goroutines in any order, and the trace
// must not show it.
func fanOutWorld(t *testing.T, n *netsim.Network) {
	lan := n.AddSegment("lan")
	n.SetDefaultLink(netsim.Link{Latency: 2 * time.Millisecond})
	client := n.AddHost("client", lan)
	var servers []*netsim.Host
	for i := range 16 {
		s := n.AddHost(fmt.Sprintf("s%d", i), lan)
		echoServer(t, s, 7)
		servers = append(servers, s)
	}
	for round := range 2 {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() {
				c, err := client.DialContext(t.Context(), "tcp", s.Name()+":7")
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				fmt.Fprintf(c, "round %d to %s\n", round, s.Name())
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Second)
	}
}

// Concurrent dials to different destinations give one trace: a dial's
// ephemeral port and its place in the delivery order depend on its
// destination, not on the order the dialing goroutines ran in.
func TestConcurrentDialsDeterminism(t *testing.T) {
	netsim.CheckDeterminism(t, 1, fanOutWorld)
	want := netsim.Run(t, 1, nil, fanOutWorld)
	for i := range 20 {
		if got := netsim.Run(t, 1, nil, fanOutWorld); got != want {
			t.Fatalf("run %d of seed 1: trace hash %s, want %s", i+2, got[:12], want[:12])
		}
	}
}

// A dial's ephemeral port depends on its destination and the earlier
// dials to it, not on dials to other destinations.
func TestDialPortDependsOnDestinationOnly(t *testing.T) {
	ports := func(order []string) map[string][]string {
		got := map[string][]string{}
		netsim.Test(t, func(t *testing.T, n *netsim.Network) {
			lan := n.AddSegment("lan")
			a := n.AddHost("a", lan)
			for _, name := range []string{"b", "c"} {
				echoServer(t, n.AddHost(name, lan), 7)
			}
			var conns []net.Conn
			for _, to := range order {
				c, err := a.DialContext(t.Context(), "tcp", to+":7")
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				got[to] = append(got[to], c.LocalAddr().String())
			}
			for _, c := range conns {
				c.Close()
			}
		})
		return got
	}
	one := ports([]string{"b", "b", "c", "c"})
	two := ports([]string{"c", "b", "c", "b"})
	for _, to := range []string{"b", "c"} {
		if fmt.Sprint(one[to]) != fmt.Sprint(two[to]) {
			t.Errorf("dials to %s got ports %v, and %v when interleaved otherwise with dials to the other", to, one[to], two[to])
		}
		if one[to][0] == one[to][1] {
			t.Errorf("two dials to %s both got %s", to, one[to][0])
		}
	}
}

package netsim_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

var group = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 6789}

// echoServer accepts streams on h and echoes them back line by line until
// the host's context ends.
func echoServer(t *testing.T, h *netsim.Host, port int) {
	t.Helper()
	serveStreams(t, h, port, func(c net.Conn) { io.Copy(c, c) })
}

// serveStreams accepts streams on h:port and runs handle on each, in a
// goroutine of its own, until the host's context ends; each stream is
// closed when handle returns or the context ends.
func serveStreams(t *testing.T, h *netsim.Host, port int, handle func(net.Conn)) {
	t.Helper()
	ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	h.Go(func(ctx context.Context) {
		var wg sync.WaitGroup
		defer wg.Wait()
		context.AfterFunc(ctx, func() { ln.Close() })
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				defer stop()
				handle(c)
			}()
		}
	})
}

func TestStreamEcho(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		a, b := n.AddHost("a", lan), n.AddHost("b", lan)
		n.SetDefaultLink(netsim.Link{Latency: 10 * time.Millisecond})
		echoServer(t, b, 7)
		start := time.Now()
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if rtt := time.Since(start); rtt != 20*time.Millisecond {
			t.Errorf("dial took %v, want one round trip of 20ms", rtt)
		}
		if got, want := c.RemoteAddr().String(), "10.1.0.2:7"; got != want {
			t.Errorf("RemoteAddr = %s, want %s", got, want)
		}
		fmt.Fprintf(c, "hello\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "hello\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	})
}

func TestDialClosedPortIsRefused(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		a := n.AddHost("a", lan)
		n.AddHost("b", lan)
		_, err := a.DialContext(t.Context(), "tcp", "10.1.0.2:9")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
		}
	})
}

func TestMulticastReachesEveryMemberOfTheSegmentOnly(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan, other := n.AddSegment("lan"), n.AddSegment("other")
		a, b := n.AddHost("a", lan), n.AddHost("b", lan)
		c := n.AddHost("c", other)
		ctx := t.Context()
		var socks []net.PacketConn
		for _, h := range []*netsim.Host{a, a, b, c} {
			pc, err := h.ListenMulticastUDP(ctx, "udp4", nil, group)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			socks = append(socks, pc)
		}
		if _, err := socks[0].WriteTo([]byte(`{"type":"announce"}`), group); err != nil {
			t.Fatal(err)
		}
		n.RunFor(5 * time.Millisecond)
		for i, pc := range socks[:3] {
			pc.SetReadDeadline(time.Now().Add(time.Millisecond))
			buf := make([]byte, 100)
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
			if string(buf[:k]) != `{"type":"announce"}` || from.String() != "10.1.0.1:6789" {
				t.Errorf("socket %d got %q from %v", i, buf[:k], from)
			}
		}
		socks[3].SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := socks[3].ReadFrom(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a host on another segment received the multicast: %v", err)
		}
	})
}

func TestUnicastDatagram(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		a, b := n.AddHost("a", lan), n.AddHost("b", lan)
		pa, err := a.ListenPacket(t.Context(), "udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pa.Close()
		pb, err := b.ListenPacket(t.Context(), "udp4", "0.0.0.0:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer pb.Close()
		if _, err := pa.WriteTo([]byte("ping"), pb.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		k, from, err := pb.ReadFrom(buf)
		if err != nil || string(buf[:k]) != "ping" || from.String() != pa.LocalAddr().String() {
			t.Fatalf("ReadFrom = %q, %v, %v; want ping from %v", buf[:k], from, err, pa.LocalAddr())
		}
		if _, ok := from.(*net.UDPAddr); !ok {
			t.Errorf("ReadFrom address is %T, want *net.UDPAddr", from)
		}
	})
}

func TestInterfacesNameSegments(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan1, lan2 := n.AddSegment("lan1"), n.AddSegment("lan2")
		router := n.AddHost("router", lan1, lan2)
		peer := n.AddHost("peer", lan2)
		var names []string
		for _, ifi := range router.Interfaces() {
			names = append(names, ifi.Name)
		}
		if !slices.Equal(names, []string{"eth0", "eth1"}) {
			t.Fatalf("interfaces = %v", names)
		}
		ctx := t.Context()
		rx, err := peer.ListenMulticastUDP(ctx, "udp4", nil, group)
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		tx, err := router.ListenMulticastUDP(ctx, "udp4", router.Interface("eth1"), group)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		tx.WriteTo([]byte("hi"), group)
		buf := make([]byte, 10)
		_, from, err := rx.ReadFrom(buf)
		if err != nil || !strings.HasPrefix(from.String(), "10.2.0.1:") {
			t.Fatalf("got from %v, %v; want the router's lan2 address", from, err)
		}
	})
}

func TestRunUntilStopsAtTheCondition(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		got := make(chan string, 1)
		b.Go(func(ctx context.Context) {
			buf := make([]byte, 10)
			k, _, err := rx.ReadFrom(buf)
			if err == nil {
				got <- string(buf[:k])
			}
		})
		a.Go(func(ctx context.Context) {
			time.Sleep(3 * time.Second)
			tx.WriteTo([]byte("late"), rx.LocalAddr())
		})
		start := time.Now()
		ok := n.RunUntil(func() bool { return len(got) == 1 }, time.Minute)
		if !ok || time.Since(start) > 3*time.Second+20*time.Millisecond {
			t.Errorf("RunUntil = %v after %v, want true soon after 3s", ok, time.Since(start))
		}
		if n.RunUntil(func() bool { return false }, time.Second) {
			t.Error("RunUntil reported a false condition as met")
		}
		rx.Close()
	})
}

func TestThousandHostsHearOneAnnounce(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		var socks []net.PacketConn
		for i := range 1000 {
			h := n.AddHost(fmt.Sprintf("h%d", i), lan)
			pc, err := h.ListenMulticastUDP(h.Context(), "udp4", nil, group)
			if err != nil {
				t.Fatal(err)
			}
			socks = append(socks, pc)
		}
		socks[0].WriteTo([]byte("hello"), group)
		n.RunFor(time.Millisecond)
		if got := n.Stats().Deliveries; got != 1000 {
			t.Errorf("%d deliveries, want 1000", got)
		}
		if got, want := socks[999].LocalAddr().String(), "10.1.3.232:6789"; got != want {
			t.Errorf("host 1000's address = %s, want %s", got, want)
		}
	})
}

func TestIsolateCutsOneHostFromAll(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		a, b := n.AddHost("a", lan), n.AddHost("b", lan)
		ab, brx := udpPair(t, a, b)
		n.Isolate(a)
		late := n.AddHost("late", lan) // added after the rule: still cut off
		lb, lrx := udpPair(t, late, a)
		sendN(t, ab, brx.LocalAddr(), 1)
		sendN(t, lb, lrx.LocalAddr(), 1)
		n.RunFor(time.Millisecond)
		if len(drain(brx))+len(drain(lrx)) != 0 {
			t.Error("an isolated host exchanged datagrams")
		}
		if c := n.FaultCount(netsim.FaultPartition); c != 2 {
			t.Errorf("partition count %d, want 2", c)
		}
	})
}

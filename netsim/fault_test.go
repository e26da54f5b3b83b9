package netsim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// udpPair returns a sender socket on a and a receiver socket on b:5000.
func udpPair(t *testing.T, a, b *netsim.Host) (tx, rx net.PacketConn) {
	t.Helper()
	tx, err := a.ListenPacket(t.Context(), "udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	rx, err = b.ListenPacket(t.Context(), "udp", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	return tx, rx
}

// drain reads every datagram queued on pc within the next millisecond.
func drain(pc net.PacketConn) []string {
	var got []string
	buf := make([]byte, 1500)
	pc.SetReadDeadline(time.Now().Add(time.Millisecond))
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:k]))
	}
}

func sendN(t *testing.T, tx net.PacketConn, to net.Addr, count int) {
	t.Helper()
	for i := range count {
		if _, err := tx.WriteTo(fmt.Appendf(nil, "%d", i), to); err != nil {
			t.Fatal(err)
		}
	}
}

func twoHosts(n *netsim.Network) (a, b *netsim.Host) {
	lan := n.AddSegment("lan")
	return n.AddHost("a", lan), n.AddHost("b", lan)
}

func wantCount(t *testing.T, n *netsim.Network, k netsim.FaultKind) int64 {
	t.Helper()
	c := n.FaultCount(k)
	if c == 0 {
		t.Errorf("fault %q never fired", k)
	}
	return c
}

func TestFaultLatency(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Latency: 30 * time.Millisecond})
		start := time.Now()
		sendN(t, tx, rx.LocalAddr(), 1)
		if _, _, err := rx.ReadFrom(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 30*time.Millisecond {
			t.Errorf("datagram took %v, want 30ms", got)
		}
		wantCount(t, n, netsim.FaultLatency)
	})
}

func TestFaultLatencyRaisedInFlight(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Latency: 10 * time.Millisecond})
		start := time.Now()
		sendN(t, tx, rx.LocalAddr(), 1)
		time.Sleep(5 * time.Millisecond)
		n.SetDefaultLink(netsim.Link{Latency: 100 * time.Millisecond})
		rx.ReadFrom(make([]byte, 10))
		if got := time.Since(start); got != 100*time.Millisecond {
			t.Errorf("datagram in flight took %v, want the raised 100ms", got)
		}
	})
}

func TestFaultJitterReorders(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Latency: time.Millisecond, Jitter: 50 * time.Millisecond})
		sendN(t, tx, rx.LocalAddr(), 50)
		n.RunFor(100 * time.Millisecond)
		got := drain(rx)
		if len(got) != 50 {
			t.Fatalf("got %d datagrams, want 50", len(got))
		}
		inOrder := true
		for i, s := range got {
			inOrder = inOrder && s == fmt.Sprint(i)
		}
		if inOrder {
			t.Error("50 jittered datagrams arrived in order")
		}
		wantCount(t, n, netsim.FaultJitter)
	})
}

func TestFaultLoss(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Loss: 0.5})
		sendN(t, tx, rx.LocalAddr(), 200)
		n.RunFor(10 * time.Millisecond)
		got := len(drain(rx))
		lost := wantCount(t, n, netsim.FaultLoss)
		if int64(got)+lost != 200 || got < 50 || got > 150 {
			t.Errorf("received %d and lost %d of 200 at 50%% loss", got, lost)
		}
	})
}

func TestFaultLossAppliesInFlight(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Latency: 50 * time.Millisecond})
		sendN(t, tx, rx.LocalAddr(), 10)
		time.Sleep(10 * time.Millisecond)
		n.SetDefaultLink(netsim.Link{Latency: 50 * time.Millisecond, Loss: 1})
		n.RunFor(100 * time.Millisecond)
		if got := drain(rx); len(got) != 0 {
			t.Errorf("received %d datagrams sent before total loss began, want 0", len(got))
		}
		if c := n.FaultCount(netsim.FaultLoss); c != 10 {
			t.Errorf("loss count %d, want 10", c)
		}
	})
}

func TestFaultDuplicate(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		n.SetDefaultLink(netsim.Link{Duplicate: 1})
		sendN(t, tx, rx.LocalAddr(), 10)
		n.RunFor(10 * time.Millisecond)
		if got := len(drain(rx)); got != 20 {
			t.Errorf("received %d datagrams, want each of 10 twice", got)
		}
		wantCount(t, n, netsim.FaultDuplicate)
	})
}

func TestFaultPartitionDropsDatagramsAndStallsStreams(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		echoServer(t, b, 7)
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		p := n.Partition([]*netsim.Host{a}, []*netsim.Host{b})
		sendN(t, tx, rx.LocalAddr(), 3)
		msg := bytes.Repeat([]byte("stream bytes survive a partition. "), 1000)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		n.RunFor(10 * time.Second)
		if got := drain(rx); len(got) != 0 {
			t.Errorf("%d datagrams crossed the partition", len(got))
		}
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if k, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read across a partition = %d, %v; want a timeout", k, err)
		}
		wantCount(t, n, netsim.FaultPartition)
		wantCount(t, n, netsim.FaultStall)

		p.Heal()
		c.SetReadDeadline(time.Time{})
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("after heal: %v, equal=%v", err, bytes.Equal(got, msg))
		}
	})
}

func TestFaultPartitionOneWay(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		ab, brx := udpPair(t, a, b)
		ba, arx := udpPair(t, b, a)
		n.PartitionOneWay([]*netsim.Host{a}, []*netsim.Host{b})
		sendN(t, ab, brx.LocalAddr(), 1)
		sendN(t, ba, arx.LocalAddr(), 1)
		n.RunFor(10 * time.Millisecond)
		if got := drain(brx); len(got) != 0 {
			t.Error("a reached b through a one-way partition a -> b")
		}
		if got := drain(arx); len(got) != 1 {
			t.Error("b did not reach a: the partition is one-way")
		}
		wantCount(t, n, netsim.FaultPartition)
	})
}

func TestFaultHoldAndRelease(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		hold := n.Hold([]*netsim.Host{a}, []*netsim.Host{b})
		sendN(t, tx, rx.LocalAddr(), 5)
		n.RunFor(time.Second)
		if got := drain(rx); len(got) != 0 {
			t.Fatalf("%d held datagrams were delivered", len(got))
		}
		wantCount(t, n, netsim.FaultHold)
		hold.Release()
		n.RunFor(10 * time.Millisecond)
		if got := drain(rx); strings.Join(got, ",") != "0,1,2,3,4" {
			t.Errorf("after release got %v, want 0..4 in order", got)
		}
	})
}

func TestFaultCrashAndRestart(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond})
		echoServer(t, b, 7)
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bctx := b.Context()
		stopped := make(chan struct{})
		b.Go(func(ctx context.Context) {
			<-ctx.Done()
			close(stopped)
		})

		b.Crash()
		if bctx.Err() == nil {
			t.Error("the crashed host's context is not cancelled")
		}
		select {
		case <-stopped:
		default:
			t.Error("Crash returned before the host's goroutines stopped")
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read from a crashed peer: %v, want ECONNRESET", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		if _, err := a.DialContext(ctx, "tcp", "b:7"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dial to a crashed host: %v, want the context's deadline (SYNs vanish)", err)
		}
		wantCount(t, n, netsim.FaultCrash)
		wantCount(t, n, netsim.FaultReset)
		wantCount(t, n, netsim.FaultHostDown) // the SYN that vanished

		b.Restart()
		if b.Context().Err() != nil || b.IP().String() != "10.1.0.2" {
			t.Fatal("restarted host has no fresh context or changed address")
		}
		echoServer(t, b, 7)
		c2, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatalf("dial after restart: %v", err)
		}
		c2.Close()
		wantCount(t, n, netsim.FaultRestart)
	})
}

func TestFaultLinkDownAndUp(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		echoServer(t, b, 7)
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b.LinkDown()
		sendN(t, tx, rx.LocalAddr(), 2)
		fmt.Fprintf(c, "ping")
		n.RunFor(time.Second)
		if len(drain(rx)) != 0 {
			t.Error("datagrams crossed a down link")
		}
		wantCount(t, n, netsim.FaultLinkDown)
		wantCount(t, n, netsim.FaultStall)
		b.LinkUp()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Errorf("after link up: %q, %v", buf, err)
		}
	})
}

func TestFaultResetStreams(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		echoServer(t, b, 7)
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if k := n.ResetStreams([]*netsim.Host{a}, []*netsim.Host{b}); k != 1 {
			t.Errorf("reset %d streams, want 1", k)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("write after reset: %v, want ECONNRESET", err)
		}
		wantCount(t, n, netsim.FaultReset)
	})
}

func TestFaultRuleHookTriggersOnContent(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		var cut *netsim.Rule
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			switch {
			case bytes.Contains(p.Payload, []byte("drop me")):
				return netsim.Verdict{Drop: true}
			case bytes.Contains(p.Payload, []byte("register")) && cut == nil:
				// Partition right after the first register.
				return netsim.Verdict{Then: func() { cut = n.Partition([]*netsim.Host{a}, []*netsim.Host{b}) }}
			}
			return netsim.Verdict{}
		})
		for _, s := range []string{"hello", "drop me", "register", "after"} {
			tx.WriteTo([]byte(s), rx.LocalAddr())
			time.Sleep(time.Millisecond)
		}
		n.RunFor(10 * time.Millisecond)
		if got := strings.Join(drain(rx), ","); got != "hello,register" {
			t.Errorf("received %q, want hello,register", got)
		}
		if cut == nil {
			t.Error("the hook's Then never ran")
		}
		wantCount(t, n, netsim.FaultRule)
		wantCount(t, n, netsim.FaultPartition)
	})
}

func TestFaultBufferOverflow(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		sendN(t, tx, rx.LocalAddr(), 100)
		n.RunFor(10 * time.Millisecond)
		if got := len(drain(rx)); got != 55 {
			t.Errorf("received %d datagrams into a 100-byte buffer, want 55 (\"0\" to \"54\")", got)
		}
		wantCount(t, n, netsim.FaultBufferOverflow)
	}, netsim.Options{UDPBuffer: 100})
}

func TestStreamBackpressure(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		c1, c2 := netsimPipe(t, n)
		defer c1.Close()
		defer c2.Close()
		c1.SetWriteDeadline(time.Now().Add(time.Second))
		k, err := c1.Write(make([]byte, 100<<10))
		if !errors.Is(err, os.ErrDeadlineExceeded) || k != 16<<10 {
			t.Errorf("write to a peer that does not read: %d bytes, %v; want the 16 KiB window then a timeout", k, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%v is not a net.Error with Timeout", err)
		}
	}, netsim.Options{Window: 16 << 10})
}

func TestStreamCloseWrite(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		c1, c2 := netsimPipe(t, n)
		defer c1.Close()
		defer c2.Close()
		fmt.Fprint(c1, "request")
		if err := c1.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		req, err := io.ReadAll(c2)
		if err != nil || string(req) != "request" {
			t.Fatalf("server read %q, %v", req, err)
		}
		fmt.Fprint(c2, "response")
		c2.Close()
		resp, err := io.ReadAll(c1)
		if err != nil || string(resp) != "response" {
			t.Fatalf("client read %q, %v after its CloseWrite", resp, err)
		}
	})
}

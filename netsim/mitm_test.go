package netsim_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// The OnPacket hook as a man in the middle: Verdict.Replace and
// Verdict.Duplicate.

func wantExactly(t *testing.T, n *netsim.Network, k netsim.FaultKind, want int64) {
	t.Helper()
	if got := n.FaultCount(k); got != want {
		t.Errorf("fault %q fired %d times, want %d", k, got, want)
	}
}

// readN reads exactly k bytes from c, failing after a second of simulated
// time.
func readN(t *testing.T, c net.Conn, k int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, k)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", k, err, buf)
	}
	return string(buf)
}

// wantNothingMore checks that c has no byte to read.
func wantNothingMore(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	if k, err := c.Read(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read %d more bytes (%v), want none", k, err)
	}
}

// wantWindow checks that w can write exactly window bytes to a peer that
// does not read: the rewrites and replays left the flow control exact.
func wantWindow(t *testing.T, w net.Conn, window int) {
	t.Helper()
	w.SetWriteDeadline(time.Now().Add(time.Second))
	defer w.SetWriteDeadline(time.Time{})
	k, err := w.Write(make([]byte, 2*window))
	if k != window || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write to a peer that does not read: %d bytes, %v; want the %d-byte window then a timeout", k, err, window)
	}
}

func TestFaultRewriteDatagram(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		repl := []byte("two!")
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			switch string(p.Payload) {
			case "2":
				// The hook may reuse its slice: netsim copied it.
				return netsim.Verdict{Replace: repl, Then: func() { copy(repl, "XXXX") }}
			case "4":
				return netsim.Verdict{Replace: []byte{}}
			}
			return netsim.Verdict{}
		})
		sendN(t, tx, rx.LocalAddr(), 5)
		n.RunFor(10 * time.Millisecond)
		if got := strings.Join(drain(rx), ","); got != "0,1,two!,3," {
			t.Errorf("received %q, want 0,1,two!,3, (the last one empty)", got)
		}
		wantExactly(t, n, netsim.FaultRewrite, 2)
		wantExactly(t, n, netsim.FaultReplay, 0)
	})
}

func TestFaultRewriteMulticastReachesEveryMember(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		var socks []net.PacketConn
		for i := range 3 {
			pc, err := n.AddHost(fmt.Sprint("h", i), lan).ListenMulticastUDP(t.Context(), "udp", nil, group)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			socks = append(socks, pc)
		}
		seen := 0
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			seen++
			return netsim.Verdict{Replace: []byte("forged")}
		})
		socks[0].WriteTo([]byte("hello"), group)
		n.RunFor(10 * time.Millisecond)
		for i, pc := range socks {
			if got := strings.Join(drain(pc), ","); got != "forged" {
				t.Errorf("member %d received %q, want forged", i, got)
			}
		}
		if seen != 1 {
			t.Errorf("the hook saw the multicast datagram %d times, want once", seen)
		}
		wantExactly(t, n, netsim.FaultRewrite, 1)
	})
}

func TestFaultRewriteStreamSameLength(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		c1, c2 := netsimPipe(t, n)
		defer c1.Close()
		defer c2.Close()
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Kind == "data" && string(p.Payload) == "attack at dawn" {
				return netsim.Verdict{Replace: []byte("attack at dusk")}
			}
			return netsim.Verdict{}
		})
		fmt.Fprint(c1, "attack at dawn")
		fmt.Fprint(c1, ", bring bread")
		if got := readN(t, c2, 27); got != "attack at dusk, bring bread" {
			t.Errorf("read %q", got)
		}
		wantNothingMore(t, c2)
		wantExactly(t, n, netsim.FaultRewrite, 1)
		wantWindow(t, c1, 1024)
	}, netsim.Options{Window: 1024, Link: netsim.Link{Latency: 3 * time.Millisecond}})
}

func TestFaultRewriteStreamOtherLength(t *testing.T) {
	const window = 1024
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		c1, c2 := netsimPipe(t, n)
		defer c1.Close()
		defer c2.Close()
		long := strings.Repeat("L", 1000)
		huge := strings.Repeat("H", 3000) // more than the window
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Kind != "data" {
				return netsim.Verdict{}
			}
			switch s := string(p.Payload); {
			case s == "short":
				return netsim.Verdict{Replace: []byte(long)}
			case s == strings.Repeat("x", 1000):
				return netsim.Verdict{Replace: []byte("tiny")}
			case s == "grow":
				return netsim.Verdict{Replace: []byte(huge)}
			}
			return netsim.Verdict{}
		})

		// Longer: the receiver reads the 1000 bytes in place of the 5.
		fmt.Fprint(c1, "short")
		fmt.Fprint(c1, "|")
		if got := readN(t, c2, 1001); got != long+"|" {
			t.Errorf("read %d bytes %.20q..., want the 1000-byte replacement then |", len(got), got)
		}
		wantWindow(t, c1, window)
		readN(t, c2, window)

		// Shorter: the 996 bytes that vanished come back to the sender.
		c1.Write([]byte(strings.Repeat("x", 1000)))
		fmt.Fprint(c1, "|")
		if got := readN(t, c2, 5); got != "tiny|" {
			t.Errorf("read %q, want tiny|", got)
		}
		wantNothingMore(t, c2)
		wantWindow(t, c1, window)
		readN(t, c2, window)

		// Longer than the window: the sender waits until it is read.
		fmt.Fprint(c1, "grow")
		n.RunFor(10 * time.Millisecond)
		c1.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if k, err := c1.Write([]byte("|")); k != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("write while 3000 bytes are unread in a 1024-byte window: %d, %v; want a timeout", k, err)
		}
		c1.SetWriteDeadline(time.Time{})
		if got := readN(t, c2, 3000); got != huge {
			t.Errorf("read %.20q..., want the 3000-byte replacement", got)
		}
		wantNothingMore(t, c2)
		wantWindow(t, c1, window)

		wantExactly(t, n, netsim.FaultRewrite, 3)
	}, netsim.Options{Window: window, Link: netsim.Link{Latency: 2 * time.Millisecond}})
}

func TestFaultReplayDatagram(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		seen := 0
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			seen++
			switch string(p.Payload) {
			case "1":
				return netsim.Verdict{Duplicate: true}
			case "3":
				return netsim.Verdict{Duplicate: true, Replace: []byte("three")}
			}
			return netsim.Verdict{}
		})
		n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond})
		sendN(t, tx, rx.LocalAddr(), 5)
		n.RunFor(10 * time.Millisecond)
		if got := strings.Join(drain(rx), ","); got != "0,1,1,2,three,three,4" {
			t.Errorf("received %q, want 0,1,1,2,three,three,4", got)
		}
		if seen != 5 {
			t.Errorf("the hook saw %d packets, want 5 (copies are not seen again)", seen)
		}
		wantExactly(t, n, netsim.FaultReplay, 2)
		wantExactly(t, n, netsim.FaultRewrite, 1)
		if d := n.Stats().Deliveries; d != 7 {
			t.Errorf("%d deliveries, want 7", d)
		}
	})
}

func TestFaultReplayStream(t *testing.T) {
	const window = 512
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		c1, c2 := netsimPipe(t, n)
		defer c1.Close()
		defer c2.Close()
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			// Duplicate every packet: only data segments are replayed.
			return netsim.Verdict{Duplicate: p.Proto == "tcp" && (p.Kind != "data" || string(p.Payload) == "ping\n")}
		})
		fmt.Fprint(c1, "ping\n")
		fmt.Fprint(c1, "pong\n")
		if got := readN(t, c2, 15); got != "ping\nping\npong\n" {
			t.Errorf("read %q, want ping twice then pong", got)
		}
		wantNothingMore(t, c2)
		wantExactly(t, n, netsim.FaultReplay, 1)
		wantWindow(t, c1, window)
	}, netsim.Options{Window: window, Link: netsim.Link{Latency: time.Millisecond}})
}

func TestFaultRewriteIgnoresControlSegments(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Kind != "data" {
				return netsim.Verdict{Replace: []byte("junk"), Duplicate: true}
			}
			return netsim.Verdict{}
		})
		c1, c2 := netsimPipe(t, n)
		fmt.Fprint(c1, "hi")
		c1.Close()
		got, err := io.ReadAll(c2)
		if err != nil || string(got) != "hi" {
			t.Errorf("read %q, %v; want hi then EOF", got, err)
		}
		c2.Close()
		wantExactly(t, n, netsim.FaultRewrite, 0)
		wantExactly(t, n, netsim.FaultReplay, 0)
	})
}

// TestFaultReplayCapturedBytes captures payloads (copies, since Payload is
// valid only during the call) and replays them later in place of other
// packets: an old stream message in place of a new one, and a datagram
// from one socket in place of another's.
func TestFaultReplayCapturedBytes(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		tx, rx := udpPair(t, a, b)
		echoServer(t, b, 7)
		var capturedSeg, capturedDg []byte
		n.OnPacket(func(p netsim.Packet) netsim.Verdict {
			switch {
			case p.Kind == "data" && strings.HasPrefix(string(p.Payload), "pay alice"):
				if capturedSeg == nil {
					capturedSeg = bytes.Clone(p.Payload)
				}
			case p.Kind == "data" && strings.HasPrefix(string(p.Payload), "pay carol"):
				return netsim.Verdict{Replace: capturedSeg}
			case p.Kind == "datagram" && string(p.Payload) == "0":
				capturedDg = bytes.Clone(p.Payload)
			case p.Kind == "datagram" && string(p.Payload) == "2":
				return netsim.Verdict{Replace: capturedDg}
			}
			return netsim.Verdict{}
		})
		c, err := a.DialContext(t.Context(), "tcp", "b:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var lines []string
		for _, s := range []string{"pay alice 5\n", "pay bob 7\n", "pay carol 9\n"} {
			fmt.Fprint(c, s)
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, strings.TrimSpace(line))
		}
		if got := strings.Join(lines, ","); got != "pay alice 5,pay bob 7,pay alice 5" {
			t.Errorf("echoed %q, want the captured alice line replayed in place of carol's", got)
		}
		sendN(t, tx, rx.LocalAddr(), 3)
		n.RunFor(10 * time.Millisecond)
		if got := strings.Join(drain(rx), ","); got != "0,1,0" {
			t.Errorf("received %q, want 0,1,0", got)
		}
		wantExactly(t, n, netsim.FaultRewrite, 2)
	})
}

// mitmWorld rewrites and replays on a jittery, lossy, duplicating link,
// datagrams and streams together, from a hook with state.
func mitmWorld(t *testing.T, n *netsim.Network) {
	lan := n.AddSegment("lan")
	n.SetDefaultLink(netsim.Link{Latency: 2 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.1, Duplicate: 0.1})
	server := n.AddHost("server", lan)
	echoServer(t, server, 7)
	count := 0
	var captured []byte
	n.OnPacket(func(p netsim.Packet) netsim.Verdict {
		if p.Kind != "data" && p.Kind != "datagram" {
			return netsim.Verdict{}
		}
		count++
		switch count % 7 {
		case 1:
			captured = bytes.Clone(p.Payload)
		case 3:
			return netsim.Verdict{Replace: bytes.ToUpper(p.Payload)}
		case 4:
			return netsim.Verdict{Duplicate: true}
		case 6:
			if captured != nil {
				return netsim.Verdict{Replace: captured, Duplicate: count%2 == 0}
			}
		}
		return netsim.Verdict{}
	})
	for i := range 4 {
		h := n.AddHost(fmt.Sprint("peer", i), lan)
		h.Go(func(ctx context.Context) {
			pc, err := h.ListenPacket(ctx, "udp", ":9000")
			if err != nil {
				return
			}
			defer pc.Close()
			c, err := h.DialContext(ctx, "tcp", "server:7")
			if err != nil {
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close(); pc.Close() })
			defer stop()
			go func() {
				buf := make([]byte, 100)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
				}
			}()
			go io.Copy(io.Discard, c)
			next := &net.UDPAddr{IP: net.IPv4(10, 1, 0, byte(2+(i+1)%4)), Port: 9000}
			for j := 0; ctx.Err() == nil; j++ {
				fmt.Fprintf(c, "%s line %d\n", h.Name(), j)
				pc.WriteTo(fmt.Appendf(nil, "%s dgram %d", h.Name(), j), next)
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	for _, k := range []netsim.FaultKind{netsim.FaultRewrite, netsim.FaultReplay, netsim.FaultLoss} {
		wantCount(t, n, k)
	}
}

func TestFaultRewriteAndReplayDeterminism(t *testing.T) {
	netsim.CheckDeterminism(t, 42, mitmWorld)

	var trace bytes.Buffer
	netsim.Run(t, 42, &netsim.Options{Trace: &trace}, mitmWorld)
	for _, ev := range []string{"udp-rule-rewrite", "udp-rule-replay", "tcp-rule-rewrite", "tcp-rule-replay"} {
		if !strings.Contains(trace.String(), `"ev":"`+ev+`"`) {
			t.Errorf("the trace has no %s line", ev)
		}
	}
}

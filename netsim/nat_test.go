package netsim_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// stunUDP answers every datagram to h:port with the source address it saw,
// as a STUN server does.
func stunUDP(t *testing.T, h *netsim.Host, port int) {
	t.Helper()
	pc, err := h.ListenPacket(h.Context(), "udp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	h.Go(func(ctx context.Context) {
		context.AfterFunc(ctx, func() { pc.Close() })
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	})
}

// stunTCP accepts streams on h:port, writes each one's remote address and
// a newline, and holds it open until the peer closes it.
func stunTCP(t *testing.T, h *netsim.Host, port int) {
	t.Helper()
	serveStreams(t, h, port, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		io.Copy(io.Discard, c)
	})
}

func udpTo(s string) *net.UDPAddr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// observe sends a datagram from pc to a stunUDP server and returns the
// address the server saw, or "" if no answer came within a second.
func observe(t *testing.T, pc net.PacketConn, server string) string {
	t.Helper()
	if _, err := pc.WriteTo([]byte("?"), udpTo(server)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	defer pc.SetReadDeadline(time.Time{})
	buf := make([]byte, 100)
	k, _, err := pc.ReadFrom(buf)
	if err != nil {
		return ""
	}
	return string(buf[:k])
}

// observeTCP dials a stunTCP server from laddr and returns the address the
// server saw, and the open stream.
func observeTCP(t *testing.T, h *netsim.Host, laddr, server string) (string, net.Conn) {
	t.Helper()
	c, err := h.DialFrom(t.Context(), "tcp", laddr, server)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", server, laddr, err)
	}
	t.Cleanup(func() { c.Close() })
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", server, err)
	}
	return strings.TrimSpace(line), c
}

func listenUDP(t *testing.T, h *netsim.Host, addr string) net.PacketConn {
	t.Helper()
	pc, err := h.ListenPacket(t.Context(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// natWorld is a host a on a LAN behind one NAT, and two STUN-like servers
// s1 and s2 on the internet, answering UDP on ports 3478 and 3479 and TCP
// on 3478.
type natWorld struct {
	a, s1, s2 *netsim.Host
	nat       *netsim.NAT
	internet  *netsim.Segment
	lan       *netsim.Segment
}

func newNATWorld(t *testing.T, n *netsim.Network, cfg netsim.NATConfig) *natWorld {
	t.Helper()
	w := &natWorld{internet: n.AddSegment("internet"), lan: n.AddSegment("lan")}
	w.nat = n.AddNAT("nat", w.lan, w.internet, cfg)
	w.a = n.AddHost("a", w.lan)
	w.s1 = n.AddHost("s1", w.internet)
	w.s2 = n.AddHost("s2", w.internet)
	n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond})
	for _, s := range []*netsim.Host{w.s1, w.s2} {
		stunUDP(t, s, 3478)
		stunUDP(t, s, 3479)
		stunTCP(t, s, 3478)
	}
	return w
}

func TestNATMapping(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mapping netsim.NATBehavior
		random  bool
		// whether the public port is the same toward s1:3478 and s2:3478
		// (other IP), and toward s1:3478 and s1:3479 (other port)
		sameOtherIP, sameOtherPort bool
	}{
		{"endpoint-independent keeps one port for every destination", netsim.EndpointIndependent, false, true, true},
		{"address-dependent takes a port per destination address", netsim.AddressDependent, false, false, true},
		{"address-and-port-dependent takes a port per destination", netsim.AddressAndPortDependent, false, false, false},
		{"random ports with endpoint-independent mapping still share one", netsim.EndpointIndependent, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				w := newNATWorld(t, n, netsim.NATConfig{Mapping: tc.mapping, Filtering: netsim.EndpointIndependent, RandomPorts: tc.random})
				s1, s2 := w.s1.IP().String(), w.s2.IP().String()
				pub := w.nat.PublicIP().String()

				pc := listenUDP(t, w.a, ":4000")
				first := observe(t, pc, s1+":3478")
				otherIP := observe(t, pc, s2+":3478")
				otherPort := observe(t, pc, s1+":3479")
				if !strings.HasPrefix(first, pub+":") || !strings.HasPrefix(otherIP, pub+":") || !strings.HasPrefix(otherPort, pub+":") {
					t.Fatalf("servers saw %q, %q, %q; want the NAT's public address %s", first, otherIP, otherPort, pub)
				}
				if (first == otherIP) != tc.sameOtherIP || (first == otherPort) != tc.sameOtherPort {
					t.Errorf("udp: saw %s, then %s from another IP and %s from another port; want same port %v and %v",
						first, otherIP, otherPort, tc.sameOtherIP, tc.sameOtherPort)
				}
				if preserved := first == pub+":4000"; preserved == tc.random {
					t.Errorf("udp: first mapping %s, port preserved %v, want %v", first, preserved, !tc.random)
				}

				// Streams: the same from one local port to two servers.
				t1, _ := observeTCP(t, w.a, ":5000", s1+":3478")
				t2, _ := observeTCP(t, w.a, ":5000", s2+":3478")
				if (t1 == t2) != tc.sameOtherIP {
					t.Errorf("tcp: servers saw %s and %s; want the same %v", t1, t2, tc.sameOtherIP)
				}
				st := w.nat.Stats()
				wantMappings := int64(1)
				if !tc.sameOtherIP {
					wantMappings++
				}
				if !tc.sameOtherPort {
					wantMappings++
				}
				wantTCP := int64(1)
				if !tc.sameOtherIP {
					wantTCP++
				}
				if st.MappingsCreated != wantMappings+wantTCP {
					t.Errorf("MappingsCreated = %d, want %d", st.MappingsCreated, wantMappings+wantTCP)
				}
				if st.Translated == 0 {
					t.Error("no packet was translated")
				}
			})
		})
	}
}

func TestNATFiltering(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		filtering             netsim.NATBehavior
		fromOtherPort, fromIP bool // s1:3479 and s2:3478 get through
	}{
		{"endpoint-independent lets anyone in", netsim.EndpointIndependent, true, true},
		{"address-dependent lets in the addresses sent to", netsim.AddressDependent, true, false},
		{"address-and-port-dependent lets in only what was sent to", netsim.AddressAndPortDependent, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				w := newNATWorld(t, n, netsim.NATConfig{Filtering: tc.filtering})
				pc := listenUDP(t, w.a, ":4000")
				public := observe(t, pc, w.s1.IP().String()+":3478")
				if public == "" {
					t.Fatal("no answer from s1")
				}
				for _, from := range []*netsim.Host{w.s1, w.s2} {
					tx := listenUDP(t, from, ":4444") // not the port a sent to
					tx.WriteTo([]byte("hello from "+from.Name()), udpTo(public))
				}
				got := drainFor(pc, 100*time.Millisecond)
				want := []string{}
				if tc.fromOtherPort {
					want = append(want, "hello from s1")
				}
				if tc.fromIP {
					want = append(want, "hello from s2")
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("a got %q, want %q", got, want)
				}
				st := w.nat.Stats()
				if filtered := int64(2 - len(want)); st.InboundFiltered != filtered {
					t.Errorf("InboundFiltered = %d, want %d", st.InboundFiltered, filtered)
				}
				if len(want) < 2 {
					wantCount(t, n, netsim.FaultNATDrop)
				}
			})
		})
	}
}

// drainFor reads every datagram that arrives on pc within d.
func drainFor(pc net.PacketConn, d time.Duration) []string {
	var got []string
	buf := make([]byte, 1500)
	pc.SetReadDeadline(time.Now().Add(d))
	defer pc.SetReadDeadline(time.Time{})
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:k]))
	}
}

func TestNATServerSeesPublicAddress(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		w := newNATWorld(t, n, netsim.NATCone())
		echoServer(t, w.s1, 7)
		c, err := w.a.DialContext(t.Context(), "tcp", "s1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !strings.HasPrefix(c.LocalAddr().String(), w.a.IP().String()+":") {
			t.Errorf("LocalAddr = %s, want a's own address", c.LocalAddr())
		}
		seen, _ := observeTCP(t, w.a, "", "s1:3478")
		if !strings.HasPrefix(seen, w.nat.PublicIP().String()+":") {
			t.Errorf("server saw %s, want the NAT's public address", seen)
		}
		fmt.Fprintf(c, "through the NAT\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "through the NAT\n" {
			t.Fatalf("echo = %q, %v", line, err)
		}
	})
}

func TestNATUnreachableInside(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		w := newNATWorld(t, n, netsim.NATFullCone())
		echoServer(t, w.a, 7)
		if _, err := w.s1.DialContext(t.Context(), "tcp", w.a.AddrPort(7).String()); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial to an address behind a NAT: %v, want EHOSTUNREACH", err)
		}
		rx := listenUDP(t, w.a, ":4000")
		tx := listenUDP(t, w.s1, ":0")
		tx.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(w.a.AddrPort(4000)))
		if got := drainFor(rx, 100*time.Millisecond); len(got) != 0 {
			t.Errorf("a datagram to an address behind a NAT arrived: %q", got)
		}
	})
}

func TestNATUnsolicitedInbound(t *testing.T) {
	for _, reset := range []bool{false, true} {
		name := "dropped by default"
		if reset {
			name = "answered with a reset when configured"
		}
		t.Run(name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				cfg := netsim.NATCone()
				cfg.Reset = reset
				w := newNATWorld(t, n, cfg)
				echoServer(t, w.a, 7)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				start := time.Now()
				_, err := w.s1.DialContext(ctx, "tcp", netip.AddrPortFrom(w.nat.PublicIP(), 7).String())
				if reset {
					if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) != 10*time.Millisecond {
						t.Errorf("dial: %v after %v, want ECONNREFUSED after one round trip", err, time.Since(start))
					}
					wantCount(t, n, netsim.FaultNATReset)
					if st := w.nat.Stats(); st.Rejected != 1 {
						t.Errorf("Rejected = %d, want 1", st.Rejected)
					}
				} else {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("dial: %v, want the context's deadline (SYNs dropped)", err)
					}
					// The SYN and its retransmissions at 1, 3 and 7 s.
					if st := w.nat.Stats(); st.InboundNoMapping != 4 || st.Rejected != 0 {
						t.Errorf("InboundNoMapping = %d, Rejected = %d; want 4 and 0", st.InboundNoMapping, st.Rejected)
					}
				}
				wantCount(t, n, netsim.FaultNATDrop)
			})
		})
	}
}

func TestNATDialTimesOutLikeLinux(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		w := newNATWorld(t, n, netsim.NATCone())
		start := time.Now()
		_, err := w.s1.DialContext(t.Context(), "tcp", netip.AddrPortFrom(w.nat.PublicIP(), 7).String())
		var ne net.Error
		if !errors.Is(err, syscall.ETIMEDOUT) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dial: %v, want ETIMEDOUT, a timeout", err)
		}
		if d := time.Since(start); d != 127*time.Second {
			t.Errorf("dial gave up after %v, want 127s (6 SYN retransmissions)", d)
		}
		if st := w.nat.Stats(); st.InboundNoMapping != 7 {
			t.Errorf("InboundNoMapping = %d, want 7 SYNs", st.InboundNoMapping)
		}
	})
}

func TestNATHairpin(t *testing.T) {
	for _, hairpin := range []bool{false, true} {
		t.Run(fmt.Sprintf("hairpin %v", hairpin), func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				cfg := netsim.NATFullCone()
				cfg.Hairpin = hairpin
				w := newNATWorld(t, n, cfg)
				b := n.AddHost("b", w.lan)
				pa, pb := listenUDP(t, w.a, ":4000"), listenUDP(t, b, ":4000")
				pubA, pubB := observe(t, pa, w.s1.IP().String()+":3478"), observe(t, pb, w.s1.IP().String()+":3478")
				if pubA == pubB || pubA == "" || pubB == "" {
					t.Fatalf("public addresses %q and %q", pubA, pubB)
				}
				pa.WriteTo([]byte("hi b"), udpTo(pubB))
				pb.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				buf := make([]byte, 100)
				k, from, err := pb.ReadFrom(buf)
				st := w.nat.Stats()
				if !hairpin {
					if err == nil {
						t.Errorf("b got %q without hairpinning", buf[:k])
					}
					if st.HairpinDropped != 1 {
						t.Errorf("HairpinDropped = %d, want 1", st.HairpinDropped)
					}
					wantCount(t, n, netsim.FaultNATDrop)
					return
				}
				if err != nil {
					t.Fatalf("b got nothing through the hairpin: %v", err)
				}
				if from.String() != pubA {
					t.Errorf("b saw the datagram from %s, want a's public address %s", from, pubA)
				}
				if st.Hairpinned != 1 {
					t.Errorf("Hairpinned = %d, want 1", st.Hairpinned)
				}

				// Streams hairpin too: b dials a's public TCP mapping.
				echoServer(t, w.a, 7)
				observeTCP(t, w.a, ":7", w.s1.IP().String()+":3478")
				pubA7 := netip.AddrPortFrom(w.nat.PublicIP(), 7).String()
				c, err := b.DialContext(t.Context(), "tcp", pubA7)
				if err != nil {
					t.Fatalf("dial through the hairpin: %v", err)
				}
				defer c.Close()
				fmt.Fprintf(c, "round\n")
				if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "round\n" {
					t.Errorf("echo through the hairpin = %q, %v", line, err)
				}
			})
		})
	}
}

func TestNATIdleTimeout(t *testing.T) {
	t.Run("udp mapping expires when idle and lives with keepalives", func(t *testing.T) {
		netsim.Test(t, func(t *testing.T, n *netsim.Network) {
			cfg := netsim.NATFullCone()
			cfg.UDPTimeout = 30 * time.Second
			w := newNATWorld(t, n, cfg)
			s1 := w.s1.IP().String() + ":3478"
			keep := listenUDP(t, w.a, ":4001")
			idle := listenUDP(t, w.a, ":4000")
			public := observe(t, idle, s1)
			observe(t, keep, s1)
			for range 5 {
				time.Sleep(20 * time.Second)
				observe(t, keep, s1) // a keepalive every 20 s
			}
			var live []string
			for _, m := range w.nat.Mappings() {
				live = append(live, m.Internal.String())
			}
			if want := w.a.AddrPort(4001).String(); strings.Join(live, ",") != want {
				t.Errorf("live mappings %q, want only the kept-alive %s", live, want)
			}
			st := w.nat.Stats()
			if st.MappingsExpired != 1 || st.MappingsCreated != 2 {
				t.Errorf("MappingsExpired = %d, MappingsCreated = %d; want 1 and 2", st.MappingsExpired, st.MappingsCreated)
			}
			// The old public address no longer leads to a.
			tx := listenUDP(t, w.s2, ":0")
			tx.WriteTo([]byte("late"), udpTo(public))
			if got := drainFor(idle, 100*time.Millisecond); len(got) != 0 {
				t.Errorf("a got %q through an expired mapping", got)
			}
			if st := w.nat.Stats(); st.InboundNoMapping != 1 {
				t.Errorf("InboundNoMapping = %d, want 1", st.InboundNoMapping)
			}
		})
	})
	t.Run("tcp mapping expires when idle and the stream is reset", func(t *testing.T) {
		netsim.Test(t, func(t *testing.T, n *netsim.Network) {
			cfg := netsim.NATCone()
			cfg.TCPTimeout = time.Minute
			w := newNATWorld(t, n, cfg)
			ln, err := w.s1.Listen(t.Context(), "tcp", ":7")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := w.a.DialContext(t.Context(), "tcp", "s1:7")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sc, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			time.Sleep(61 * time.Second)
			fmt.Fprintf(sc, "anyone?\n") // inbound: no mapping any more
			if _, err := c.Read(make([]byte, 10)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read after the mapping expired: %v, want ECONNRESET", err)
			}
			if st := w.nat.Stats(); st.MappingsExpired != 1 {
				t.Errorf("MappingsExpired = %d, want 1", st.MappingsExpired)
			}
			wantCount(t, n, netsim.FaultReset)
		})
	})
	t.Run("tcp mapping ends with its connection", func(t *testing.T) {
		netsim.Test(t, func(t *testing.T, n *netsim.Network) {
			w := newNATWorld(t, n, netsim.NATCone())
			echoServer(t, w.s1, 7)
			c, err := w.a.DialContext(t.Context(), "tcp", "s1:7")
			if err != nil {
				t.Fatal(err)
			}
			c.Close() // the echo server closes its end at EOF
			n.RunFor(time.Second)
			if st := w.nat.Stats(); st.MappingsClosed != 1 || len(w.nat.Mappings()) != 0 {
				t.Errorf("MappingsClosed = %d, mappings %v; want 1 and none", st.MappingsClosed, w.nat.Mappings())
			}
		})
	})
}

func TestNATTwoInARow(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		internet, isp, lan := n.AddSegment("internet"), n.AddSegment("isp"), n.AddSegment("lan")
		cgnat := n.AddNAT("cgnat", isp, internet, netsim.NATSymmetric())
		home := n.AddNAT("home", lan, isp, netsim.NATCone())
		a := n.AddHost("a", lan)
		s1 := n.AddHost("s1", internet)
		n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond})
		stunUDP(t, s1, 3478)
		stunTCP(t, s1, 3478)
		echoServer(t, s1, 7)

		pc := listenUDP(t, a, ":4000")
		seen := observe(t, pc, s1.IP().String()+":3478")
		if !strings.HasPrefix(seen, cgnat.PublicIP().String()+":") {
			t.Errorf("server saw %q, want the carrier NAT's address %s", seen, cgnat.PublicIP())
		}
		seenTCP, _ := observeTCP(t, a, "", "s1:3478")
		if !strings.HasPrefix(seenTCP, cgnat.PublicIP().String()+":") {
			t.Errorf("server saw stream from %q, want the carrier NAT's address", seenTCP)
		}
		c, err := a.DialContext(t.Context(), "tcp", "s1:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "two NATs\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "two NATs\n" {
			t.Errorf("echo = %q, %v", line, err)
		}
		for _, x := range []*netsim.NAT{home, cgnat} {
			if st := x.Stats(); st.MappingsCreated == 0 || st.Translated == 0 {
				t.Errorf("%s: %+v, want mappings and translations", x.Name(), st)
			}
		}
		// The home router's mapping is the carrier NAT's inside endpoint.
		hm := home.Mappings()[0]
		var found bool
		for _, m := range cgnat.Mappings() {
			found = found || m.Internal == hm.External
		}
		if !found {
			t.Errorf("no carrier mapping for the home router's public endpoint %s: %v", hm.External, cgnat.Mappings())
		}
	})
}

func TestNATMulticastStaysOnItsSegment(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		w := newNATWorld(t, n, netsim.NATFullCone())
		in, err := w.a.ListenMulticastUDP(t.Context(), "udp", nil, group)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := w.s1.ListenMulticastUDP(t.Context(), "udp", nil, group)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		out.WriteTo([]byte("outside"), group)
		if got := drainFor(in, 100*time.Millisecond); len(got) != 0 {
			t.Errorf("a multicast crossed the NAT: %q", got)
		}
		if got := drainFor(out, 10*time.Millisecond); len(got) != 1 {
			t.Errorf("the sender's own segment got %q, want the loopback copy", got)
		}
	})
}

func TestNATCrashLosesMappings(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		w := newNATWorld(t, n, netsim.NATFullCone())
		pc := listenUDP(t, w.a, ":4000")
		if observe(t, pc, w.s1.IP().String()+":3478") == "" {
			t.Fatal("no answer")
		}
		w.nat.Host().Crash()
		if got := observe(t, pc, w.s1.IP().String()+":3478"); got != "" {
			t.Errorf("answer %q through a crashed NAT", got)
		}
		w.nat.Host().Restart()
		if got := observe(t, pc, w.s1.IP().String()+":3478"); got == "" {
			t.Error("no answer after the NAT restarted")
		}
		st := w.nat.Stats()
		if st.MappingsFlushed != 1 || st.Down != 1 || st.MappingsCreated != 2 {
			t.Errorf("stats %+v: want 1 flushed, 1 down, 2 created", st)
		}
	})
}

func TestDialFromListeningPort(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		echoServer(t, a, 5000)
		echoServer(t, b, 7)
		echoServer(t, b, 8)
		c, err := a.DialFrom(t.Context(), "tcp", ":5000", "b:7")
		if err != nil {
			t.Fatalf("dial from a listening port: %v", err)
		}
		defer c.Close()
		if got := c.LocalAddr().String(); got != "10.1.0.1:5000" {
			t.Errorf("LocalAddr = %s, want 10.1.0.1:5000", got)
		}
		if _, err := a.DialFrom(t.Context(), "tcp", ":5000", "b:7"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Errorf("second dial with the same 4-tuple: %v, want EADDRNOTAVAIL", err)
		}
		c2, err := a.DialFrom(t.Context(), "tcp", "10.1.0.1:5000", "b:8")
		if err != nil {
			t.Fatalf("dial from the same port to another destination: %v", err)
		}
		defer c2.Close()
		// The listener still accepts.
		c3, err := b.DialContext(t.Context(), "tcp", "a:5000")
		if err != nil {
			t.Fatalf("dial to the listener: %v", err)
		}
		c3.Close()
		if _, err := a.DialFrom(t.Context(), "tcp", "10.9.9.9:0", "b:7"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Errorf("dial from an address not the host's: %v, want EADDRNOTAVAIL", err)
		}
	})
}

// punch makes a and b dial each other at the same time, each from its port
// to the other's address, a early by lead, giving up after limit (0: no
// limit), and returns both results.
func punch(t *testing.T, a, b *netsim.Host, aFrom, aTo, bFrom, bTo string, lead, limit time.Duration) (ca, cb net.Conn, ea, eb error) {
	t.Helper()
	ctx := t.Context()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ca, ea = a.DialFrom(ctx, "tcp", aFrom, aTo)
	}()
	go func() {
		defer wg.Done()
		time.Sleep(lead)
		cb, eb = b.DialFrom(ctx, "tcp", bFrom, bTo)
	}()
	wg.Wait()
	for _, c := range []net.Conn{ca, cb} {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return ca, cb, ea, eb
}

// oneStream checks that ca and cb are the two ends of one stream.
func oneStream(t *testing.T, ca, cb net.Conn) {
	t.Helper()
	fmt.Fprintf(ca, "from a\n")
	fmt.Fprintf(cb, "from b\n")
	la, err := bufio.NewReader(ca).ReadString('\n')
	if err != nil || la != "from b\n" {
		t.Errorf("a read %q, %v", la, err)
	}
	lb, err := bufio.NewReader(cb).ReadString('\n')
	if err != nil || lb != "from a\n" {
		t.Errorf("b read %q, %v", lb, err)
	}
}

func TestSimultaneousOpenOnALAN(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		a, b := twoHosts(n)
		n.SetDefaultLink(netsim.Link{Latency: 10 * time.Millisecond})
		start := time.Now()
		ca, cb, ea, eb := punch(t, a, b, ":5000", "b:6000", ":6000", "a:5000", 0, 0)
		if ea != nil || eb != nil {
			t.Fatalf("dials: %v, %v", ea, eb)
		}
		if d := time.Since(start); d != 20*time.Millisecond {
			t.Errorf("simultaneous open took %v, want 20ms", d)
		}
		if ca.LocalAddr().String() != "10.1.0.1:5000" || ca.RemoteAddr().String() != "10.1.0.2:6000" ||
			cb.LocalAddr().String() != "10.1.0.2:6000" || cb.RemoteAddr().String() != "10.1.0.1:5000" {
			t.Errorf("ends %s-%s and %s-%s", ca.LocalAddr(), ca.RemoteAddr(), cb.LocalAddr(), cb.RemoteAddr())
		}
		oneStream(t, ca, cb)
		if s := n.Stats(); s.SimultaneousOpens != 2 {
			t.Errorf("SimultaneousOpens = %d, want 2 (one per end)", s.SimultaneousOpens)
		}
	})
}

// punchWorld is two hosts, each behind its own NAT, and a STUN-like
// server on the internet between them.
type punchWorld struct {
	a, b     *netsim.Host
	na, nb   *netsim.NAT
	pa, pb   string // public addresses of a:5000 and b:6000, as the server saw them
	internet *netsim.Segment
}

func newPunchWorld(t *testing.T, n *netsim.Network, ca, cb netsim.NATConfig) *punchWorld {
	t.Helper()
	w := &punchWorld{internet: n.AddSegment("internet")}
	lanA, lanB := n.AddSegment("lan-a"), n.AddSegment("lan-b")
	w.na = n.AddNAT("nat-a", lanA, w.internet, ca)
	w.nb = n.AddNAT("nat-b", lanB, w.internet, cb)
	w.a, w.b = n.AddHost("a", lanA), n.AddHost("b", lanB)
	s := n.AddHost("stun", w.internet)
	n.SetDefaultLink(netsim.Link{Latency: 10 * time.Millisecond})
	stunTCP(t, s, 3478)
	// Each peer listens on its port and learns its public address from
	// the server over a stream from that port, which stays open (as a
	// relay or rendezvous connection would).
	for _, h := range []*netsim.Host{w.a, w.b} {
		port := 5000
		if h == w.b {
			port = 6000
		}
		echoServer(t, h, port)
		seen, _ := observeTCP(t, h, fmt.Sprintf(":%d", port), "stun:3478")
		if h == w.a {
			w.pa = seen
		} else {
			w.pb = seen
		}
	}
	return w
}

func TestSimultaneousOpenThroughNATs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     netsim.NATConfig
		lead     time.Duration
		connects bool
	}{
		{"cone to cone connects", netsim.NATCone(), netsim.NATCone(), 0, true},
		{"cone to cone connects when one side is early", netsim.NATCone(), netsim.NATCone(), 50 * time.Millisecond, true},
		{"cone to symmetric fails", netsim.NATCone(), netsim.NATSymmetric(), 0, false},
		{"symmetric to symmetric fails", netsim.NATSymmetric(), netsim.NATSymmetric(), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				w := newPunchWorld(t, n, tc.a, tc.b)
				ca, cb, ea, eb := punch(t, w.a, w.b, ":5000", w.pb, ":6000", w.pa, tc.lead, 10*time.Second)
				if !tc.connects {
					if ea == nil || eb == nil {
						t.Fatalf("hole punching connected: %v, %v", ea, eb)
					}
					if !errors.Is(ea, context.DeadlineExceeded) || !errors.Is(eb, context.DeadlineExceeded) {
						t.Errorf("dials: %v, %v; want both to time out", ea, eb)
					}
					wantCount(t, n, netsim.FaultNATDrop)
					return
				}
				if ea != nil || eb != nil {
					t.Fatalf("dials: %v, %v", ea, eb)
				}
				if ca.RemoteAddr().String() != w.pb || cb.RemoteAddr().String() != w.pa {
					t.Errorf("remote addresses %s and %s, want the public %s and %s", ca.RemoteAddr(), cb.RemoteAddr(), w.pb, w.pa)
				}
				oneStream(t, ca, cb)
				if n.Stats().SimultaneousOpens == 0 {
					t.Error("no simultaneous open counted")
				}
				if tc.lead > 0 {
					// a's early SYN met b's NAT before b's own SYN opened it.
					if st := w.nb.Stats(); st.InboundFiltered == 0 {
						t.Errorf("nat-b filtered nothing: %+v", st)
					}
					wantCount(t, n, netsim.FaultNATDrop)
				}
			})
		})
	}
}

func TestSimultaneousOpenEarlySYNResetByNAT(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		cfg := netsim.NATCone()
		cfg.Reset = true // a Linux router without the drop rule
		w := newPunchWorld(t, n, cfg, cfg)
		_, _, ea, eb := punch(t, w.a, w.b, ":5000", w.pb, ":6000", w.pa, 50*time.Millisecond, 0)
		if !errors.Is(ea, syscall.ECONNREFUSED) {
			t.Errorf("early dial: %v, want ECONNREFUSED from nat-b's reset", ea)
		}
		// The RST closed a's NAT session toward b, so b's SYN is filtered
		// out and reset in turn: the attempt is dead on both sides.
		if !errors.Is(eb, syscall.ECONNREFUSED) {
			t.Errorf("later dial: %v, want ECONNREFUSED from nat-a's reset", eb)
		}
		if ra, rb := w.na.Stats().Rejected, w.nb.Stats().Rejected; ra != 1 || rb != 1 {
			t.Errorf("Rejected = %d and %d, want 1 each", ra, rb)
		}
		wantCount(t, n, netsim.FaultNATReset)
	})
}

func TestNATDeterminism(t *testing.T) {
	netsim.CheckDeterminism(t, 7, func(t *testing.T, n *netsim.Network) {
		w := newPunchWorld(t, n, netsim.NATSymmetric(), netsim.NATCone())
		n.SetDefaultLink(netsim.Link{Latency: 10 * time.Millisecond, Jitter: 5 * time.Millisecond})
		punch(t, w.a, w.b, ":5000", w.pb, ":6000", w.pa, 0, 3*time.Second)
		pc := listenUDP(t, w.a, ":7000")
		for range 5 {
			pc.WriteTo([]byte("x"), udpTo(w.pb))
		}
		n.RunFor(time.Second)
	})
}

func TestNATFilteringStreams(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      netsim.NATConfig
		connects bool
	}{
		{"full cone lets a stranger reach a mapped listener", netsim.NATFullCone(), true},
		{"cone keeps a stranger out", netsim.NATCone(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				w := newNATWorld(t, n, tc.cfg)
				echoServer(t, w.a, 7)
				public, _ := observeTCP(t, w.a, ":7", "s1:3478") // maps a:7
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				c, err := w.s2.DialContext(ctx, "tcp", public)
				if !tc.connects {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("stranger's dial: %v, want a timeout", err)
					}
					if st := w.nat.Stats(); st.InboundFiltered == 0 {
						t.Errorf("nothing filtered: %+v", st)
					}
					return
				}
				if err != nil {
					t.Fatalf("stranger's dial: %v", err)
				}
				defer c.Close()
				fmt.Fprintf(c, "knock\n")
				if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "knock\n" {
					t.Errorf("echo = %q, %v", line, err)
				}
			})
		})
	}
}

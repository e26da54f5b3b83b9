package sim

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/netsim"
)

// wanLink joins the segments of internet mode: 10 ms each way.
var wanLink = netsim.Link{Latency: 10 * time.Millisecond}

// Client timing of internet mode (client/internal/rendezvous, not
// exported): a connection attempt gives up after the handshake timeout,
// and the reconnect backoff doubles up to MaxBackoff.
const (
	rendezvousHandshakeTimeout = 10 * time.Second
	rendezvousMaxBackoff       = 30 * time.Second
	rendezvousPollInterval     = 5 * time.Second // against a server that does not push
)

// registerHops is how many one-way trips a client needs from start to
// being known by everyone through a server that pushes: SYN, SYN-ACK,
// upgrade request, upgrade answer, register, and the server's push (or,
// for the newcomer, its registered + peer_list answer).
const registerHops = 6

const serverPort = 8080

var serverURL = fmt.Sprintf("ws://boot:%d/", serverPort)

// internet sets a node up for internet mode with the scenario's server.
func internet(cfg *chat.Config) {
	cfg.Mode = chat.ModeInternet
	cfg.BootstrapServers = []string{serverURL}
}

// server is our bootstrap server on its host.
type server struct {
	c    *cluster
	host *netsim.Host
	srv  *rendezvous.Server
}

// startServer runs our rendezvous server on h:8080 until h crashes or the
// scenario ends.
func startServer(t *testing.T, c *cluster, h *netsim.Host) *server {
	t.Helper()
	var seed [32]byte
	for i := range 4 {
		v := c.seeds.Uint64()
		for j := range 8 {
			seed[8*i+j] = byte(v >> (8 * j))
		}
	}
	srv, err := rendezvous.NewServer(rendezvous.Config{Rand: rand.NewChaCha8(seed)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf(":%d", serverPort))
	if err != nil {
		t.Fatal(err)
	}
	h.Go(func(ctx context.Context) {
		srv.Serve(ctx, ln)
		srv.Close()
	})
	return &server{c: c, host: h, srv: srv}
}

// startOriginalServer runs the original's bootstrap server double on h.
func startOriginalServer(t *testing.T, c *cluster, h *netsim.Host) *original.Server {
	t.Helper()
	srv := original.NewServer(rand.NewChaCha8([32]byte{byte(c.seeds.Uint64())}))
	ln, err := h.Listen(h.Context(), "tcp", fmt.Sprintf(":%d", serverPort))
	if err != nil {
		t.Fatal(err)
	}
	h.Go(func(ctx context.Context) {
		hs := &http.Server{Handler: srv}
		stop := context.AfterFunc(ctx, func() { hs.Close() })
		defer stop()
		hs.Serve(ln)
		srv.Close()
	})
	return srv
}

// internetWorld adds the server's host "boot" and n client hosts, each on
// a segment of its own (no shared multicast), joined by wanLink.
func internetWorld(c *cluster, n int) (boot *netsim.Host, clients []*netsim.Host) {
	c.nw.SetDefaultLink(wanLink)
	boot = c.nw.AddHost("boot", c.nw.AddSegment("dc"))
	for i := range n {
		clients = append(clients, c.nw.AddHost(fmt.Sprintf("home%d", i+1), c.nw.AddSegment(fmt.Sprintf("home%d", i+1))))
	}
	return boot, clients
}

// startClients starts one of our internet-mode nodes per host at random
// offsets within spread; it returns them and the last start time.
func startClients(c *cluster, hosts []*netsim.Host, spread time.Duration, prefix string) ([]*peer, time.Duration) {
	peers := make([]*peer, len(hosts))
	for i, h := range hosts {
		if spread > 0 {
			c.nw.RunFor(time.Duration(c.seeds.Int64N(int64(spread) / int64(len(hosts)))))
		}
		peers[i] = c.start(h, fmt.Sprintf("%s%d", prefix, i+1), internet)
	}
	return peers, c.nw.Now()
}

// registeredAfter returns when p's current instance last reported being
// registered with the server, if after t0.
func registeredAfter(p *peer, t0 time.Duration) (time.Duration, bool) {
	var at time.Duration
	ok := false
	for _, ev := range p.Rec().All() {
		if ev.Kind == chat.EventStatus && ev.Err == nil && strings.HasPrefix(ev.Text, "registered with") && p.c.at(ev.Time) >= t0 {
			at, ok = p.c.at(ev.Time), true
		}
	}
	return at, ok
}

// Internet mode: peers on separate segments find each other only through
// our bootstrap server, within registerHops of the last start, send no
// datagram at all, and message each other exactly once.
func TestInternetDiscovery(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 6)
		startServer(t, c, boot)
		peers, last := startClients(c, hosts, 2*time.Second, "i")
		bound := registerHops * hop(wanLink)
		c.nw.RunFor(bound + quantum)
		if err := viewsErr(peers); err != nil {
			t.Fatalf("discovery incomplete %v after the last start: %v", bound, err)
		}
		t.Logf("full discovery %v after the last start (bound %v)", fullDiscovery(t, peers)-last, bound)
		msgs := sendAllPairs(t.Context(), peers, "wan")
		c.nw.Settle()
		if notDone := checkExactlyOnce(t, peers, msgs); notDone > 0 {
			t.Errorf("%d sends failed or were queued", notDone)
		}
		c.nw.RunFor(2 * rendezvous.DefaultExpiry) // heartbeats keep everyone registered
		if err := viewsErr(peers); err != nil {
			t.Error(err)
		}
		if d := c.nw.Stats().Datagrams; d != 0 {
			t.Errorf("internet mode sent %d datagrams, want none (no multicast)", d)
		}
	})
}

// The server crashes (power cut) and comes back a minute later, empty,
// handing out new peer_ids: every client registers again within the
// handshake timeout plus the maximum backoff of the server's return, the
// clients that stay never see each other leave or join again (they are
// keyed by instance id, and kept through the first, incomplete list), and
// the views are exact again once chat.BootstrapGrace has passed (a client
// that left while the server was away is gone by then).
func TestInternetServerRestart(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 5)
		startServer(t, c, boot)
		peers, _ := startClients(c, hosts, time.Second, "i")
		converge(t, c, peers, registerHops*hop(wanLink)+quantum, "start")
		c.nw.RunFor(15 * time.Second)

		crashed := c.nw.Now()
		boot.Crash()
		c.nw.RunFor(10 * time.Second)
		// A client leaves while the server is away: the others keep the
		// server's last list until they register again and get a new one.
		gone := peers[len(peers)-1]
		goneInst := gone.Instance()
		gone.Quit()
		peers = peers[:len(peers)-1]
		c.nw.RunFor(50 * time.Second)
		for _, p := range peers {
			if !listsNick(p, gone.Nick()) {
				t.Errorf("%v dropped %v while the server was away", p, gone)
			}
		}
		back := c.nw.Now()
		boot.Restart()
		startServer(t, c, boot)
		bound := rendezvousHandshakeTimeout + rendezvousMaxBackoff + registerHops*hop(wanLink)
		// The clients keep the server's last list while it is away, so
		// wait for their new registrations, not for their views.
		c.nw.RunUntil(func() bool {
			for _, p := range peers {
				if _, ok := registeredAfter(p, back); !ok {
					return false
				}
			}
			return true
		}, bound+time.Second)
		// The one that left while the server was away goes only when the
		// grace period after each client's first list is over: the first
		// list comes within a hop of the registration, before now.
		converge(t, c, peers, chat.BootstrapGrace+registerHops*hop(wanLink)+quantum, "after every client registered again")
		for _, p := range peers {
			at, _ := registeredAfter(p, back)
			ev, ok := p.Rec().FirstAbout(goneInst, chat.EventPeerLeft)
			if !ok {
				continue // converge reported it
			}
			if d := c.at(ev.Time) - at; d < chat.BootstrapGrace || d > chat.BootstrapGrace+hop(wanLink) {
				t.Errorf("%v dropped %v %v after registering again, want %v after its first list", p, gone, d, chat.BootstrapGrace)
			}
		}
		// No churn among the clients that stayed: each learnt of each
		// other once and never lost it.
		for _, p := range peers {
			for _, q := range peers {
				if p == q {
					continue
				}
				for _, ev := range p.Rec().All() {
					if ev.Peer.Instance != q.Instance() {
						continue
					}
					switch ev.Kind {
					case chat.EventPeerLeft, chat.EventPeerExpired:
						t.Errorf("%v saw %v leave at %v (server crashed at %v, back at %v)", p, q, c.at(ev.Time), crashed, back)
					case chat.EventPeerJoined:
						if c.at(ev.Time) > crashed {
							t.Errorf("%v saw %v join again at %v", p, q, c.at(ev.Time))
						}
					}
				}
			}
		}
		for _, p := range peers {
			at, ok := registeredAfter(p, back)
			if !ok {
				t.Errorf("%v did not register again", p)
				continue
			}
			if at-back > bound {
				t.Errorf("%v registered again %v after the server came back, want within %v", p, at-back, bound)
			}
			t.Logf("%v registered again %v after the server came back", p, at-back)
		}
		msgs := sendAllPairs(t.Context(), peers, "after restart")
		c.nw.Settle()
		if notDone := checkExactlyOnce(t, peers, msgs); notDone > 0 {
			t.Errorf("%d sends failed or were queued", notDone)
		}
	})
}

// Departures in internet mode: a client that quits unregisters and is
// dropped at once; one whose host crashes is dropped as soon as the reset
// of its connection reaches the server; one that vanishes silently (host
// cut off, then dead) is dropped by the server's expiry: after Expiry since
// its last heartbeat reached the server, and within one Sweep more.
func TestInternetClientDepartures(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 5)
		var mu sync.Mutex
		lastFrom := map[*netsim.Host]time.Duration{} // last data segment to the server
		c.nw.OnPacket(func(p netsim.Packet) netsim.Verdict {
			if p.Proto == "tcp" && p.Kind == "data" && p.To == boot && p.Dst.Port() == serverPort {
				mu.Lock()
				lastFrom[p.From] = p.Time
				mu.Unlock()
			}
			return netsim.Verdict{}
		})
		startServer(t, c, boot)
		peers, _ := startClients(c, hosts, time.Second, "i")
		converge(t, c, peers, registerHops*hop(wanLink)+quantum, "start")
		c.nw.RunFor(12 * time.Second)
		quitter, crasher, ghost, rest := peers[0], peers[1], peers[2], peers[3:]

		for _, tc := range []struct {
			who  *peer
			stop func()
		}{{quitter, quitter.Quit}, {crasher, crasher.Crash}} {
			inst, at := tc.who.Instance(), c.nw.Now()
			tc.stop()
			c.nw.RunFor(2*hop(wanLink) + quantum)
			for _, o := range rest {
				ev, ok := o.Rec().FirstAbout(inst, chat.EventPeerLeft)
				if !ok {
					t.Errorf("%v still lists %v %v after it stopped", o, tc.who, c.nw.Now()-at)
					continue
				}
				if d := c.at(ev.Time) - at; d > 2*hop(wanLink) {
					t.Errorf("%v dropped %v %v after it stopped, want within two hops", o, tc.who, d)
				}
			}
		}

		inst := ghost.Instance()
		c.nw.Isolate(ghost.Host()) // never healed: its reset never arrives
		ghost.Crash()
		mu.Lock()
		last := lastFrom[ghost.Host()]
		mu.Unlock()
		earliest, latest := last+rendezvous.DefaultExpiry, last+rendezvous.DefaultExpiry+rendezvous.DefaultSweep+hop(wanLink)
		c.nw.RunFor(earliest - c.nw.Now())
		for _, o := range rest {
			if !listsNick(o, ghost.Nick()) {
				t.Errorf("%v dropped the silent %v before the server's expiry", o, ghost)
			}
		}
		c.nw.RunFor(latest + quantum - c.nw.Now())
		for _, o := range rest {
			ev, ok := o.Rec().FirstAbout(inst, chat.EventPeerLeft)
			if !ok {
				t.Errorf("%v still lists the silent %v %v after its last heartbeat", o, ghost, c.nw.Now()-last)
				continue
			}
			t.Logf("%v dropped the silent %v %v after its last heartbeat (expiry %v, sweep %v)", o, ghost, c.at(ev.Time)-last, rendezvous.DefaultExpiry, rendezvous.DefaultSweep)
		}
		if err := viewsErr(rest); err != nil {
			t.Error(err)
		}
	})
}

// The same seed gives the same internet run: discovery, messages, a server
// crash and restart. WebSocket clients mask their frames with keys from
// gorilla's global math/rand, which no test can seed, so the payload
// checksums of the traces are left out of the comparison; times, hosts,
// ports, kinds and lengths of every packet must match.
func TestInternetDeterminism(t *testing.T) {
	checkDeterminismSansPayload(t, netsim.SeedFromEnv(t), clusterBody(func(t *testing.T, c *cluster) {
		boot, hosts := internetWorld(c, 4)
		startServer(t, c, boot)
		peers, _ := startClients(c, hosts, time.Second, "i")
		c.nw.RunFor(time.Second)
		for _, p := range peers[1:] {
			send(t.Context(), peers[0], p, p.Nick(), "hi "+p.Nick())
		}
		boot.Crash()
		c.nw.RunFor(20 * time.Second)
		boot.Restart()
		startServer(t, c, boot)
		c.nw.RunFor(50 * time.Second)
	}))
}

var payloadSum = regexp.MustCompile(`,"sum":[0-9]+`)

// checkDeterminismSansPayload is netsim.CheckDeterminism with the payload
// checksums removed from the traces before they are compared.
func checkDeterminismSansPayload(t *testing.T, seed uint64, body func(t *testing.T, nw *netsim.Network)) {
	t.Helper()
	var traces [2]bytes.Buffer
	for i := range traces {
		cryptotest.SetGlobalRandom(t, seed) // WebSocket handshake keys
		netsim.Run(t, seed, &netsim.Options{Trace: &traces[i]}, body)
	}
	a := strings.Split(payloadSum.ReplaceAllString(traces[0].String(), ""), "\n")
	b := strings.Split(payloadSum.ReplaceAllString(traces[1].String(), ""), "\n")
	for i := range max(len(a), len(b)) {
		var la, lb string
		if i < len(a) {
			la = a[i]
		}
		if i < len(b) {
			lb = b[i]
		}
		if la != lb {
			t.Fatalf("seed %d is not deterministic: the traces differ first at line %d:\n  run 1: %s\n  run 2: %s\nreplay with: %s",
				seed, i+1, la, lb, netsim.ReplayCommand(t, seed))
		}
	}
	t.Logf("seed %d: two runs, %d identical trace lines", seed, len(a))
}

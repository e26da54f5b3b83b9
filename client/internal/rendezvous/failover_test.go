package rendezvous_test

import (
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parlance-chat/parlance/client/internal/rendezvous"
	"github.com/parlance-chat/parlance/netsim"
)

// failoverLink is the link between every two hosts of the failover tests:
// slow enough that a bound counted in hops means something.
var failoverLink = netsim.Link{Latency: 10 * time.Millisecond}

// failoverHop bounds one trip on failoverLink: its latency plus netsim's
// delivery quantum (1 ms).
const failoverHop = 11 * time.Millisecond

// registerHops is how many trips a connection attempt takes from the SYN
// to the registered answer: SYN, SYN-ACK, upgrade request and answer,
// register, registered.
const registerHops = 6

// handshakeTimeout is the package's bound on one connection attempt to a
// server that does not answer.
const handshakeTimeout = 10 * time.Second

// Two server addresses; only the tests decide what runs behind them.
var (
	serverA = serverIP
	serverB = "10.0.0.2"
)

// stopAll stops every server still running.
func (w *world) stopAll() {
	for _, ip := range slices.Sorted(maps.Keys(w.servers)) {
		if w.servers[ip].srv != nil {
			w.stopServerAt(ip)
		}
	}
}

// withServers sets the client's list of servers.
func withServers(ips ...string) func(*rendezvous.Config) {
	return func(c *rendezvous.Config) {
		c.URLs = nil
		for _, ip := range ips {
			c.URLs = append(c.URLs, serverURL(ip))
		}
	}
}

// update is one update a node got, and when.
type update struct {
	rendezvous.Update
	at time.Time
}

// since returns the updates the node got at or after t0.
func (n *node) since(t0 time.Time) []update {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []update
	for i, u := range n.updates {
		if !n.times[i].Before(t0) {
			out = append(out, update{u, n.times[i]})
		}
	}
	return out
}

// firstOf returns the first update of kind at or after t0.
func (n *node) firstOf(kind rendezvous.UpdateKind, t0 time.Time) (update, bool) {
	for _, u := range n.since(t0) {
		if u.Kind == kind {
			return u, true
		}
	}
	return update{}, false
}

// server returns the server of the node's current registration.
func (n *node) server() string {
	s, _ := n.relay()
	return s
}

// A client whose first server cannot be reached registers with the next
// one after the backoff's first wait: at once when the first refuses the
// connection, after the handshake timeout when its host is down. Every
// update names the server it is about, and the client stays with the
// server that works.
func TestFirstServerDownRegistersWithTheNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(w *world) // makes server A unreachable
		// failIn bounds how long the attempt to A takes to fail.
		failIn time.Duration
	}{
		{"nothing listening there", func(w *world) { w.slot(serverA) }, 2 * failoverHop},
		{"its host is down", func(w *world) { w.slot(serverA).host.Crash() }, handshakeTimeout + failoverHop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t)
				w.n.SetDefaultLink(failoverLink)
				tc.down(w)
				w.startServerAt(serverB, 2)
				defer w.stopServerAt(serverB)
				start := time.Now()
				alice := w.run("alice", "192.0.2.1", 4001, 1, withServers(serverA, serverB))
				bound := tc.failIn + rendezvous.FailoverWithin + registerHops*failoverHop
				time.Sleep(bound + time.Second)

				ups := alice.since(start)
				if len(ups) < 2 {
					t.Fatalf("updates %+v, want Disconnected from A, then Registered with B", ups)
				}
				d := ups[0]
				if d.Kind != rendezvous.Disconnected || d.Server != serverURL(serverA) || d.Next != serverURL(serverB) || d.Err == nil {
					t.Fatalf("first update %+v, want Disconnected from %s with an error, next %s", d.Update, serverURL(serverA), serverURL(serverB))
				}
				if d.RetryIn < rendezvous.DefaultMinBackoff/2 || d.RetryIn > rendezvous.DefaultMinBackoff {
					t.Errorf("first retry in %v, want the backoff's first wait, %v to %v", d.RetryIn, rendezvous.DefaultMinBackoff/2, rendezvous.DefaultMinBackoff)
				}
				if took := d.at.Sub(start); took > tc.failIn {
					t.Errorf("the attempt to A failed after %v, want within %v", took, tc.failIn)
				}
				r := ups[1]
				if r.Kind != rendezvous.Registered || r.Server != serverURL(serverB) {
					t.Fatalf("second update %+v, want Registered with %s", r.Update, serverURL(serverB))
				}
				if took := r.at.Sub(start); took > bound {
					t.Errorf("registered with B %v after the start, want within %v", took, bound)
				}
				t.Logf("registered with B %v after the start (bound %v)", r.at.Sub(start), bound)
				for _, u := range ups[1:] {
					if u.Server != serverURL(serverB) {
						t.Errorf("update %v names %s, want %s", u.Kind, u.Server, serverURL(serverB))
					}
				}

				// B works: heartbeats keep alice there, well past the
				// server's expiry, and she never tries A again.
				bob := w.run("bob", "192.0.2.2", 4002, 2, withServers(serverB))
				time.Sleep(2 * time.Minute)
				if got, want := alice.nicks(), "[bob@192.0.2.2:4002]"; got != want {
					t.Errorf("alice sees %s through B, want %s", got, want)
				}
				if j, ok := alice.firstOf(rendezvous.Joined, r.at); !ok || j.Server != serverURL(serverB) {
					t.Errorf("bob's join: %+v (found %v), want one from %s", j.Update, ok, serverURL(serverB))
				}
				if u, ok := alice.firstOf(rendezvous.Disconnected, r.at); ok {
					t.Errorf("alice left B: %+v", u.Update)
				}
				_ = bob
			})
		})
	}
}

// Two clients registered with the first server of [A, B]: A stops, and
// each registers with B within FailoverWithin plus the trips of the close
// and of one registration; they see each other again there, and a
// relayed stream between them goes through B, opened with the tokens of
// the registrations with B. When B stops in turn, the list wraps: back to
// A, within the same bound.
func TestFailsOverWhenTheServerIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.n.SetDefaultLink(failoverLink)
		w.startServerAt(serverA, 1)
		w.startServerAt(serverB, 2)
		defer w.stopAll()
		alice := w.runRelay("alice", "192.0.2.1", 1, withServers(serverA, serverB))
		bob := w.runRelay("bob", "198.51.100.2", 2, withServers(serverA, serverB))
		time.Sleep(time.Second)
		for _, n := range []*relayNode{alice, bob} {
			if got := n.server(); got != serverURL(serverA) {
				t.Fatalf("registered with %q, want the first server %s", got, serverURL(serverA))
			}
		}
		if got := alice.nicks(); got != "[bob@198.51.100.2:4000]" {
			t.Fatalf("alice sees %s through A", got)
		}
		relayPair(t, alice, bob)

		bound := rendezvous.FailoverWithin + failoverHop + registerHops*failoverHop
		for _, step := range []struct{ lost, next string }{{serverA, serverB}, {serverB, serverA}} {
			t.Logf("step: %s stops", step.lost)
			if w.servers[step.next].srv == nil {
				w.startServerAt(step.next, 3)
			}
			lost := time.Now()
			w.stopServerAt(step.lost)
			time.Sleep(bound + time.Second)
			for _, c := range []struct {
				name string
				n    *relayNode
			}{{"alice", alice}, {"bob", bob}} {
				name, n := c.name, c.n
				d, ok := n.firstOf(rendezvous.Disconnected, lost)
				switch {
				case !ok:
					t.Fatalf("%s: no Disconnected after %s stopped", name, step.lost)
				case d.Server != serverURL(step.lost) || d.Next != serverURL(step.next):
					t.Errorf("%s: Disconnected from %q, next %q; want from %s, next %s", name, d.Server, d.Next, serverURL(step.lost), serverURL(step.next))
				case d.RetryIn < rendezvous.DefaultMinBackoff/2 || d.RetryIn > rendezvous.FailoverWithin:
					t.Errorf("%s: retry in %v, want the backoff started over: %v to %v", name, d.RetryIn, rendezvous.DefaultMinBackoff/2, rendezvous.FailoverWithin)
				}
				r, ok := n.firstOf(rendezvous.Registered, lost)
				if !ok {
					t.Fatalf("%s: not registered again %v after %s stopped", name, bound+time.Second, step.lost)
				}
				if r.Server != serverURL(step.next) {
					t.Errorf("%s: registered with %q, want %s", name, r.Server, serverURL(step.next))
				}
				if took := r.at.Sub(lost); took > bound {
					t.Errorf("%s: registered with %s %v after %s stopped, want within %v", name, step.next, took, step.lost, bound)
				} else {
					t.Logf("%s: registered with %s %v after %s stopped (bound %v)", name, step.next, took, step.lost, bound)
				}
				for _, u := range n.since(r.at) {
					if u.Server != serverURL(step.next) {
						t.Errorf("%s: %v update names %q after the switch, want %s", name, u.Kind, u.Server, serverURL(step.next))
					}
				}
			}
			if got := alice.nicks(); got != "[bob@198.51.100.2:4000]" {
				t.Errorf("alice sees %s through %s", got, step.next)
			}
			if got := bob.nicks(); got != "[alice@192.0.2.1:4000]" {
				t.Errorf("bob sees %s through %s", got, step.next)
			}
			// relayPair checks that the stream is announced by the
			// server of the current registration, with its token.
			if server, _ := alice.relay(); server != serverURL(step.next) {
				t.Errorf("alice would relay through %q, want %s", server, serverURL(step.next))
			}
			relayPair(t, alice, bob)
		}
	})
}

// One server in the list is retried, as before there were lists.
func TestOneServerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t)
		w.startServer(1)
		alice := w.run("alice", "192.0.2.1", 4001, 1)
		time.Sleep(time.Second)
		lost := time.Now()
		w.stopServer()
		w.startServer(2)
		defer w.stopServer()
		time.Sleep(rendezvous.FailoverWithin + 100*time.Millisecond)
		d, ok := alice.firstOf(rendezvous.Disconnected, lost)
		if !ok || d.Server != serverURL(serverIP) || d.Next != serverURL(serverIP) {
			t.Fatalf("Disconnected %+v (found %v), want from and next %s", d.Update, ok, serverURL(serverIP))
		}
		if r, ok := alice.firstOf(rendezvous.Registered, lost); !ok || r.Server != serverURL(serverIP) {
			t.Fatalf("Registered %+v (found %v), want with %s again", r.Update, ok, serverURL(serverIP))
		}
	})
}

// A list with no server, or with a URL that is not a WebSocket one, is a
// Config error.
func TestServerListMustBeValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		urls []string
	}{
		{"no server", nil},
		{"a bad URL after a good one", []string{"ws://10.0.0.1:8080/", "http://10.0.0.2/"}},
		{"a URL without a host", []string{"ws://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t)
				n := w.run("alice", "192.0.2.1", 4001, 1, func(c *rendezvous.Config) { c.URLs = tc.urls })
				if err := <-n.done; err == nil {
					t.Fatalf("Run with URLs %q: nil, want a Config error", tc.urls)
				}
				n.cancel = nil
			})
		})
	}
}

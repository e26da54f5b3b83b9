package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

func TestOriginalProtocol(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		alice := dial(t, sim, "192.0.2.10")
		bob := dial(t, sim, "198.51.100.7")

		ra := alice.register("alice", 40045)
		if ra.PublicAddr != "192.0.2.10:40045" {
			t.Errorf("public_addr %q, want the observed IP with local_addr's port", ra.PublicAddr)
		}
		if len(ra.Caps) != 0 {
			t.Errorf("an original client got caps %v in registered", ra.Caps)
		}
		rb := bob.register("bob", 41000)

		peers := alice.list()
		if got := ids(peers); len(got) != 2 || got[ra.PeerID] != "alice" || got[rb.PeerID] != "bob" {
			t.Fatalf("peer_list %v, want alice and bob (the requester included)", peers)
		}
		for _, p := range peers {
			if p.PeerID == rb.PeerID && (p.PublicAddr != "198.51.100.7:41000" || p.LocalAddr != "0.0.0.0:41000" || p.LastSeen != time.Now().Unix()) {
				t.Errorf("bob's entry %+v", p)
			}
		}

		// heartbeat and unregister succeed silently; the connection
		// stays usable after unregister (the original deadlocked).
		alice.send(&protocol.Heartbeat{})
		alice.send(&protocol.Unregister{})
		if got := ids(alice.list()); len(got) != 1 || got[rb.PeerID] != "bob" {
			t.Fatalf("after unregister the list is %v, want only bob", got)
		}
		alice.send(&protocol.Heartbeat{})
		alice.wantError(protocol.ErrTextNotRegistered)
		ra2 := alice.register("alice", 40045)
		if ra2.PeerID == ra.PeerID {
			t.Errorf("re-register reused peer id %s", ra.PeerID)
		}

		// Closing the WebSocket removes the registration.
		bob.ws.Close()
		sim.Settle()
		if got := ids(alice.list()); len(got) != 1 || got[ra2.PeerID] != "alice" {
			t.Fatalf("after bob closed the list is %v, want only alice", got)
		}
	})
}

func TestUnparsableLocalAddrUsesObservedAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		c.send(&protocol.Register{Nickname: "x", LocalAddr: "nonsense"})
		r := c.recv().(*protocol.Registered)
		if !strings.HasPrefix(r.PublicAddr, "192.0.2.10:") || r.PublicAddr == "192.0.2.10:0" {
			t.Errorf("public_addr %q, want the whole observed ip:port", r.PublicAddr)
		}
	})
}

func TestSecondRegisterReplacesTheFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		c.register("first", 1000)
		r := c.register("second", 2000)
		peers := c.list()
		if len(peers) != 1 || peers[0].PeerID != r.PeerID || peers[0].Nickname != "second" {
			t.Fatalf("list %+v, want only the second registration", peers)
		}
	})
}

// TestErrorTexts produces every error of PROTOCOL.md section 3 by its cause.
func TestErrorTexts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		// t.Run is not allowed inside a bubble: steps log their name.
		step := func(name string, f func()) {
			t.Logf("step: %s", name)
			f()
		}
		step("heartbeat before register", func() {
			c.send(&protocol.Heartbeat{})
			c.wantError(protocol.ErrTextNotRegistered)
		})
		step("unregister before register", func() {
			c.send(&protocol.Unregister{})
			c.wantError(protocol.ErrTextNotRegistered)
		})
		for _, tc := range []struct{ name, frame, detail string }{
			{"invalid JSON", `{"type":`, "invalid JSON"},
			{"unknown type", `{"type":"dance"}`, "unknown message type"},
			{"missing field", `{"type":"register","nickname":"x"}`, "missing field `local_addr`"},
			{"bad nickname", `{"type":"register","nickname":"","local_addr":"0.0.0.0:1"}`, "nickname"},
		} {
			step(tc.name, func() {
				c.sendRaw(tc.frame)
				m := c.recv().(*protocol.Error)
				if !strings.HasPrefix(m.Message, protocol.ErrTextInvalidPrefix) || !strings.Contains(m.Message, tc.detail) {
					t.Errorf("error %q, want %q followed by a detail naming %q", m.Message, protocol.ErrTextInvalidPrefix, tc.detail)
				}
			})
		}
		step("heartbeat after expiry", func() {
			c.register("late", 1000)
			time.Sleep(DefaultExpiry + DefaultSweep + time.Second)
			if peers := c.list(); len(peers) != 0 {
				t.Fatalf("peer still listed 41 s after its last heartbeat: %+v", peers)
			}
			c.send(&protocol.Heartbeat{})
			c.wantError(protocol.ErrTextPeerNotRegistered)
		})
	})
}

func TestHeartbeatKeepsPeerAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		r := c.register("steady", 1000)
		for range 10 {
			time.Sleep(10 * time.Second)
			c.send(&protocol.Heartbeat{})
		}
		peers := c.list()
		if len(peers) != 1 || peers[0].PeerID != r.PeerID || peers[0].LastSeen != time.Now().Unix() {
			t.Fatalf("list %+v, want the peer with last_seen now", peers)
		}
	})
}

func TestPushAndNamespaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		orig := dial(t, sim, "192.0.2.1")
		orig.register("original", 1000)

		sub := dial(t, sim, "192.0.2.2")
		r := sub.register("sub", 2000, protocol.CapPush)
		if !protocol.HasCap(r.Caps, protocol.CapPush) {
			t.Fatalf("registered caps %v, want push", r.Caps)
		}
		snap := sub.recv().(*protocol.PeerList)
		if got := ids(snap.Peers); len(got) != 2 {
			t.Fatalf("snapshot %v, want original and sub", got)
		}

		other := dial(t, sim, "192.0.2.3")
		other.send(&protocol.Register{Nickname: "elsewhere", LocalAddr: "0.0.0.0:3000", Namespace: "team"})
		other.recv()
		if got := ids(other.list()); len(got) != 1 {
			t.Fatalf("namespace team sees %v, want only itself", got)
		}

		late := dial(t, sim, "192.0.2.4")
		rl := late.register("late", 4000)
		j := sub.recv().(*protocol.PeerJoined)
		if j.Peer.PeerID != rl.PeerID || j.Peer.PublicAddr != "192.0.2.4:4000" {
			t.Fatalf("peer_joined %+v, want late", j.Peer)
		}
		late.ws.Close()
		l := sub.recv().(*protocol.PeerLeft)
		if l.PeerID != rl.PeerID {
			t.Fatalf("peer_left %q, want %q", l.PeerID, rl.PeerID)
		}
		// The original client never got a push message, and the other
		// namespace heard nothing.
		orig.expectNothing(time.Second)
		other.expectNothing(time.Second)
	})
}

func TestFrameSizeLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{MaxFrame: 1024})
		c := dial(t, sim, "192.0.2.10")
		c.sendRaw(`{"type":"list_peers","pad":"` + strings.Repeat("x", 1100) + `"}`)
		c.wantError(protocol.ErrTextInvalidPrefix + "frame exceeds the limit of 1024 bytes")
		err := c.recvClose()
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("after the error: %v, want close 1009", err)
		}
	})
}

func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{MsgRatePerIP: 1, MsgBurstPerIP: 5})
		c := dial(t, sim, "192.0.2.10")
		for range 5 {
			c.list()
		}
		c.send(&protocol.ListPeers{})
		c.wantError(ErrTextRateLimited)
		if err := c.recvClose(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Fatalf("after the error: %v, want close 1008", err)
		}
		if got := counter(t, s, "parlance_bootstrap_rate_limited_total"); got != 1 {
			t.Errorf("rate_limited_total %v, want 1", got)
		}
		// Another address is not affected.
		dial(t, sim, "192.0.2.11").list()
	})
}

func TestConnectionLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{MaxConnsPerIP: 2})
		a := dial(t, sim, "192.0.2.10")
		dial(t, sim, "192.0.2.10")
		c := dial(t, sim, "192.0.2.10")
		c.wantError(ErrTextTooManyConns + " (limit 2)")
		if err := c.recvClose(); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
			t.Fatalf("after the error: %v, want close 1013", err)
		}
		// Room comes back when a connection closes.
		a.ws.Close()
		sim.Settle()
		dial(t, sim, "192.0.2.10").list()
	})
}

func TestPeerCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{MaxPeers: 1})
		dial(t, sim, "192.0.2.1").register("one", 1)
		c := dial(t, sim, "192.0.2.2")
		c.send(&protocol.Register{Nickname: "two", LocalAddr: "0.0.0.0:2"})
		c.wantError(ErrTextServerFull + " (1 peers)")
		if got := len(c.list()); got != 1 {
			t.Fatalf("list has %d peers, want 1; the connection must stay usable", got)
		}
	})
}

// The sweep ends a connection silent for ReadTimeout (no message, no
// pong): one that never sent anything, one that registered and went
// quiet, and one that stopped in the middle of a frame. Never before
// ReadTimeout, and at the latest one Sweep after it.
func TestSilentConnectionIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		conns := func() int {
			sim.Settle()
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.conns)
		}
		// Just after a sweep, so that ReadTimeout ends between two.
		time.Sleep(time.Second)
		// These clients never read, so they never answer pings.
		dial(t, sim, "192.0.2.10")
		quiet := dial(t, sim, "192.0.2.11")
		quiet.send(&protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000"})
		half := dial(t, sim, "192.0.2.12")
		if _, err := half.ws.NetConn().Write(maskedText(listPeersJSON)[:10]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(DefaultReadTimeout - time.Second)
		if n := conns(); n != 3 {
			t.Fatalf("%d connections %v after their last bytes, want all 3 kept", n, DefaultReadTimeout-time.Second)
		}
		time.Sleep(DefaultSweep + 2*time.Second)
		if n := conns(); n != 0 {
			t.Fatalf("%d connections left %v after their last bytes, want 0", n, DefaultReadTimeout+DefaultSweep+time.Second)
		}
		if got := errorsOfKind(t, s, errKindReadTimeout); got != 3 {
			t.Errorf("errors_total{kind=read_timeout} = %v, want 3", got)
		}
	})
}

func TestPingsKeepReadingClientAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		c.expectNothing(3 * DefaultReadTimeout) // reading answers pings
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d connections, want the pinged one kept", n)
		}
	})
}

func TestShutdownSendsCloseFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		c := dial(t, sim, "192.0.2.10")
		c.register("x", 1)
		// The client reads meanwhile and closes once it has the close
		// frame, which ends the server's lingering close.
		read := make(chan error, 1)
		go func() { read <- c.recvClose() }()
		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v", d)
		}
		if err := <-read; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("read after shutdown: %v, want close 1001", err)
		}
	})
}

func TestDeterministicPeerIDs(t *testing.T) {
	run := func() string {
		var id string
		synctest.Test(t, func(t *testing.T) {
			_, sim := testServer(t, Config{})
			id = dial(t, sim, "192.0.2.1").register("a", 1).PeerID
		})
		return id
	}
	a, b := run(), run()
	if a != b {
		t.Fatalf("peer ids %s and %s from the same seed", a, b)
	}
	if len(a) != 36 || a[14] != '4' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Fatalf("peer id %s is not a UUIDv4", a)
	}
}

// Serve, stopped by its context, returns only once the close it started
// is complete: a program exits when Serve returns (the command does), and
// returning as soon as the listener closed let the process exit before
// the close frames were written, so clients saw EOF instead of close
// 1001. Over netsim the socket has CloseWrite, so the close lingers: the
// client here does not answer, and the close takes ShutdownGrace.
func TestServeReturnsOnceClosed(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		server, alice := n.AddHost("server", lan), n.AddHost("alice", lan)
		s, err := NewServer(Config{})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := server.Listen(server.Context(), "tcp", ":8080")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(server.Context())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, ln) }()
		d := websocket.Dialer{NetDialContext: alice.DialContext}
		ws, _, err := d.Dial("ws://"+server.AddrPort(8080).String()+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		c := &client{t: t, ws: ws}
		c.register("x", 1)

		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
		s.mu.Lock()
		left := len(s.conns)
		s.mu.Unlock()
		if left != 0 {
			t.Fatalf("Serve returned with %d connections still open", left)
		}
		if err := c.recvClose(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("read after Serve returned: %v, want close 1001", err)
		}
	})
}

// Room tags for the tests below.
const (
	tagA = "0f1e2d3c4b5a69788796a5b4"
	tagB = "c3d2e1f00112233445566778"
)

// Room tags are listed only with a key the server checked: a tag means
// something only against the key that signed it.
func TestRoomsListedOnlyWhenSigned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		watcher := dial(t, sim, "192.0.2.1")
		watcher.register("watcher", 1000, protocol.CapPush)
		watcher.recv() // the snapshot

		signed := signedRegister("alice", 4001, identity(1), time.Now())
		signed.Rooms = []string{tagA, tagB}
		signed.Sign(identity(1), time.Now())
		ra := dial(t, sim, "192.0.2.10").registerWith(signed)
		if j := watcher.recv().(*protocol.PeerJoined); j.Peer.PeerID != ra.PeerID || !slices.Equal(j.Peer.Rooms, []string{tagA, tagB}) {
			t.Fatalf("peer_joined %+v, want alice with her rooms", j.Peer)
		}
		unsigned := &protocol.Register{Nickname: "bob", LocalAddr: "0.0.0.0:4002", Rooms: []string{tagA}}
		rb := dial(t, sim, "192.0.2.11").registerWith(unsigned)
		if j := watcher.recv().(*protocol.PeerJoined); j.Peer.PeerID != rb.PeerID || j.Peer.Rooms != nil {
			t.Fatalf("peer_joined %+v, want bob without rooms", j.Peer)
		}
		peers := watcher.list()
		if p := byID(t, peers, ra.PeerID); p.Key != keyOf(identity(1)) || !slices.Equal(p.Rooms, []string{tagA, tagB}) {
			t.Errorf("alice's entry %+v, want her key and rooms", p)
		}
		if p := byID(t, peers, rb.PeerID); p.Rooms != nil {
			t.Errorf("bob's entry %+v lists rooms of an unsigned register", p)
		}
	})
}

// A register signed by the same key, for the same namespace, on a
// connection already registered updates the entry in place: the same
// peer_id and relay token, the new fields, a peer_joined for the others
// and no peer_left.
func TestReRegisterUpdatesInPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		watcher := dial(t, sim, "192.0.2.1")
		watcher.register("watcher", 1000, protocol.CapPush)
		watcher.recv() // the snapshot

		key := identity(1)
		reg := func(nick string, port int, rooms ...string) *protocol.Register {
			m := &protocol.Register{Nickname: nick, LocalAddr: fmt.Sprintf("0.0.0.0:%d", port), Instance: "a1",
				Caps: []string{protocol.CapPush, protocol.CapRelay}, Rooms: rooms}
			m.Sign(key, time.Now())
			return m
		}
		a := dial(t, sim, "192.0.2.10")
		first := a.registerWith(reg("alice", 4001, tagA))
		a.recv() // the snapshot
		if first.RelayToken == "" {
			t.Fatal("no relay token")
		}
		watcher.recv() // joined
		before := watcher.list()

		time.Sleep(time.Second)
		second := a.registerWith(reg("alice2", 4002, tagA, tagB))
		if second.PeerID != first.PeerID || second.RelayToken != first.RelayToken || !slices.Equal(second.Caps, first.Caps) {
			t.Fatalf("registered again %+v, want the first's peer_id and relay token %+v", second, first)
		}
		if second.PublicAddr != "192.0.2.10:4002" {
			t.Errorf("public_addr %q, want the new local_addr's port", second.PublicAddr)
		}
		j, ok := watcher.recv().(*protocol.PeerJoined)
		if !ok || j.Peer.PeerID != first.PeerID || j.Peer.Nickname != "alice2" || !slices.Equal(j.Peer.Rooms, []string{tagA, tagB}) ||
			j.Peer.LocalAddr != "0.0.0.0:4002" || j.Peer.Key != keyOf(key) || j.Peer.LastSeen != time.Now().Unix() {
			t.Fatalf("after the update the watcher got %#v, want a peer_joined with the new entry", j)
		}
		peers := watcher.list()
		if len(peers) != len(before) {
			t.Fatalf("list %+v, want as many peers as before %+v", peers, before)
		}
		if p := byID(t, peers, first.PeerID); p.Nickname != "alice2" || !slices.Equal(p.Rooms, []string{tagA, tagB}) {
			t.Errorf("listed %+v, want the updated entry", p)
		}
		// Leaving every room is an update too.
		a.registerWith(reg("alice2", 4002))
		if j := watcher.recv().(*protocol.PeerJoined); j.Peer.PeerID != first.PeerID || j.Peer.Rooms != nil {
			t.Fatalf("peer_joined %+v, want alice without rooms", j.Peer)
		}
		// Nothing else: no peer_left, no snapshot, no echo to alice.
		watcher.expectNothing(time.Second)
		a.expectNothing(time.Second)
	})
}

// Any other second register replaces the first, as before: a new
// peer_id, peer_left then peer_joined.
func TestReRegisterReplacesUnlessSameKeyAndNamespace(t *testing.T) {
	key := identity(1)
	signed := func(ns string, caps ...string) *protocol.Register {
		m := &protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4001", Caps: caps, Namespace: ns, Rooms: []string{tagA}}
		m.Sign(key, time.Now())
		return m
	}
	for _, tc := range []struct {
		name   string
		second func() *protocol.Register
	}{
		{"unsigned", func() *protocol.Register {
			return &protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4001", Caps: []string{protocol.CapPush}}
		}},
		{"another key", func() *protocol.Register {
			return signedRegister("alice", 4001, identity(2), time.Now(), protocol.CapPush)
		}},
		{"another namespace", func() *protocol.Register { return signed("team", protocol.CapPush) }},
		{"without push", func() *protocol.Register { return signed("") }},
		{"with relay", func() *protocol.Register { return signed("", protocol.CapPush, protocol.CapRelay) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, sim := testServer(t, Config{})
				watcher := dial(t, sim, "192.0.2.1")
				watcher.register("watcher", 1000, protocol.CapPush)
				watcher.recv() // the snapshot
				a := dial(t, sim, "192.0.2.10")
				first := a.registerWith(signed("", protocol.CapPush))
				a.recv()       // the snapshot
				watcher.recv() // joined
				second := a.registerWith(tc.second())
				if second.PeerID == first.PeerID {
					t.Fatalf("registered again under the same peer_id %s", first.PeerID)
				}
				if l, ok := watcher.recv().(*protocol.PeerLeft); !ok || l.PeerID != first.PeerID {
					t.Fatalf("got %#v, want peer_left for the first registration", l)
				}
			})
		})
	}
}

package rendezvous

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

// relayPeer is a registered client that listed the relay capability.
type relayPeer struct {
	*client
	reg *protocol.Registered
	sim *sim
	ip  string
}

func relayUp(t *testing.T, n *sim, ip, nick string, caps ...string) *relayPeer {
	t.Helper()
	c := dial(t, n, ip)
	r := c.register(nick, 4000, append(caps, protocol.CapRelay)...)
	if !protocol.HasCap(r.Caps, protocol.CapRelay) || !protocol.ValidRelayToken(r.RelayToken) {
		t.Fatalf("registered %+v: want the relay cap and a relay token", r)
	}
	return &relayPeer{client: c, reg: r, sim: n, ip: ip}
}

// open dials a fresh WebSocket and sends first on it.
func (p *relayPeer) open(first protocol.ClientMessage) *client {
	p.t.Helper()
	c := dial(p.t, p.sim, p.ip)
	c.send(first)
	return c
}

// connect opens a relayed stream from p to q and returns both ends once
// both have relay_ready.
func connect(t *testing.T, p, q *relayPeer) (a, b *client) {
	t.Helper()
	a = p.open(&protocol.RelayConnect{Token: p.reg.RelayToken, PeerID: q.reg.PeerID})
	in, ok := q.recv().(*protocol.RelayIncoming)
	if !ok || in.PeerID != p.reg.PeerID {
		t.Fatalf("got %#v, want relay_incoming from %s", in, p.reg.PeerID)
	}
	b = q.open(&protocol.RelayAccept{Token: q.reg.RelayToken, Stream: in.Stream})
	for _, c := range []*client{a, b} {
		r, ok := c.recv().(*protocol.RelayReady)
		if !ok || r.Stream != in.Stream {
			t.Fatalf("got %#v, want relay_ready for %s", r, in.Stream)
		}
	}
	return a, b
}

// wantClose reads until the close frame and checks its code and reason.
func (c *client) wantClose(code int, reason string) {
	c.t.Helper()
	err := c.recvClose()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Text != reason {
		c.t.Fatalf("read: %v, want close %d %q", err, code, reason)
	}
}

// wantRefused checks for an error message with text and a close 1008.
func (c *client) wantRefused(text string) {
	c.t.Helper()
	c.wantError(text)
	c.wantClose(websocket.ClosePolicyViolation, "relay refused")
}

// labeled returns the value of metric name with label=value.
func labeled(t *testing.T, s *Server, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return valueOf(m.GetCounter().GetValue(), m.GetGauge().GetValue())
				}
			}
		}
	}
	return 0
}

func valueOf(counter, gauge float64) float64 { return counter + gauge }

// transfer sends size random bytes from one end to the other in frames of
// at most protocol.MaxRelayFrameSize, checks they arrive intact and in
// order, and returns how long it took.
func transfer(t *testing.T, from, to *client, size int, seed uint64) time.Duration {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	start := time.Now()
	sent := make(chan error, 1)
	go func() {
		rest := data
		for len(rest) > 0 {
			k := min(len(rest), protocol.MaxRelayFrameSize)
			if err := from.ws.WriteMessage(websocket.BinaryMessage, rest[:k]); err != nil {
				sent <- err
				return
			}
			rest = rest[k:]
		}
		sent <- nil
	}()
	h := sha256.New()
	got := 0
	to.ws.SetReadDeadline(time.Now().Add(10 * time.Minute))
	for got < size {
		typ, b, err := to.ws.ReadMessage()
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", got, size, err)
		}
		if typ != websocket.BinaryMessage || len(b) > protocol.MaxRelayFrameSize {
			t.Fatalf("got a frame of type %d and %d bytes", typ, len(b))
		}
		h.Write(b)
		got += len(b)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got != size || !bytes.Equal(h.Sum(nil), sha256Sum(data)) {
		t.Fatalf("received %d bytes that differ from the %d sent", got, size)
	}
	return time.Since(start)
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestRelayCarriesBytesBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		a, b := connect(t, alice, bob)
		if got := labeled(t, s, "parlance_bootstrap_relay_streams", "state", "open"); got != 1 {
			t.Errorf("relay_streams{open} %v, want 1", got)
		}
		transfer(t, a, b, 3<<20+12345, 1)
		transfer(t, b, a, 1<<20+7, 2)
		// Both directions at once.
		done := make(chan struct{})
		go func() {
			defer close(done)
			transfer(t, a, b, 512<<10, 3)
		}()
		transfer(t, b, a, 512<<10, 4)
		<-done
		want := float64(3<<20 + 12345 + 1<<20 + 7 + 1<<20)
		if got := counter(t, s, "parlance_bootstrap_relay_bytes_total"); got != want {
			t.Errorf("relay_bytes_total %v, want %v", got, want)
		}
		// The control connections stay usable meanwhile.
		if n := len(alice.list()); n != 2 {
			t.Errorf("peer_list has %d peers, want 2", n)
		}

		// A close on one side closes the other.
		a.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		b.wantClose(websocket.CloseNormalClosure, "peer closed")
		a.recvClose()
		sim.Settle()
		if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", "closed"); got != 1 {
			t.Errorf("relay_streams_total{closed} %v, want 1", got)
		}
		if got := labeled(t, s, "parlance_bootstrap_relay_streams", "state", "open"); got != 0 {
			t.Errorf("relay_streams{open} %v after the close, want 0", got)
		}
	})
}

func TestRelayAbruptCloseEndsTheOtherSide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		a, b := connect(t, alice, bob)
		b.ws.NetConn().Close() // no close frame
		a.wantClose(websocket.CloseGoingAway, "peer connection lost")
	})
}

func TestRelayRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{RelayStreamsPerPeer: 2})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		carol := relayUp(t, sim, "203.0.113.3", "carol")
		orig := dial(t, sim, "192.0.2.9")
		origReg := orig.register("original", 5000)
		if len(origReg.Caps) != 0 || origReg.RelayToken != "" {
			t.Fatalf("an original client got %+v: caps or a relay token", origReg)
		}
		other := dial(t, sim, "192.0.2.10")
		other.send(&protocol.Register{Nickname: "elsewhere", LocalAddr: "0.0.0.0:1", Caps: []string{protocol.CapRelay}, Namespace: "team"})
		otherReg := other.recv().(*protocol.Registered)

		step := func(name string, f func()) {
			t.Logf("step: %s", name)
			f()
		}
		outcome := func(o string, want float64) {
			t.Helper()
			if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", o); got != want {
				t.Errorf("relay_streams_total{outcome=%q} %v, want %v", o, got, want)
			}
		}
		step("unknown token", func() {
			alice.open(&protocol.RelayConnect{Token: "q7cY3nJ0wK2mZ5xV9sPdAg", PeerID: bob.reg.PeerID}).wantRefused(ErrTextRelayBadToken)
			outcome("bad_token", 1)
		})
		step("unknown peer", func() {
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: "no-such-peer"}).wantRefused(ErrTextRelayUnknownPeer)
			outcome("unknown_peer", 1)
		})
		step("peer in another namespace", func() {
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: otherReg.PeerID}).wantRefused(ErrTextRelayUnknownPeer)
			outcome("unknown_peer", 2)
		})
		step("oneself", func() {
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: alice.reg.PeerID}).wantRefused(ErrTextRelayUnknownPeer)
			outcome("unknown_peer", 3)
		})
		step("an original client cannot be reached", func() {
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: origReg.PeerID}).wantRefused(ErrTextRelayNoCap)
			outcome("no_relay_cap", 1)
		})
		step("relay_connect on a control connection", func() {
			alice.send(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
			alice.wantRefused(ErrTextRelayNotFirst)
			outcome("not_first", 1)
			alice = relayUp(t, sim, "192.0.2.1", "alice") // that closed her registration
		})
		step("accept of an unknown stream", func() {
			bob.open(&protocol.RelayAccept{Token: bob.reg.RelayToken, Stream: "nope"}).wantRefused(ErrTextRelayUnknownStream)
			outcome("unknown_stream", 1)
		})
		step("accept with a token that is not the target's", func() {
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
			in := bob.recv().(*protocol.RelayIncoming)
			carol.open(&protocol.RelayAccept{Token: carol.reg.RelayToken, Stream: in.Stream}).wantRefused(ErrTextRelayUnknownStream)
			outcome("unknown_stream", 2)
		})
		step("streams per peer, for the sender", func() {
			// alice has one pending stream to bob; one more is allowed.
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
			bob.recv()
			alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: carol.reg.PeerID}).wantRefused("Too many relayed streams (limit 2)")
			outcome("stream_limit", 1)
		})
		step("streams per peer, for the target", func() {
			carol.open(&protocol.RelayConnect{Token: carol.reg.RelayToken, PeerID: bob.reg.PeerID}).wantRefused("Peer has too many relayed streams (limit 2)")
			outcome("stream_limit", 2)
			if got := labeled(t, s, "parlance_bootstrap_relay_streams", "state", "pending"); got != 2 {
				t.Errorf("relay_streams{pending} %v, want 2", got)
			}
		})
		step("accept timeout", func() {
			// Let the two pending streams expire; a new one then fits.
			time.Sleep(DefaultRelayAcceptTimeout)
			sim.Settle()
			outcome("accept_timeout", 2)
			a := alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
			in := bob.recv().(*protocol.RelayIncoming)
			start := time.Now()
			a.ws.SetReadDeadline(time.Now().Add(time.Minute))
			_, msg, err := a.ws.ReadMessage()
			if want := `{"type":"error","message":"Peer did not accept the relayed stream within 10s"}`; err != nil || string(msg) != want {
				t.Fatalf("read %s, %v; want %s", msg, err, want)
			}
			a.wantClose(websocket.ClosePolicyViolation, "relay refused")
			if d := time.Since(start); d != DefaultRelayAcceptTimeout {
				t.Errorf("refused after %v, want %v", d, DefaultRelayAcceptTimeout)
			}
			outcome("accept_timeout", 3)
			bob.open(&protocol.RelayAccept{Token: bob.reg.RelayToken, Stream: in.Stream}).wantRefused(ErrTextRelayUnknownStream)
			if got := labeled(t, s, "parlance_bootstrap_relay_streams", "state", "pending"); got != 0 {
				t.Errorf("relay_streams{pending} %v, want 0", got)
			}
		})
		step("a token from a registration that ended", func() {
			old := bob.reg.RelayToken
			bob.send(&protocol.Unregister{})
			bob.open(&protocol.RelayAccept{Token: old, Stream: "x"}).wantRefused(ErrTextRelayBadToken)
		})
		// The original client never heard of any of this.
		orig.expectNothing(time.Second)
	})
}

func TestRelayOffRefusesEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sim := testServer(t, Config{NoRelay: true})
		c := dial(t, sim, "192.0.2.1")
		r := c.register("alice", 1, protocol.CapRelay)
		if len(r.Caps) != 0 || r.RelayToken != "" {
			t.Fatalf("registered %+v with the relay off", r)
		}
		p := &relayPeer{client: c, reg: r, sim: sim, ip: "192.0.2.1"}
		p.open(&protocol.RelayConnect{Token: "q7cY3nJ0wK2mZ5xV9sPdAg", PeerID: r.PeerID}).wantRefused(ErrTextRelayBadToken)
	})
}

func TestRelayStreamEndsWithRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		a, b := connect(t, alice, bob)
		a2, b2 := connect(t, alice, bob)
		bob.send(&protocol.Unregister{})
		for _, c := range []*client{a, b, a2, b2} {
			c.wantClose(websocket.CloseGoingAway, "peer registration ended")
		}
		if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", "peer_left"); got != 2 {
			t.Errorf("relay_streams_total{peer_left} %v, want 2", got)
		}
		// Closing the control connection ends them too.
		bob = relayUp(t, sim, "198.51.100.2", "bob")
		a, b = connect(t, alice, bob)
		alice.ws.Close()
		a.wantClose(websocket.CloseGoingAway, "peer registration ended")
		b.wantClose(websocket.CloseGoingAway, "peer registration ended")
	})
}

func TestRelayIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The control connections, silent and unread here, must outlive the stream.
		s, sim := testServer(t, Config{RelayIdleTimeout: time.Minute, Expiry: time.Hour, ReadTimeout: time.Hour, PingInterval: time.Minute})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		a, b := connect(t, alice, bob)
		// Traffic in either direction keeps the stream open.
		for i := range 4 {
			time.Sleep(50 * time.Second)
			from, to := a, b
			if i%2 == 1 {
				from, to = b, a
			}
			transfer(t, from, to, 10, uint64(i))
		}
		start := time.Now()
		for _, c := range []*client{a, b} {
			c.ws.SetReadDeadline(time.Now().Add(2 * time.Minute))
			_, _, err := c.ws.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "relayed stream idle" {
				t.Fatalf("read: %v, want close 1001 relayed stream idle", err)
			}
			c.ws.Close()
		}
		if d := time.Since(start); d != time.Minute {
			t.Errorf("closed %v after the last frame, want 1m0s", d)
		}
		if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", "idle_timeout"); got != 1 {
			t.Errorf("relay_streams_total{idle_timeout} %v, want 1", got)
		}
	})
}

func TestRelayRates(t *testing.T) {
	const size = 1_000_000
	for _, tc := range []struct {
		name string
		cfg  Config
		rate int
	}{
		{"per peer", Config{RelayPeerRate: 100_000, RelayTotalRate: -1}, 100_000},
		{"in total", Config{RelayPeerRate: -1, RelayTotalRate: 200_000}, 200_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, sim := testServer(t, tc.cfg)
				alice := relayUp(t, sim, "192.0.2.1", "alice")
				bob := relayUp(t, sim, "198.51.100.2", "bob")
				a, b := connect(t, alice, bob)
				// The bucket starts full: one frame's worth goes at once.
				min := time.Duration(float64(size-DefaultRelayMaxFrame) / float64(tc.rate) * float64(time.Second))
				d := transfer(t, a, b, size, 1)
				if d < min || d > min+2*time.Second {
					t.Errorf("%d bytes at %d B/s took %v, want at least %v (and not much more)", size, tc.rate, d, min)
				}
				if got := counter(t, s, "parlance_bootstrap_relay_throttled_seconds_total"); got < min.Seconds()/2 {
					t.Errorf("relay_throttled_seconds_total %v, want about %v", got, min.Seconds())
				}
			})
		})
	}
}

func TestRelayFrameLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		alice := relayUp(t, sim, "192.0.2.1", "alice")
		bob := relayUp(t, sim, "198.51.100.2", "bob")
		a, b := connect(t, alice, bob)
		a.ws.WriteMessage(websocket.BinaryMessage, make([]byte, DefaultRelayMaxFrame+1))
		a.wantClose(websocket.CloseMessageTooBig, fmt.Sprintf("frame exceeds the limit of %d bytes", DefaultRelayMaxFrame))
		b.wantClose(websocket.CloseGoingAway, "peer connection lost")
		if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", "frame_too_large"); got != 1 {
			t.Errorf("relay_streams_total{frame_too_large} %v, want 1", got)
		}

		// A text frame after relay_ready is a protocol error.
		a, b = connect(t, alice, bob)
		b.sendRaw(`{"type":"list_peers"}`)
		b.wantClose(websocket.CloseUnsupportedData, "only binary frames after relay_ready")
		a.wantClose(websocket.CloseGoingAway, "peer connection lost")
		if got := labeled(t, s, "parlance_bootstrap_relay_streams_total", "outcome", "protocol_error"); got != 1 {
			t.Errorf("relay_streams_total{protocol_error} %v, want 1", got)
		}
	})
}

package rendezvous

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/parlance-chat/parlance/protocol"
)

// Relayed streams between peers on different servers of a cluster
// (xrelay.go), on the cluster harness: real time, in-process NATS,
// bootstrap servers on in-memory pipes (which buffer nothing, so a
// client that does not read stalls the server's writes at once).

// xpeer is a client registered with one server of a test cluster, with
// the relay capability and without push (so that what it reads is the
// relay's).
type xpeer struct {
	*client
	reg *protocol.Registered
	cs  *clusterServer
	ip  string
}

func xrelayUp(t *testing.T, cs *clusterServer, ip, nick string) *xpeer {
	t.Helper()
	c := cs.dial(t, ip)
	r := c.register(nick, 4000, protocol.CapRelay)
	if !protocol.HasCap(r.Caps, protocol.CapRelay) {
		t.Fatalf("%s registered %+v: want the relay cap", nick, r)
	}
	return &xpeer{client: c, reg: r, cs: cs, ip: ip}
}

// open dials a fresh WebSocket to p's server and sends first on it.
func (p *xpeer) open(first protocol.ClientMessage) *client {
	p.t.Helper()
	c := p.cs.dial(p.t, p.ip)
	c.send(first)
	return c
}

// xconnect opens a relayed stream from p to q, on their own servers, and
// returns both ends once both have relay_ready.
func xconnect(t *testing.T, p, q *xpeer) (a, b *client) {
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

// relayPair starts two servers with cfg (unlimited relay rates unless
// cfg says otherwise), each with a peer (alice on a, bob on b) that both
// list.
func relayPair(t *testing.T, cfg Config, na, nb nats.InProcessConnProvider) (a, b *clusterServer, alice, bob *xpeer) {
	t.Helper()
	if cfg.RelayPeerRate == 0 {
		cfg.RelayPeerRate = -1
	}
	if cfg.RelayTotalRate == 0 {
		cfg.RelayTotalRate = -1
	}
	a = startClusterServerWith(t, "a", 1, cfg, nats.InProcessServer(na))
	b = startClusterServerWith(t, "b", 2, cfg, nats.InProcessServer(nb))
	waitMeshed(t, a, b)
	alice = xrelayUp(t, a, "192.0.2.1", "alice")
	bob = xrelayUp(t, b, "198.51.100.2", "bob")
	waitListed(t, []string{"alice", "bob"}, a, b)
	return a, b, alice, bob
}

// randomBytes returns n bytes from seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sendAsync writes data in frames of at most protocol.MaxRelayFrameSize
// and then, if closeAfter, a normal close; sent counts what was written.
func sendAsync(c *client, data []byte, closeAfter bool, sent *atomic.Int64) <-chan error {
	done := make(chan error, 1)
	go func() {
		for rest := data; len(rest) > 0; {
			k := min(len(rest), protocol.MaxRelayFrameSize)
			if err := c.ws.WriteMessage(websocket.BinaryMessage, rest[:k]); err != nil {
				done <- err
				return
			}
			rest = rest[k:]
			if sent != nil {
				sent.Add(int64(k))
			}
		}
		if closeAfter {
			done <- c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
			return
		}
		done <- nil
	}()
	return done
}

// expectData reads binary frames until want has arrived, and checks it.
func expectData(t *testing.T, c *client, want []byte) {
	t.Helper()
	var got []byte
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(got) < len(want) {
		typ, b, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", len(got), len(want), err)
		}
		if typ != websocket.BinaryMessage {
			t.Fatalf("got a frame of type %d: %s", typ, b)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(want))
	}
}

// xhalf returns the cross-server half of cs's only stream, nil when none.
func (cs *clusterServer) xhalf() *xstream {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, st := range cs.relayStreams {
		return st.x
	}
	return nil
}

func TestClusterRelayCarriesBytesBothWays(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	a, b, alice, bob := relayPair(t, Config{}, p, p)
	ra, rb := xconnect(t, alice, bob)
	for _, s := range []*clusterServer{a, b} {
		if got := labeled(t, s.Server, "parlance_bootstrap_relay_streams", "state", "open"); got != 1 {
			t.Errorf("%s: relay_streams{open} %v, want 1", s.name, got)
		}
	}

	// Many windows (256 KiB) each way, then both ways at once.
	start := time.Now()
	big := 3<<20 + 12345
	transfer(t, ra, rb, big, 1)
	transfer(t, rb, ra, 1<<20+7, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		transfer(t, ra, rb, 512<<10, 3)
	}()
	transfer(t, rb, ra, 512<<10, 4)
	<-done
	t.Logf("%.1f MiB relayed between the servers in %v", float64(big+1<<20+7+1<<20)/(1<<20), time.Since(start))
	// Each server counts what it wrote to its own side (just after the
	// write returns: wait for it).
	for _, m := range []struct {
		s           *clusterServer
		name, label string
		want        float64
	}{
		{b, "parlance_bootstrap_relay_bytes_total", "", float64(big + 512<<10)},
		{a, "parlance_bootstrap_relay_bytes_total", "", float64(1<<20 + 7 + 512<<10)},
		{a, "parlance_bootstrap_cluster_relay_bytes_total", "out", float64(big + 512<<10)},
		{b, "parlance_bootstrap_cluster_relay_bytes_total", "in", float64(big + 512<<10)},
		{b, "parlance_bootstrap_cluster_relay_buffered_bytes", "", 0},
	} {
		got := func() float64 {
			if m.label != "" {
				return labeled(t, m.s.Server, m.name, "dir", m.label)
			}
			return counter(t, m.s.Server, m.name)
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("%s: %s{%s} to be %v", m.s.name, m.name, m.label, m.want), func() bool { return got() == m.want })
	}
	// The control connections stay usable meanwhile.
	if n := len(alice.list()); n != 2 {
		t.Errorf("a lists %d peers, want 2", n)
	}
}

// A reader that does not read holds its server to one window, the
// sender's server to nothing, and the sender to waiting; once it reads,
// everything arrives.
func TestClusterRelaySlowReaderHoldsOneWindow(t *testing.T) {
	const window = 128 << 10
	p := &natsProvider{}
	p.start(t)
	a, b, alice, bob := relayPair(t, Config{RelayWindow: window}, p, p)
	ra, rb := xconnect(t, alice, bob)
	data := randomBytes(4<<20, 5)
	var sent atomic.Int64
	done := sendAsync(ra, data, false, &sent)

	// Wait until a has sent all its credit allows, waits for more, and b
	// has it all.
	xa, xb := a.xhalf(), b.xhalf()
	waitFor(t, 10*time.Second, "a to run out of credit", func() bool {
		if counter(t, a.Server, "parlance_bootstrap_cluster_relay_credit_waits_total") == 0 {
			return false
		}
		xa.mu.Lock()
		aSent, aLimit := xa.sent, xa.limit
		xa.mu.Unlock()
		xb.mu.Lock()
		bRecvd := xb.recvd
		xb.mu.Unlock()
		return aLimit-aSent < protocol.MaxRelayFrameSize && bRecvd == aSent
	})
	xb.mu.Lock()
	held := xb.recvd - xb.written
	xb.mu.Unlock()
	if held > window {
		t.Errorf("b holds %d bytes for the stream, over its window of %d", held, window)
	}
	if got := counter(t, b.Server, "parlance_bootstrap_cluster_relay_buffered_bytes"); got > window {
		t.Errorf("b: cluster_relay_buffered_bytes %v, over the window of %d", got, window)
	}
	if got := counter(t, a.Server, "parlance_bootstrap_cluster_relay_buffered_bytes"); got != 0 {
		t.Errorf("a: cluster_relay_buffered_bytes %v, want 0", got)
	}
	// The sender got as far as the window, what b writes to bob's
	// connection (a frame), what a's pump holds and one more frame in
	// flight: nowhere near the 4 MiB.
	if got, limit := sent.Load(), int64(window+3*protocol.MaxRelayFrameSize); got > limit {
		t.Errorf("alice could write %d bytes to a reader that reads nothing, want at most %d", got, limit)
	}
	t.Logf("stalled: alice wrote %d bytes, b holds %d", sent.Load(), held)

	expectData(t, rb, data)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := counter(t, a.Server, "parlance_bootstrap_cluster_relay_credit_wait_seconds_total"); got <= 0 {
		t.Errorf("a: cluster_relay_credit_wait_seconds_total %v, want > 0", got)
	}
}

// Closing either end closes the other, with the reason a local stream
// gives, after the bytes sent before the close.
func TestClusterRelayCloseEitherSide(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	a, b, alice, bob := relayPair(t, Config{}, p, p)
	outcomes := func(outcome string, want float64) {
		t.Helper()
		for _, s := range []*clusterServer{a, b} {
			waitFor(t, 5*time.Second, s.name+" to count "+outcome, func() bool {
				return labeled(t, s.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcome) == want
			})
			if got := labeled(t, s.Server, "parlance_bootstrap_relay_streams", "state", "open"); got != 0 {
				t.Errorf("%s: relay_streams{open} %v after the end, want 0", s.name, got)
			}
		}
	}
	t.Run("the opener closes after sending", func(t *testing.T) {
		ra, rb := xconnect(t, alice, bob)
		data := randomBytes(1<<20, 6) // four windows: still on the way when the close is sent
		done := sendAsync(ra, data, true, nil)
		expectData(t, rb, data)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		rb.wantClose(websocket.CloseNormalClosure, "peer closed")
		ra.recvClose()
		outcomes(outcomeClosed, 1)
	})
	t.Run("the target closes", func(t *testing.T) {
		ra, rb := xconnect(t, alice, bob)
		rb.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ra.wantClose(websocket.CloseNormalClosure, "peer closed")
		rb.recvClose()
		outcomes(outcomeClosed, 2)
	})
	t.Run("the opener's connection is lost", func(t *testing.T) {
		ra, rb := xconnect(t, alice, bob)
		ra.ws.NetConn().Close()
		rb.wantClose(websocket.CloseGoingAway, "peer connection lost")
		outcomes(outcomeClosed, 3)
	})
	t.Run("the target's registration ends", func(t *testing.T) {
		ra, rb := xconnect(t, alice, bob)
		bob.send(&protocol.Unregister{})
		ra.wantClose(websocket.CloseGoingAway, "peer registration ended")
		rb.wantClose(websocket.CloseGoingAway, "peer registration ended")
		outcomes(outcomePeerLeft, 1)
	})
}

// The target's server dies (it loses NATS, so it says nothing more):
// the opener's server ends the stream once it takes that server for
// dead, and the dead server ends its own half at once.
func TestClusterRelayEndsWhenTargetServerDies(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	va, vb := &severable{p: p}, &severable{p: p}
	a, b, alice, bob := relayPair(t, Config{}, va, vb)
	ra, rb := xconnect(t, alice, bob)
	transfer(t, ra, rb, 100<<10, 7)
	killed := time.Now()
	vb.sever()
	rb.wantClose(websocket.CloseGoingAway, "peer connection lost")
	if got := labeled(t, b.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeNATSDown); got != 1 {
		t.Errorf("b: relay_streams_total{nats_down} %v, want 1", got)
	}
	ra.wantClose(websocket.CloseGoingAway, "peer connection lost")
	if d := time.Since(killed); d > deadBound {
		t.Errorf("a ended the stream %v after b died, want within %v", d, deadBound)
	} else {
		t.Logf("a ended the stream %v after b died", d)
	}
	if got := labeled(t, a.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeServerLost); got != 1 {
		t.Errorf("a: relay_streams_total{server_lost} %v, want 1", got)
	}
	if got := counter(t, a.Server, "parlance_bootstrap_relay_streams"); got != 0 {
		t.Errorf("a: relay_streams %v, want 0", got)
	}

}

// A server cut off from NATS still lists the other servers' peers for a
// while, but refuses streams to them, saying why.
func TestClusterRelayRefusedWhileCutOff(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	va := &severable{p: p}
	a, _, alice, bob := relayPair(t, Config{}, va, p)
	va.sever()
	waitFor(t, 5*time.Second, "a to notice it lost NATS", func() bool { return !a.connected() })
	alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID}).wantRefused(ErrTextRelayServerUnreachable)
	if got := labeled(t, a.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeUnreachable); got != 1 {
		t.Errorf("a: relay_streams_total{server_unreachable} %v, want 1", got)
	}
}

// Refusals and timeouts that the target's server decides reach the
// opener as they would on one server.
func TestClusterRelayRefusalsAcrossServers(t *testing.T) {
	p := &natsProvider{}
	p.start(t)
	const acceptTimeout = 300 * time.Millisecond
	a, b, alice, bob := relayPair(t, Config{RelayStreamsPerPeer: 1, RelayAcceptTimeout: acceptTimeout}, p, p)
	carol := xrelayUp(t, a, "203.0.113.3", "carol")
	dave := b.dial(t, "203.0.113.4")
	rd := dave.register("dave", 4000) // no relay
	waitListed(t, []string{"alice", "bob", "carol", "dave"}, a, b)

	carol.open(&protocol.RelayConnect{Token: carol.reg.RelayToken, PeerID: rd.PeerID}).wantRefused(ErrTextRelayNoCap)

	// alice's stream to bob waits for bob, who has no room for carol's.
	pending := alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
	in := bob.recv().(*protocol.RelayIncoming)
	carol.open(&protocol.RelayConnect{Token: carol.reg.RelayToken, PeerID: bob.reg.PeerID}).wantRefused("Peer has too many relayed streams (limit 1)")
	if got := labeled(t, a.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeStreamLimit); got != 1 {
		t.Errorf("a: relay_streams_total{stream_limit} %v, want 1", got)
	}

	// bob never accepts.
	pending.wantError("Peer did not accept the relayed stream within 300ms")
	pending.wantClose(websocket.ClosePolicyViolation, "relay refused")
	for _, s := range []*clusterServer{a, b} {
		waitFor(t, 5*time.Second, s.name+" to count the accept timeout", func() bool {
			return labeled(t, s.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeAcceptTimeout) == 1
		})
	}
	bob.open(&protocol.RelayAccept{Token: bob.reg.RelayToken, Stream: in.Stream}).wantRefused(ErrTextRelayUnknownStream)

	// The opener gives up before the target accepts: the target's
	// server forgets the stream too.
	gone := alice.open(&protocol.RelayConnect{Token: alice.reg.RelayToken, PeerID: bob.reg.PeerID})
	in = bob.recv().(*protocol.RelayIncoming)
	gone.ws.Close()
	waitFor(t, 5*time.Second, "b to forget the cancelled stream", func() bool {
		return labeled(t, b.Server, "parlance_bootstrap_relay_streams_total", "outcome", outcomeCancelled) == 1
	})
	bob.open(&protocol.RelayAccept{Token: bob.reg.RelayToken, Stream: in.Stream}).wantRefused(ErrTextRelayUnknownStream)
}

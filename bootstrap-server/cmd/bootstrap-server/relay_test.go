package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// TestRealProcessRelay relays bytes through the binary on loopback, with
// relay limits set by flag and by environment.
func TestRealProcessRelay(t *testing.T) {
	netns.Require(t)
	_, addr := startServer(t, buildServer(t), []string{"PARLANCE_BOOTSTRAP_RELAY_ACCEPT_TIMEOUT=1s"}, "--relay-streams-per-peer", "1")
	dial := func() *websocket.Conn {
		t.Helper()
		ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws://"+addr+"/some/prefix", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	register := func(nick string) (*websocket.Conn, *protocol.Registered) {
		t.Helper()
		ws := dial()
		send(t, ws, &protocol.Register{Nickname: nick, LocalAddr: "0.0.0.0:1", Caps: []string{protocol.CapRelay}})
		r, ok := recv(t, ws).(*protocol.Registered)
		if !ok || r.RelayToken == "" {
			t.Fatalf("registered: %+v, want a relay token", r)
		}
		return ws, r
	}
	_, ra := register("alice")
	bobCtl, rb := register("bob")

	a := dial()
	send(t, a, &protocol.RelayConnect{Token: ra.RelayToken, PeerID: rb.PeerID})
	in, ok := recv(t, bobCtl).(*protocol.RelayIncoming)
	if !ok || in.PeerID != ra.PeerID {
		t.Fatalf("relay_incoming: %+v", in)
	}
	b := dial()
	send(t, b, &protocol.RelayAccept{Token: rb.RelayToken, Stream: in.Stream})
	for _, ws := range []*websocket.Conn{a, b} {
		if r, ok := recv(t, ws).(*protocol.RelayReady); !ok || r.Stream != in.Stream {
			t.Fatalf("relay_ready: %+v", r)
		}
	}
	payload := bytes.Repeat([]byte{0, 1, 2, 0xff}, protocol.MaxRelayFrameSize/4)
	if err := a.WriteMessage(websocket.BinaryMessage, payload); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, got, err := b.ReadMessage(); err != nil || typ != websocket.BinaryMessage || !bytes.Equal(got, payload) {
		t.Fatalf("bob read type %d, %d bytes, %v", typ, len(got), err)
	}

	// --relay-streams-per-peer 1: alice has her one stream.
	a2 := dial()
	send(t, a2, &protocol.RelayConnect{Token: ra.RelayToken, PeerID: rb.PeerID})
	if e, ok := recv(t, a2).(*protocol.Error); !ok || e.Message != "Too many relayed streams (limit 1)" {
		t.Fatalf("second stream: %+v", e)
	}

	// Closing alice's end closes bob's, with 1000: then the accept
	// timeout from the environment (1 s) refuses a stream bob ignores.
	a.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	if err := readClose(b); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("bob's end after alice closed: %v, want close 1000", err)
	}
	a3 := dial()
	send(t, a3, &protocol.RelayConnect{Token: ra.RelayToken, PeerID: rb.PeerID})
	recv(t, bobCtl) // relay_incoming, left unanswered
	start := time.Now()
	if e, ok := recv(t, a3).(*protocol.Error); !ok || e.Message != "Peer did not accept the relayed stream within 1s" {
		t.Fatalf("unanswered stream: %+v", e)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("refused after %v, want about 1 s", d)
	}
}

package rendezvous

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// On a real TCP socket an idle connection waits outside gorilla's reader
// (see wait): messages that arrive together, split anywhere, or as
// fragments must all be read, none left in a buffer while the socket is
// quiet.
func TestWaitOnRealSocket(t *testing.T) {
	netns.Require(t)
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(t.Context(), ln)
	t.Cleanup(func() { s.Close() })

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Several frames written in one go, by hand: register, list_peers,
	// a ping, and list_peers in two fragments.
	frame := func(op byte, fin bool, payload string) []byte {
		b0 := op
		if fin {
			b0 |= 0x80
		}
		mask := [4]byte{1, 2, 3, 4}
		b := []byte{b0}
		switch n := len(payload); {
		case n < 126:
			b = append(b, 0x80|byte(n))
		default:
			b = append(b, 0x80|126, byte(n>>8), byte(n))
		}
		b = append(b, mask[:]...)
		for i := range len(payload) {
			b = append(b, payload[i]^mask[i%4])
		}
		return b
	}
	reg, _ := protocol.EncodeClientMessage(&protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000", Instance: string(bytes.Repeat([]byte("i"), 64))})
	list, _ := protocol.EncodeClientMessage(&protocol.ListPeers{})
	var all []byte
	all = append(all, frame(websocket.TextMessage, true, string(reg))...)
	all = append(all, frame(websocket.TextMessage, true, string(list))...)
	all = append(all, frame(websocket.PingMessage, true, "p")...)
	all = append(all, frame(websocket.TextMessage, false, string(list[:5]))...)
	all = append(all, frame(0, true, string(list[5:]))...)
	nc := ws.NetConn()
	recv := func() protocol.ServerMessage {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, err := protocol.DecodeServerMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, split := range [][]int{{len(all)}, {1, 7, 30, len(all)}} {
		prev := 0
		for _, at := range split {
			if _, err := nc.Write(all[prev:at]); err != nil {
				t.Fatal(err)
			}
			prev = at
			time.Sleep(20 * time.Millisecond)
		}
		if _, ok := recv().(*protocol.Registered); !ok {
			t.Fatal("no registered")
		}
		for range 2 {
			if l, ok := recv().(*protocol.PeerList); !ok || len(l.Peers) != 1 {
				t.Fatalf("peer_list: %+v", l)
			}
		}
	}
	// The connection still serves after being idle.
	time.Sleep(100 * time.Millisecond)
	if err := ws.WriteMessage(websocket.TextMessage, list); err != nil {
		t.Fatal(err)
	}
	if _, ok := recv().(*protocol.PeerList); !ok {
		t.Fatal("no peer_list after idling")
	}
}

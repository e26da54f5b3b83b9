package rendezvous

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// A client closed for what it sent must still read why, even when more of
// its input is in flight: closing a socket with unread input makes the
// kernel send a reset, which destroys the error and the close frame on
// their way (RFC 7230 section 6.6). Real TCP on loopback: the in-memory
// pipes of the other tests have no resets.
func TestClosedClientReadsWhyDespiteUnreadInput(t *testing.T) {
	netns.Require(t)
	for _, tc := range []struct {
		name  string
		cfg   Config
		flood func(ws *websocket.Conn)
		text  string
		code  int
	}{
		{"rate limit", Config{MsgRatePerIP: 1, MsgBurstPerIP: 300}, func(ws *websocket.Conn) {
			// Answers that fill the socket buffers before the limit hits.
			reg, _ := protocol.EncodeClientMessage(&protocol.Register{Nickname: strings.Repeat("n", 32), LocalAddr: "0.0.0.0:1"})
			ws.WriteMessage(websocket.TextMessage, reg)
			b, _ := protocol.EncodeClientMessage(&protocol.ListPeers{})
			for range 3000 {
				if ws.WriteMessage(websocket.TextMessage, b) != nil {
					return
				}
			}
		}, ErrTextRateLimited, websocket.ClosePolicyViolation},
		{"frame too large", Config{MaxFrame: 1024}, func(ws *websocket.Conn) {
			ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"list_peers","pad":"`+strings.Repeat("x", 4<<20)+`"}`))
		}, protocol.ErrTextInvalidPrefix + "frame exceeds the limit of 1024 bytes", websocket.CloseMessageTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(tc.cfg)
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
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			tc.flood(ws) // without reading: the answers queue up meanwhile
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got []string
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					if !websocket.IsCloseError(err, tc.code) {
						t.Fatalf("connection ended with %v, want close %d", err, tc.code)
					}
					break
				}
				if m, _ := protocol.DecodeServerMessage(b); m != nil {
					if e, ok := m.(*protocol.Error); ok {
						got = append(got, e.Message)
					}
				}
			}
			if len(got) == 0 || got[len(got)-1] != tc.text {
				t.Fatalf("errors %q, want %q last", got, tc.text)
			}
		})
	}
}

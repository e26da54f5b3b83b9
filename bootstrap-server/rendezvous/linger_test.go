package rendezvous

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
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
	bothWaits(t, testClosedClientReadsWhyDespiteUnreadInput)
}

func testClosedClientReadsWhyDespiteUnreadInput(t *testing.T, mode waitMode) {
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
			s, err := NewServer(withWait(tc.cfg, mode))
			if err != nil {
				t.Fatal(err)
			}
			ws := dialWS(t, serveLoopback(t, s))
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

// readUntilClose reads as a well-behaved client does, without closing
// its socket afterwards: gorilla answers the server's close frame by
// itself while reading. It returns the error that ended the reading.
func (c *client) readUntilClose() error {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// connCount is the number of connections the server still holds.
func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// RFC 6455 section 7.1.1: once the server has sent and received a close
// frame it closes the TCP connection. A client that answers the close
// frame (as gorilla does when it reads) but keeps its socket open must
// not hold the shutdown for the lingering close's 2 s, nor for
// ShutdownGrace: Close returns within a round trip.
func TestShutdownEndsOnClientsCloseFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{ShutdownGrace: 10 * time.Second})
		var reads []chan error
		for i := range 3 {
			c := dial(t, sim, fmt.Sprintf("192.0.2.%d", 10+i))
			c.register(fmt.Sprint("n", i), 1)
			read := make(chan error, 1)
			go func() { read <- c.readUntilClose() }()
			reads = append(reads, read)
		}
		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= 100*time.Millisecond {
			t.Errorf("Close took %v with clients that answer the close frame, want a round trip", d)
		}
		for _, read := range reads {
			if err := <-read; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Fatalf("client read %v, want close 1001", err)
			}
		}
		if n := s.connCount(); n != 0 {
			t.Fatalf("%d connections left", n)
		}
	})
}

// A client cut off for what it sent still gets the error and the close
// frame, and once it answers the close frame the server forgets the
// connection at once, not after the 2 s linger.
func TestCutOffClientLearnsWhyAndEndsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		send func(c *client)
		text string
		code int
	}{
		{"rate limit", Config{MsgRatePerIP: 1, MsgBurstPerIP: 3}, func(c *client) {
			for range 4 {
				c.send(&protocol.ListPeers{})
			}
			// Read the three answers the burst allows.
			for range 3 {
				if _, ok := c.recv().(*protocol.PeerList); !ok {
					c.t.Fatal("want peer_list")
				}
			}
		}, ErrTextRateLimited, websocket.ClosePolicyViolation},
		{"frame too large", Config{MaxFrame: 1024}, func(c *client) {
			c.sendRaw(`{"type":"list_peers","pad":"` + strings.Repeat("x", 100_000) + `"}`)
		}, protocol.ErrTextInvalidPrefix + "frame exceeds the limit of 1024 bytes", websocket.CloseMessageTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, sim := testServer(t, tc.cfg)
				c := dial(t, sim, "192.0.2.10")
				tc.send(c)
				// More after the cause: discarded, never answered.
				c.send(&protocol.ListPeers{})
				c.wantError(tc.text)
				if err := c.readUntilClose(); !websocket.IsCloseError(err, tc.code) {
					t.Fatalf("after the error: %v, want close %d", err, tc.code)
				}
				// The server holds nothing more of the connection: its
				// shutdown has nothing to wait for.
				start := time.Now()
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d >= 100*time.Millisecond {
					t.Errorf("Close took %v after the client answered the close frame, want a round trip", d)
				}
			})
		})
	}
}

// A client that never answers the close frame is cut off after
// lingerTimeout (and one that keeps sending, after lingerBytes).
func TestLingerBounds(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, sim := testServer(t, Config{MaxConnsPerIP: 1, ShutdownGrace: 10 * time.Second})
			a := dial(t, sim, "192.0.2.10")
			go a.readUntilClose() // answers the shutdown's close frame
			start := time.Now()
			c := dial(t, sim, "192.0.2.10") // refused: closed by the server
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < lingerTimeout || d > lingerTimeout+100*time.Millisecond {
				t.Errorf("silent client cut off after %v, want the linger timeout %v", d, lingerTimeout)
			}
			c.wantError(ErrTextTooManyConns + " (limit 1)")
		})
	})
	t.Run("talkative", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s, sim := testServer(t, Config{MaxConnsPerIP: 1, MsgRatePerIP: -1})
			dial(t, sim, "192.0.2.10")
			c := dial(t, sim, "192.0.2.10")
			start := time.Now()
			msg := []byte(strings.Repeat("x", 32<<10))
			var err error
			sent := 0
			for err == nil && sent < 4*lingerBytes {
				c.ws.SetWriteDeadline(time.Now().Add(time.Second))
				err = c.ws.WriteMessage(websocket.TextMessage, msg)
				sent += len(msg)
			}
			if err == nil {
				t.Fatalf("server still read after %d bytes past its close frame", sent)
			}
			if d := time.Since(start); d >= lingerTimeout {
				t.Errorf("talkative client cut off after %v, want before the linger timeout", d)
			}
			for s.connCount() != 1 {
				time.Sleep(time.Millisecond)
			}
		})
	})
}

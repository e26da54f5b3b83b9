package rendezvous

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
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
func TestWaitOnRealSocket(t *testing.T) { bothWaits(t, testWaitOnRealSocket) }

func testWaitOnRealSocket(t *testing.T, mode waitMode) {
	netns.Require(t)
	s, err := NewServer(withWait(Config{}, mode))
	if err != nil {
		t.Fatal(err)
	}
	ws := dialWS(t, serveLoopback(t, s))
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

// serveLoopback serves s on a loopback port until the test ends and
// returns its URL.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(t.Context(), ln)
	t.Cleanup(func() { s.Close() })
	return "ws://" + ln.Addr().String() + "/"
}

// dialWS opens a WebSocket to url for the rest of the test.
func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// registerAlice registers ws as alice and reads the answer.
func registerAlice(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	reg, _ := protocol.EncodeClientMessage(&protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000"})
	if err := ws.WriteMessage(websocket.TextMessage, reg); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
}

// maskedText is a client's text frame, written by hand.
func maskedText(payload string) []byte {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b := []byte{0x81, 0x80 | byte(len(payload))}
	if len(payload) >= 126 {
		b = []byte{0x81, 0x80 | 126, byte(len(payload) >> 8), byte(len(payload))}
	}
	b = append(b, mask[:]...)
	for i := range len(payload) {
		b = append(b, payload[i]^mask[i%4])
	}
	return b
}

// On a real socket the waiting goroutine handles heartbeats itself
// (onReadable): they refresh the registration and keep the connection
// open past ReadTimeout, the connection still ends ReadTimeout after the
// last one (at the sweep after that), and a heartbeat before any
// register still gets its error.
func TestHeartbeatsOnRealSocket(t *testing.T) { bothWaits(t, testHeartbeatsOnRealSocket) }

func testHeartbeatsOnRealSocket(t *testing.T, mode waitMode) {
	netns.Require(t)
	const readTimeout = 2 * time.Second
	s, err := NewServer(withWait(Config{ReadTimeout: readTimeout, PingInterval: time.Second, Sweep: 100 * time.Millisecond}, mode))
	if err != nil {
		t.Fatal(err)
	}
	url := serveLoopback(t, s)
	recv := func(ws *websocket.Conn) protocol.ServerMessage {
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

	t.Run("a heartbeat before register is refused", func(t *testing.T) {
		ws := dialWS(t, url)
		if _, err := ws.NetConn().Write(maskedText(heartbeatJSON)); err != nil {
			t.Fatal(err)
		}
		if e, ok := recv(ws).(*protocol.Error); !ok || e.Message != protocol.ErrTextNotRegistered {
			t.Fatalf("got %#v, want %q", e, protocol.ErrTextNotRegistered)
		}
	})

	t.Run("heartbeats keep a registration and its connection", func(t *testing.T) {
		ws := dialWS(t, url)
		reg, _ := protocol.EncodeClientMessage(&protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:4000"})
		if err := ws.WriteMessage(websocket.TextMessage, reg); err != nil {
			t.Fatal(err)
		}
		if _, ok := recv(ws).(*protocol.Registered); !ok {
			t.Fatal("no registered")
		}
		// Heartbeats for longer than ReadTimeout, alone and two in one
		// write; nothing else is sent or read meanwhile.
		hb := maskedText(heartbeatJSON)
		start := time.Now()
		for time.Since(start) < readTimeout+time.Second {
			if _, err := ws.NetConn().Write(append(hb, hb...)); err != nil {
				t.Fatalf("connection closed after %v of heartbeats: %v", time.Since(start), err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		last := time.Now().Unix()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(listPeersJSON)); err != nil {
			t.Fatal(err)
		}
		l, ok := recv(ws).(*protocol.PeerList)
		if !ok || len(l.Peers) != 1 || l.Peers[0].LastSeen < last-1 {
			t.Fatalf("peer_list %+v, want alice seen at about %d", l, last)
		}
		if got := testutilCount(t, s, "heartbeat"); got < 2*int((readTimeout+time.Second)/(250*time.Millisecond)) {
			t.Errorf("%v heartbeats counted", got)
		}
		// Silence: the connection ends ReadTimeout after the last read.
		// The pings it gets go unanswered.
		ws.SetPingHandler(func(string) error { return nil })
		quiet := time.Now()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		if d := time.Since(quiet); d < readTimeout-100*time.Millisecond || d > readTimeout+2*time.Second {
			t.Fatalf("connection ended %v after the last message, want about %v", d, readTimeout)
		}
	})

	t.Run("a frame cut off in the middle ends at the read timeout", func(t *testing.T) {
		ws := dialWS(t, url)
		ws.SetPingHandler(func(string) error { return nil })
		// A pooled reader waits for the rest of this frame.
		if _, err := ws.NetConn().Write(maskedText(listPeersJSON)[:10]); err != nil {
			t.Fatal(err)
		}
		quiet := time.Now()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil {
			t.Fatal("got a message, want the connection closed")
		}
		if d := time.Since(quiet); d < readTimeout-100*time.Millisecond || d > readTimeout+2*time.Second {
			t.Fatalf("connection ended %v after the cut-off frame, want about %v", d, readTimeout)
		}
	})
}

// testutilCount reads messages_received_total{type=typ}.
func testutilCount(t *testing.T, s *Server, typ string) int {
	t.Helper()
	mfs, err := s.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parlance_bootstrap_messages_received_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// The waiting goroutine reads up to waitReadSize bytes at once
// (onReadable): whatever it read beyond heartbeats, or instead of them,
// must reach gorilla first, a message longer than one read must be read
// on, and after a read that emptied the socket it waits without reading
// again. Every way heartbeats and the next frames can share or split
// reads must leave nothing unanswered.
func TestReadAheadOnRealSocket(t *testing.T) { bothWaits(t, testReadAheadOnRealSocket) }

func testReadAheadOnRealSocket(t *testing.T, mode waitMode) {
	netns.Require(t)
	s, err := NewServer(withWait(Config{}, mode))
	if err != nil {
		t.Fatal(err)
	}
	ws := dialWS(t, serveLoopback(t, s))
	nc := ws.NetConn()
	registerAlice(t, ws)
	hb, list := maskedText(heartbeatJSON), maskedText(listPeersJSON)
	bad := maskedText("{}") // answered with an error; 8 bytes
	// Answered with an error too, and longer than the waiting
	// goroutine's read (waitReadSize).
	long := maskedText(`{"pad":"` + strings.Repeat("x", 2*waitReadSize) + `"}`)
	hbs := func(n int) []byte { return bytes.Repeat(hb, n) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name   string
		writes [][]byte // written one after the other, without waiting
		wait   bool     // pause after each write, so the server likely reads it alone (coverage only: the outcome must not depend on it)
	}{
		{"a heartbeat and list_peers in one write", [][]byte{cat(hb, list)}, false},
		{"heartbeats and list_peers in one write", [][]byte{cat(hbs(5), list)}, false},
		{"a lone heartbeat, then list_peers", [][]byte{hb, list}, true},
		{"a heartbeat and one byte, then the rest", [][]byte{cat(hb, list[:1]), list[1:]}, true},
		{"a heartbeat in two parts, then list_peers", [][]byte{hb[:10], cat(hb[10:], list)}, true},
		{"a heartbeat split after its header, then list_peers", [][]byte{hb[:6], hb[6:], list}, true},
		{"list_peers, then a heartbeat, in one write", [][]byte{cat(list, hb, list)}, false},
		{"back to back without waiting", [][]byte{hb, list, hb, hb, list[:3], list[3:]}, false},
		{"a short message and what follows it in one read", [][]byte{cat(bad, hb, list)}, false},
		{"short messages, then a heartbeat and list_peers", [][]byte{cat(bad, bad, bad, hb), list}, true},
		{"a message longer than one read, and more, in one write", [][]byte{cat(hb, long, list, hb)}, false},
		{"a message longer than one read, in parts", [][]byte{long[:100], long[100 : waitReadSize+50], long[waitReadSize+50:], list}, true},
		{"a message longer than one read, split after one read", [][]byte{cat(hb, long[:waitReadSize-heartbeatFrameLen]), long[waitReadSize-heartbeatFrameLen:]}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutilCount(t, s, "heartbeat")
			for _, w := range tc.writes {
				if _, err := nc.Write(w); err != nil {
					t.Fatal(err)
				}
				if tc.wait {
					time.Sleep(20 * time.Millisecond)
				}
			}
			all := bytes.Join(tc.writes, nil)
			wantHB := bytes.Count(all, hb)
			for lists, errs := bytes.Count(all, list), bytes.Count(all, bad)+bytes.Count(all, long); lists+errs > 0; {
				ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, b, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("waiting for %d peer_list and %d error: %v", lists, errs, err)
				}
				m, err := protocol.DecodeServerMessage(b)
				if err != nil {
					t.Fatal(err)
				}
				if l, ok := m.(*protocol.PeerList); ok && len(l.Peers) == 1 && lists > 0 {
					lists--
				} else if _, ok := m.(*protocol.Error); ok && errs > 0 {
					errs--
				} else {
					t.Fatalf("got %s, want %d more peer_list of alice and %d more error", b, lists, errs)
				}
			}
			// The peer_list answers come after every heartbeat before
			// them; the last list may precede later heartbeats, so ask
			// once more.
			if _, err := nc.Write(list); err != nil {
				t.Fatal(err)
			}
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := ws.ReadMessage(); err != nil {
				t.Fatal(err)
			}
			if got := testutilCount(t, s, "heartbeat") - before; got != wantHB {
				t.Errorf("%d heartbeats counted, want %d", got, wantHB)
			}
		})
	}
}

// A message that arrives in one piece costs the waiting goroutine one
// read(2) (onReadable): no read beyond it that finds the socket empty,
// and no second read by gorilla for the rest of the frame.
func TestOneReadPerMessage(t *testing.T) { bothWaits(t, testOneReadPerMessage) }

func testOneReadPerMessage(t *testing.T, mode waitMode) {
	netns.Require(t)
	// Over 100 messages, faster than 50 a second: no rate limit.
	s, err := NewServer(withWait(Config{MsgRatePerIP: -1}, mode))
	if err != nil {
		t.Fatal(err)
	}
	reads := new(atomic.Int64)
	s.waitReads = reads
	ws := dialWS(t, serveLoopback(t, s))
	nc := ws.NetConn()
	registerAlice(t, ws)
	// Each request waits for its answer, and each heartbeat until it is
	// counted, so the server has always read all there was before the
	// next one is written.
	const n = 50
	before := reads.Load()
	for i := range n {
		if _, err := nc.Write(maskedText(listPeersJSON)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := reads.Load() - before; got != n {
		t.Errorf("%d reads for %d list_peers requests, want one each", got, n)
	}
	before = reads.Load()
	hbs := testutilCount(t, s, "heartbeat")
	for i := range n {
		if _, err := nc.Write(maskedText(heartbeatJSON)); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); testutilCount(t, s, "heartbeat") < hbs+i+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("heartbeat %d not counted", i)
			}
		}
	}
	if got := reads.Load() - before; got != n {
		t.Errorf("%d reads for %d heartbeats, want one each", got, n)
	}
}

// A reader may close its own connection while the waiting goroutine is
// inside raw.Read for it (closeNet): here the answer to list_peers is
// over MaxQueueBytes, so the reader drops the connection as a slow
// reader. The socket must close (Close waits for raw.Read to return, so
// the reader must not wait for it), and the server with it.
func TestReaderClosesItsOwnConnection(t *testing.T) { bothWaits(t, testReaderClosesItsOwnConnection) }

func testReaderClosesItsOwnConnection(t *testing.T, mode waitMode) {
	netns.Require(t)
	s, err := NewServer(withWait(Config{MaxQueueBytes: 8}, mode))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), ln) }()

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, err := ws.NetConn().Write(maskedText(listPeersJSON)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = ws.ReadMessage()
	if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
		t.Fatalf("read %v, want the connection closed", err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-served; err != nil && !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

// bothWaits runs a real-socket test with each way an idle connection
// can wait: in Serve's event loop (where there is one), in three loops
// sharing the connections, and on a goroutine of its own.
func bothWaits(t *testing.T, test func(t *testing.T, mode waitMode)) {
	if loopSupported {
		t.Run("event-loop", func(t *testing.T) { test(t, waitLoop) })
		t.Run("event-loops-3", func(t *testing.T) { test(t, waitLoops3) })
	}
	t.Run("goroutine-per-conn", func(t *testing.T) { test(t, waitGoroutine) })
}

type waitMode int

const (
	waitLoop waitMode = iota
	waitLoops3
	waitGoroutine
)

func withWait(cfg Config, mode waitMode) Config {
	switch mode {
	case waitLoop:
		cfg.EventLoops = 1
	case waitLoops3:
		cfg.EventLoops = 3
	case waitGoroutine:
		cfg.GoroutinePerConn = true
	}
	return cfg
}

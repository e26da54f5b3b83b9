//go:build linux

package rendezvous

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// The event loop's own tests; bothWaits runs the other real-socket
// tests with and without it.

func needLoop(t *testing.T) {
	t.Helper()
	netns.Require(t)
	if !loopSupported {
		t.Skip("no event loop on this platform")
	}
}

// loopServer serves s on loopback (with its event loop) and returns
// the listener's address.
func loopServer(t *testing.T, s *Server) string {
	t.Helper()
	return strings.TrimSuffix(strings.TrimPrefix(serveLoopback(t, s), "ws://"), "/")
}

const loopUpgradeHead = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// A connection in the loop has no read deadline until its request
// arrives: the sweep ends one that sends nothing, no sooner than the
// handshake timeout, while one that asks meanwhile is served.
func TestLoopEndsSilentConnections(t *testing.T) {
	needLoop(t)
	// Two loops: the accepting one keeps the first connection and gives
	// the second to the other.
	s, err := NewServer(Config{Sweep: 50 * time.Millisecond, EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.hsTimeout = 2 * time.Second
	addr := loopServer(t, s)
	start := time.Now()
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	asker, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer asker.Close()
	if _, err := asker.Write([]byte(loopUpgradeHead)); err != nil {
		t.Fatal(err)
	}
	asker.SetReadDeadline(time.Now().Add(10 * time.Second))
	head, err := bufio.NewReader(asker).ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "HTTP/1.1 101 ") {
		t.Fatalf("request answered %q, %v", head, err)
	}
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err)) {
		t.Fatalf("silent connection: read %d, %v; want it closed", n, err)
	}
	if d := time.Since(start); d < s.hsTimeout {
		t.Errorf("silent connection closed after %v, before the handshake timeout %v", d, s.hsTimeout)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// A request head in pieces goes to a handshake goroutine, which reads
// the rest; the connection is then the loop's like any other.
func TestLoopHandshakeInPieces(t *testing.T) {
	needLoop(t)
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr := loopServer(t, s)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cut := strings.Index(loopUpgradeHead, "Sec-")
	if _, err := nc.Write([]byte(loopUpgradeHead[:cut])); err != nil {
		t.Fatal(err)
	}
	// The loop reads the first part alone before the rest is sent.
	for deadline := time.Now().Add(10 * time.Second); !allGreeted(s); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not read the first part")
		}
	}
	if _, err := nc.Write([]byte(loopUpgradeHead[cut:])); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("answer %v, %v", resp, err)
	}
	reg := `{"type":"register","nickname":"alice","local_addr":"0.0.0.0:4000"}`
	if _, err := nc.Write(maskedText(reg)); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil {
		t.Fatal(err)
	}
	size := int(hdr[1] & 0x7f)
	if size == 126 {
		if _, err := io.ReadFull(br, hdr[2:]); err != nil {
			t.Fatal(err)
		}
		size = int(hdr[2])<<8 | int(hdr[3])
	}
	msg := make([]byte, size)
	if _, err := io.ReadFull(br, msg); err != nil {
		t.Fatal(err)
	}
	if m, err := protocol.DecodeServerMessage(msg); err != nil {
		t.Fatalf("%v: header %x, %q", err, hdr, msg)
	} else if _, ok := m.(*protocol.Registered); !ok {
		t.Fatalf("got %s, want registered", msg)
	}
	// And plain HTTP goes to net/http, as without the loop.
	resp, err = http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
}

// The loop writes the answers to the messages it handles itself, as far
// as the socket takes them; a client that reads nothing for a while
// fills the socket, and a writer goroutine writes the rest of the frame
// the socket took in part, then the rest of the queue. The client reads
// every answer, whole and in order.
func TestLoopDirectWritesFillTheSocket(t *testing.T) {
	needLoop(t)
	s, err := NewServer(Config{MsgRatePerIP: -1, MaxQueueBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	partial := new(atomic.Int64)
	s.rawWrites = partial
	addr := loopServer(t, s)
	// A small receive buffer from the start: the window the server
	// sees stays small, and so does its send buffer.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}).DialContext}
	ws, _, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tc := ws.NetConn().(*net.TCPConn)
	// Registers whose answers differ in length, so that a byte lost or
	// repeated shows: nicknames n0, n1, ... More answers (about 130
	// bytes each) than the server's send buffer can grow to hold.
	n := 40000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if max, err := strconv.Atoi(f[2]); err == nil {
				n = 3 * max / 2 / 120
			}
		}
	}
	var all bytes.Buffer
	for i := range n {
		all.Write(maskedText(`{"type":"register","nickname":"n` + strconv.Itoa(i) + `","local_addr":"0.0.0.0:4000"}`))
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := tc.Write(all.Bytes())
		wrote <- err
	}()
	// Wait until the socket has refused part of an answer.
	deadline := time.Now().Add(20 * time.Second)
	for partial.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no direct write was cut short: the test did not fill the socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	ids := make(map[string]bool)
	for i := range n {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		m, err := protocol.DecodeServerMessage(b)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		r, ok := m.(*protocol.Registered)
		if !ok {
			t.Fatalf("answer %d: %s", i, b)
		}
		ids[r.PeerID] = true
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// Each register replaced the connection's registration (new nick,
	// same connection); every answer named a peer.
	if len(ids) == 0 {
		t.Fatal("no peer ids")
	}
}

// allGreeted reports whether s's loops have read from every connection
// they accepted (greet).
func allGreeted(s *Server) bool {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	n := 0
	for _, l := range loops {
		l.mu.Lock()
		for _, c := range l.conns {
			if c != nil {
				n++
				c.mu.Lock()
				fresh := c.fresh
				c.mu.Unlock()
				if fresh {
					l.mu.Unlock()
					return false
				}
			}
		}
		l.mu.Unlock()
	}
	return n > 0
}

package main

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/protocol"
)

// TestRealProcess builds the binary, runs it on loopback inside the
// private network namespace, speaks the protocol to it, and stops it with
// SIGTERM: close frames, exit status 0, quickly.
func TestRealProcess(t *testing.T) {
	netns.Require(t)
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "bootstrap-server")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, bin, "--host", "127.0.0.1", "--port", "0", "--log-format", "json")
	cmd.Env = append(cmd.Environ(), "PARLANCE_BOOTSTRAP_MAX_CONNS_PER_IP=2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The listening address, from the first log line.
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`"addr":"([0-9.]+:[0-9]+)"`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrCh <- m[1]:
				default:
				}
			}
		}
	}()
	var addr string
	select {
	case addr = <-addrCh:
	case <-time.After(10 * time.Second):
		t.Fatal("no listening address logged within 10 s")
	}

	// Plain HTTP gets an answer, not a silent close.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || len(body) == 0 {
		t.Fatalf("plain GET: %s %q", resp.Status, body)
	}

	ws, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	send := func(m protocol.ClientMessage) {
		b, _ := protocol.EncodeClientMessage(m)
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() protocol.ServerMessage {
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
	send(&protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045"})
	if r, ok := recv().(*protocol.Registered); !ok || r.PublicAddr != "127.0.0.1:40045" {
		t.Fatalf("registered: %+v", r)
	}
	send(&protocol.ListPeers{})
	if l, ok := recv().(*protocol.PeerList); !ok || len(l.Peers) != 1 {
		t.Fatalf("peer_list: %+v", l)
	}

	// The environment fallback set the per-address limit to 2.
	ws2, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	ws3, _, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws3.Close()
	ws3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := ws3.ReadMessage(); err != nil || !regexp.MustCompile(`Too many connections`).Match(b) {
		t.Fatalf("third connection from one address: %s, %v", b, err)
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after SIGTERM: %v, want close 1001", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("exit: %v, want status 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after SIGTERM")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("exit took %v", d)
	}
}

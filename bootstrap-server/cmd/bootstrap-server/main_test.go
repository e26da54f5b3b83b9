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

// buildServer builds the binary into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap-server")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startServer starts bin on 127.0.0.1 (any free port) with args and
// extra environment, and returns it with the address it logged.
func startServer(t *testing.T, bin string, env []string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	args = append([]string{"--host", "127.0.0.1", "--port", "0", "--log-format", "json"}, args...)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(cmd.Environ(), env...)
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
	select {
	case addr := <-addrCh:
		return cmd, addr
	case <-time.After(10 * time.Second):
		t.Fatal("no listening address logged within 10 s")
		return nil, ""
	}
}

// waitExit waits for cmd to exit with status 0, at most 5 s.
func waitExit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
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
}

// readClose reads from ws until it fails, as a client does (gorilla
// answers the close frame while reading), and returns that error.
func readClose(ws *websocket.Conn) error {
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// send writes m to ws.
func send(t *testing.T, ws *websocket.Conn, m protocol.ClientMessage) {
	t.Helper()
	b, _ := protocol.EncodeClientMessage(m)
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
}

// recv reads one server message from ws, waiting at most 10 s.
func recv(t *testing.T, ws *websocket.Conn) protocol.ServerMessage {
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

// sigterm sends SIGTERM to the server cmd and checks that it closes ws
// and second with 1001 and exits with status 0 well under a second later.
// Clients that answer the close frame (gorilla does while reading) let the
// server close at once (RFC 6455 section 7.1.1): it exits in milliseconds,
// not after the 2 s lingering close or shutdown grace.
func sigterm(t *testing.T, cmd *exec.Cmd, ws, second *websocket.Conn) {
	t.Helper()
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	read2 := make(chan error, 1)
	go func() { read2 <- readClose(second) }()
	if err := readClose(ws); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("after SIGTERM: %v, want close 1001", err)
	}
	if err := <-read2; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("second connection after SIGTERM: %v, want close 1001", err)
	}
	waitExit(t, cmd)
	d := time.Since(start)
	t.Logf("SIGTERM to exit: %v", d)
	if d > time.Second {
		t.Errorf("exit took %v after SIGTERM, want well under a second", d)
	}
}

// TestRealProcess builds the binary, runs it on loopback inside the
// private network namespace, speaks the protocol to it, and stops it with
// SIGTERM: close frames, exit status 0, quickly.
func TestRealProcess(t *testing.T) {
	netns.Require(t)
	ctx := t.Context()
	cmd, addr := startServer(t, buildServer(t), []string{"PARLANCE_BOOTSTRAP_MAX_CONNS_PER_IP=2"})

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
	send(t, ws, &protocol.Register{Nickname: "alice", LocalAddr: "0.0.0.0:40045"})
	if r, ok := recv(t, ws).(*protocol.Registered); !ok || r.PublicAddr != "127.0.0.1:40045" {
		t.Fatalf("registered: %+v", r)
	}
	send(t, ws, &protocol.ListPeers{})
	if l, ok := recv(t, ws).(*protocol.PeerList); !ok || len(l.Peers) != 1 {
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
	if err := readClose(ws3); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("third connection after its error: %v, want close 1013", err)
	}

	sigterm(t, cmd, ws, ws2)
}

package netsim_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parlance-chat/parlance/netsim"
)

// wsEchoServer serves WebSocket echo on h:8080 until h's context ends. It
// closes hijacked conns itself: http.Server.Close does not.
func wsEchoServer(t *testing.T, h *netsim.Host) {
	t.Helper()
	ln, err := h.Listen(h.Context(), "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns = map[*websocket.Conn]bool{}
		wg    sync.WaitGroup
	)
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		defer wg.Done()
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	})}
	h.Go(func(ctx context.Context) {
		context.AfterFunc(ctx, func() {
			srv.Close()
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
		})
		srv.Serve(ln)
		wg.Wait()
	})
}

func TestWebSocketOverNetsim(t *testing.T) {
	netsim.Test(t, func(t *testing.T, n *netsim.Network) {
		lan := n.AddSegment("lan")
		client, server := n.AddHost("client", lan), n.AddHost("server", lan)
		n.SetDefaultLink(netsim.Link{Latency: 5 * time.Millisecond})
		wsEchoServer(t, server)

		d := websocket.Dialer{NetDialContext: client.DialContext}
		c, resp, err := d.DialContext(t.Context(), "ws://server:8080/", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"list_peers"}`)); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.ReadMessage()
		if err != nil || string(msg) != `{"type":"list_peers"}` {
			t.Fatalf("echo = %q, %v", msg, err)
		}

		// The server says nothing more: a 25 s read deadline fires at
		// exactly 25 simulated seconds.
		start := time.Now()
		c.SetReadDeadline(start.Add(25 * time.Second))
		_, _, err = c.ReadMessage()
		// gorilla wraps the conn's error in its own net.Error (without
		// Unwrap), so only Timeout can be checked here.
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("ReadMessage = %v (%T), want a timeout", err, err)
		}
		if got := time.Since(start); got != 25*time.Second {
			t.Errorf("read deadline fired after %v, want exactly 25s", got)
		}
		if got := n.Stats().StreamBytes; got == 0 {
			t.Error("no stream bytes counted")
		}
	})
}

package real

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/protocol"
)

// The original LAN client (the e2e/original double, on real sockets in
// this process) and a parlance process find each other by multicast and
// exchange messages both ways; parlance says it cannot confirm delivery
// to an original client.
func TestRealOriginalPeerLocal(t *testing.T) {
	s := newScene(t)
	ctx := t.Context()
	alice := s.startLocal("alice")
	olivia, err := original.StartPeer(ctx, s.ns.Net(), "olivia")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(olivia.Close)

	alice.waitJoined(0, "olivia")
	// The original cannot query: parlance answers its first announce at
	// once rather than at its next interval.
	eventually(t, wait, "the original peer lists alice", func() bool { return slices.Contains(olivia.Peers(), "alice") })

	m := alice.Mark()
	if err := olivia.Send(ctx, "alice", "hello from the original"); err != nil {
		t.Fatal(err)
	}
	alice.waitPlainMessage(m, "olivia", "hello from the original")

	alice.sendUnconfirmed("olivia", "hello from parlance")
	eventually(t, wait, "the original peer receives alice's message", func() bool {
		return slices.ContainsFunc(olivia.Received(), func(c protocol.ChatMessage) bool {
			return c.From == "alice" && c.Content == "hello from parlance"
		})
	})
	alice.quit()
	noTerminalControls(t, alice)
}

// The original internet-mode client (the double) registers with the real
// bootstrap-server process next to a parlance process: each lists the
// other, and messages go both ways over the addresses the server gave.
func TestRealOriginalClientOnServer(t *testing.T) {
	s := newScene(t)
	ctx := t.Context()
	sv := s.startServer(0)
	nw := s.ns.Net()
	alice := s.startInternet("alice", sv.url)

	// The original client's message port.
	ln, err := nw.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lines := make(chan string, 4)
	go acceptLines(ln, lines)

	oc := original.StartBootstrapClient(ctx, nw, sv.url, "oscar", uint16(ln.Addr().(*net.TCPAddr).Port))
	t.Cleanup(oc.Close)
	alice.waitJoined(0, "oscar")
	eventually(t, wait, "the original client lists alice", func() bool { return slices.Contains(oc.Peers(), "alice") })

	alice.sendUnconfirmed("oscar", "hi oscar")
	select {
	case l := <-lines:
		c, err := protocol.DecodeChatLine([]byte(l))
		if err != nil || c.From != "alice" || c.Content != "hi oscar" {
			t.Fatalf("the original client received %q (%v), want alice: hi oscar", l, err)
		}
	case <-time.After(wait):
		t.Fatal("the original client received nothing")
	}

	info, _ := oc.Peer("alice")
	m := alice.Mark()
	err = original.SendLine(ctx, nw, info.PublicAddr, &protocol.ChatMessage{From: "oscar", Content: "hi alice", Timestamp: time.Now().Unix()})
	if err != nil {
		t.Fatal(err)
	}
	alice.waitPlainMessage(m, "oscar", "hi alice")

	// The original client leaves by closing its connection: gone at once.
	m = alice.Mark()
	oc.Close()
	alice.waitLeft(m, "oscar")
	if errs := oc.Errors(); len(errs) > 0 {
		t.Errorf("the server sent the original client errors: %q", errs)
	}
	alice.quit()
	noTerminalControls(t, alice)
}

// acceptLines sends every line received on ln to out.
func acceptLines(ln net.Listener, out chan<- string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				out <- sc.Text()
			}
		}()
	}
}

// Two parlance processes in internet mode use the original bootstrap
// server (the double, served on 127.0.0.1 by this process), which never
// pushes: they find each other by polling and chat both ways.
func TestRealInternetOriginalServer(t *testing.T) {
	s := newScene(t)
	ctx := t.Context()
	ln, err := s.ns.Net().Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	osrv := original.NewServer(nil)
	hs := &http.Server{Handler: osrv, BaseContext: func(net.Listener) context.Context { return ctx }}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		osrv.Close()
	})
	url := fmt.Sprintf("ws://%s/", ln.Addr())

	alice := s.startInternet("alice", url)
	bob := s.startInternet("bob", url)
	// bob lists alice at once; alice learns of bob at her next poll (5 s).
	bob.waitJoined(0, "alice")
	alice.waitJoined(0, "bob")
	// The original server does not relay the capabilities in register,
	// so each takes the other for an original client: no acks.
	m := bob.Mark()
	alice.sendUnconfirmed("bob", "hi bob, via the original server")
	bob.waitPlainMessage(m, "alice", "hi bob, via the original server")
	m = alice.Mark()
	bob.sendUnconfirmed("alice", "hi alice")
	alice.waitPlainMessage(m, "bob", "hi alice")
	alice.wantPeers("bob")
	noTerminalControls(t, alice, bob)
	// No goodbye assertion: against a server that does not push, a peer
	// that left disappears only at the next poll.
	alice.quit()
	bob.quit()
}

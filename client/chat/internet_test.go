package chat_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim"
)

// In internet mode, nodes learn of each other through the bootstrap
// server, open no multicast socket, message each other directly, and a
// node that closes leaves the other's list.
func TestInternetMode(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		wan := nw.AddSegment("wan")
		sh := nw.AddHost("server", wan)
		srv, err := rendezvous.NewServer(rendezvous.Config{Rand: rand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := sh.Listen(sh.Context(), "tcp", ":8080")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(context.Background(), ln)
		}()
		defer func() {
			srv.Close()
			<-served
		}()
		url := fmt.Sprintf("ws://%s:8080/", sh.IP())
		internet := func(c *chat.Config) { c.Mode = chat.ModeInternet; c.BootstrapServer = url }
		alice := start(t, nw.AddHost("a", wan), "alice", 1, internet)
		bob := start(t, nw.AddHost("b", wan), "bob", 2, internet)
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") && hasPeer(bob, "alice") }, 10*time.Second) {
			t.Fatalf("no mutual discovery through the server: alice %v, bob %v", alice.Peers(), bob.Peers())
		}
		if p := alice.Peers()[0]; p.Source.String() != "bootstrap" {
			t.Errorf("bob found via %v, want bootstrap", p.Source)
		}
		res, err := alice.Send(t.Context(), "bob", "over the internet")
		if err != nil || res.Status != chat.Delivered {
			t.Fatalf("send: %v %v", res, err)
		}
		nw.Settle()
		if ev, ok := first(bob.rec, chat.EventMessage, "alice"); !ok || ev.Message.Text != "over the internet" {
			t.Errorf("bob got %+v", ev)
		}
		bob.close()
		if !nw.RunUntil(func() bool { return !hasPeer(alice, "bob") }, 5*time.Second) {
			t.Error("bob still listed after closing")
		}
	})
}

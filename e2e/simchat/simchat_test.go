package simchat_test

import (
	"slices"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/e2e/simchat"
	"github.com/parlance-chat/parlance/netsim"
)

// Two nodes on a LAN find each other; one crashes, comes back as a new
// instance at the same address, and is listed again; QuitAll stops both,
// and Close closes their stores.
func TestStartCrashRestartQuit(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		g := simchat.NewGroup(nw)
		lan := nw.AddSegment("lan")
		a, err := g.Start(nw.AddHost("h1", lan), "alice")
		if err != nil {
			t.Fatal(err)
		}
		b, err := g.Start(nw.AddHost("h2", lan), "bob")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		lists := func(p, q *simchat.Node) func() bool {
			return func() bool { return slices.Equal(p.View(), []simchat.Entry{q.Entry()}) }
		}
		if !nw.RunUntil(func() bool { return lists(a, b)() && lists(b, a)() }, 10*time.Second) {
			t.Fatalf("alice lists %v, bob lists %v", a.View(), b.View())
		}
		inst, addr := b.Instance(), b.Addr()
		b.Crash()
		if b.Up() || b.Chat() != nil || b.Host().Up() {
			t.Fatal("bob still up after the crash")
		}
		if err := b.Restart(); err != nil {
			t.Fatal(err)
		}
		if b.Instance() == inst || b.Addr() != addr || len(b.Recs()) != 2 || b.Rec() != b.Recs()[1] {
			t.Fatalf("restarted bob: instance %s (was %s), addr %v (was %v), %d recorders",
				b.Instance(), inst, b.Addr(), addr, len(b.Recs()))
		}
		if !nw.RunUntil(lists(a, b), 10*time.Second) {
			t.Fatalf("alice lists %v after bob's restart, want %v", a.View(), b.Entry())
		}
		if got := b.String(); got != "bob@h2" {
			t.Errorf("String() = %q, want bob@h2", got)
		}
		g.QuitAll()
		if a.Up() || b.Up() {
			t.Error("QuitAll left a node running")
		}
	})
}

// With file stores, a restart closes the node's store and opens its file
// again: the new instance reads back its room and what it posted there.
func TestFileStoreSurvivesRestart(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		g := simchat.NewGroup(nw)
		g.UseFileStores(t.TempDir())
		defer g.Close()
		a, err := g.Start(nw.AddHost("h1", nw.AddSegment("lan")), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Chat().JoinRoom(t.Context(), "#r", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Chat().PostRoom(t.Context(), "", "kept"); err != nil {
			t.Fatal(err)
		}
		old := a.Store()
		a.Crash()
		if err := a.Restart(); err != nil {
			t.Fatal(err)
		}
		if a.Store() == old {
			t.Error("the store was not opened again")
		}
		if cur := a.Chat().CurrentRoom(); cur != "#r" {
			t.Errorf("current room after the restart %q, want #r", cur)
		}
		h, err := a.Chat().RoomHistory(t.Context(), "#r", 10)
		if err != nil || len(h) != 1 || h[0].Text != "kept" || h[0].Seq != 1 {
			t.Errorf("history after the restart: %+v, %v", h, err)
		}
	})
}

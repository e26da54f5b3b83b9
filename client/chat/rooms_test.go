package chat_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/room"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// roomLog returns "nick:text" of every room message tn showed in room, in
// the order shown.
func roomLog(tn *testNode, room string) []string {
	var out []string
	for _, ev := range tn.rec.All() {
		if ev.Kind == chat.EventRoomMessage && ev.Room.Room == room {
			out = append(out, ev.Room.Nick+":"+ev.Room.Text)
		}
	}
	return out
}

// memberCount returns how many other members tn sees in room.
func memberCount(tn *testNode, room string) int {
	info, err := tn.Room(room)
	if err != nil {
		return -1
	}
	return len(info.Members)
}

func join(t *testing.T, tn *testNode, room, secret string) {
	t.Helper()
	if _, err := tn.JoinRoom(t.Context(), room, secret); err != nil {
		t.Fatalf("%s: join %s: %v", tn.Nickname(), room, err)
	}
}

func post(t *testing.T, tn *testNode, room, text string) chat.RoomPost {
	t.Helper()
	p, err := tn.PostRoom(t.Context(), room, text)
	if err != nil {
		t.Fatalf("%s: post to %s: %v", tn.Nickname(), room, err)
	}
	return p
}

// allMembers waits until every node sees every other as a member of room.
func allMembers(t *testing.T, nw *netsim.Network, nodes []*testNode, room string, limit time.Duration) {
	t.Helper()
	if !nw.RunUntil(func() bool {
		for _, tn := range nodes {
			if memberCount(tn, room) != len(nodes)-1 {
				return false
			}
		}
		return true
	}, limit) {
		for _, tn := range nodes {
			t.Logf("%s sees %d members", tn.Nickname(), memberCount(tn, room))
		}
		t.Fatalf("members of %s did not all see each other within %v", room, limit)
	}
}

// roomLAN starts n nodes on one new LAN segment (hosts h0, h1, ...,
// nicknames nickFmt with the index, seeds seed+index), joins each to room
// and waits until every node sees all the others as members.
func roomLAN(t *testing.T, nw *netsim.Network, n int, nickFmt string, seed uint64, room string) ([]*testNode, []*netsim.Host) {
	t.Helper()
	lan := nw.AddSegment("lan")
	var nodes []*testNode
	var hosts []*netsim.Host
	for i := range n {
		h := nw.AddHost(fmt.Sprintf("h%d", i), lan)
		tn := start(t, h, fmt.Sprintf(nickFmt, i), seed+uint64(i))
		join(t, tn, room, "")
		nodes, hosts = append(nodes, tn), append(hosts, h)
	}
	allMembers(t, nw, nodes, room, time.Duration(n)*time.Second/2+5*time.Second)
	return nodes, hosts
}

// checkRoom checks that every node showed exactly want (as a set, each
// once, its own posts excluded) and each author's messages in the order
// written.
func checkRoom(t *testing.T, nodes []*testNode, room string, written map[string][]string) {
	t.Helper()
	for _, tn := range nodes {
		got := roomLog(tn, room)
		seen := map[string]int{}
		for _, m := range got {
			seen[m]++
		}
		for author, texts := range written {
			if author == tn.Nickname() {
				continue
			}
			var order []string
			for _, m := range got {
				if nick, _, _ := strings.Cut(m, ":"); nick == author {
					order = append(order, m)
				}
			}
			var want []string
			for _, x := range texts {
				want = append(want, author+":"+x)
			}
			if !slices.Equal(order, want) {
				t.Errorf("%s showed %s's messages as %q, want %q", tn.Nickname(), author, order, want)
			}
		}
		for m, c := range seen {
			if c > 1 {
				t.Errorf("%s showed %q %d times", tn.Nickname(), m, c)
			}
		}
	}
}

// Two members see each other through their announces and talk; each
// line is shown once, to the other, with the room's name.
func TestRoomTwoMembers(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		join(t, alice, "#team", "")
		join(t, bob, "#Team", "")
		nodes := []*testNode{alice, bob}
		allMembers(t, nw, nodes, "#team", 2*time.Second)
		if cur := alice.CurrentRoom(); cur != "#team" {
			t.Fatalf("current room %q after /join, want #team", cur)
		}
		p := post(t, alice, "", "hello team")
		if p.Members != 1 || p.Message.Seq != 1 || !p.Message.Own {
			t.Fatalf("post: %+v", p)
		}
		post(t, bob, "#team", "hi alice")
		want := map[string][]string{"alice": {"hello team"}, "bob": {"hi alice"}}
		if !nw.RunUntil(func() bool { return len(roomLog(alice, "#team")) == 1 && len(roomLog(bob, "#team")) == 1 }, time.Second) {
			t.Fatalf("not shown: alice %q, bob %q", roomLog(alice, "#team"), roomLog(bob, "#team"))
		}
		nw.RunFor(RoomQuiet)
		checkRoom(t, nodes, "#team", want)
		ev, _ := bob.rec.First(func(ev chat.Event) bool { return ev.Kind == chat.EventRoomMessage })
		if m := ev.Room; m.Author != alice.PublicKey() || m.RoomID == "" || m.Forced || m.Late || m.Own {
			t.Errorf("bob's event: %+v", m)
		}
		if _, err := alice.PostRoom(t.Context(), "#other", "x"); err == nil {
			t.Error("posting to a room not joined was taken")
		}
	})
}

// RoomQuiet is long enough for anything in flight to land and a summary
// exchange to run.
const RoomQuiet = chat.RoomSyncInterval + 5*time.Second

// Ten members, each posting in turn: every member shows every other's
// messages once, each author's in order.
func TestRoomTenMembers(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nodes, _ := roomLAN(t, nw, 10, "n%d", 10, "#ten")
		written := map[string][]string{}
		for round := range 3 {
			for _, tn := range nodes {
				text := fmt.Sprintf("r%d from %s", round, tn.Nickname())
				post(t, tn, "#ten", text)
				written[tn.Nickname()] = append(written[tn.Nickname()], text)
				nw.RunFor(10 * time.Millisecond)
			}
		}
		if !nw.RunUntil(func() bool {
			for _, tn := range nodes {
				if len(roomLog(tn, "#ten")) != 27 {
					return false
				}
			}
			return true
		}, 10*time.Second) {
			for _, tn := range nodes {
				t.Logf("%s showed %d", tn.Nickname(), len(roomLog(tn, "#ten")))
			}
			t.Fatal("not every message reached every member")
		}
		nw.RunFor(RoomQuiet)
		checkRoom(t, nodes, "#ten", written)
	})
}

// A partition splits a room; both sides go on talking; once it heals,
// every member has every message, once, each author's in order.
func TestRoomPartitionHeals(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nodes, hosts := roomLAN(t, nw, 6, "p%d", 30, "#split")
		written := map[string][]string{}
		say := func(tn *testNode, text string) {
			post(t, tn, "#split", text)
			written[tn.Nickname()] = append(written[tn.Nickname()], text)
		}
		say(nodes[0], "before")
		nw.RunFor(time.Second)
		cut := nw.Partition(hosts[:3], hosts[3:])
		for i, tn := range nodes {
			say(tn, fmt.Sprintf("during %d", i))
			nw.RunFor(100 * time.Millisecond)
		}
		nw.RunFor(20 * time.Second) // long enough for the sides to drop each other
		for i, tn := range nodes {
			say(tn, fmt.Sprintf("apart %d", i))
		}
		cut.Heal()
		if !nw.RunUntil(func() bool {
			for _, tn := range nodes {
				if len(roomLog(tn, "#split")) != 13-len(written[tn.Nickname()]) {
					return false
				}
			}
			return true
		}, 2*time.Minute) {
			for _, tn := range nodes {
				t.Logf("%s showed %d: %q", tn.Nickname(), len(roomLog(tn, "#split")), roomLog(tn, "#split"))
			}
			t.Fatal("the room did not converge after the partition healed")
		}
		nw.RunFor(RoomQuiet)
		checkRoom(t, nodes, "#split", written)
	})
}

// A member that was offline catches up after its restart, from its store:
// it shows what it missed, once, and nothing it had shown before; it is
// still in the room without joining again.
func TestRoomRestartCatchesUp(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		ch := nw.AddHost("c", lan)
		path := filepath.Join(t.TempDir(), "carol.db")
		st := openStore(t, path)
		carol := start(t, ch, "carol", 3, withStore(st))
		join(t, alice, "#r", "")
		join(t, carol, "#r", "")
		allMembers(t, nw, []*testNode{alice, carol}, "#r", 2*time.Second)
		post(t, alice, "#r", "one")
		post(t, carol, "#r", "mine")
		if !nw.RunUntil(func() bool { return len(roomLog(carol, "#r")) == 1 }, time.Second) {
			t.Fatal("carol did not get the first message")
		}
		carol.close()
		for i := range 5 {
			post(t, alice, "#r", fmt.Sprintf("missed %d", i))
		}
		nw.RunFor(time.Second)
		carol = start(t, ch, "carol", 3, withStore(st))
		if rooms := carol.Rooms(); len(rooms) != 1 || rooms[0].Name != "#r" || !rooms[0].Current {
			t.Fatalf("carol's rooms after restart: %+v", rooms)
		}
		if !nw.RunUntil(func() bool { return len(roomLog(carol, "#r")) == 5 }, RoomQuiet) {
			t.Fatalf("carol after restart showed %q, want the 5 she missed", roomLog(carol, "#r"))
		}
		nw.RunFor(RoomQuiet)
		want := []string{"alice:missed 0", "alice:missed 1", "alice:missed 2", "alice:missed 3", "alice:missed 4"}
		if got := roomLog(carol, "#r"); !slices.Equal(got, want) {
			t.Errorf("carol after restart showed %q, want %q", got, want)
		}
		if p := post(t, carol, "#r", "back"); p.Message.Seq != 2 {
			t.Errorf("carol's seq after restart %d, want 2", p.Message.Seq)
		}
		h, err := carol.RoomHistory(t.Context(), "#r", 20)
		if err != nil {
			t.Fatal(err)
		}
		// "one" and "mine" were written at once: carol showed hers first.
		if len(h) != 8 || h[0].Text != "mine" || h[1].Text != "one" || h[2].Text != "missed 0" || h[7].Text != "back" {
			var got []string
			for _, m := range h {
				got = append(got, m.Nick+":"+m.Text)
			}
			t.Errorf("carol's history %q", got)
		}
	})
}

// A member that joins late gets the recent history, bounded, in order.
func TestRoomLateJoiner(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		limit := func(c *chat.Config) { c.RoomHistoryMessages = 8 }
		alice := start(t, nw.AddHost("a", lan), "alice", 1, limit)
		bob := start(t, nw.AddHost("b", lan), "bob", 2, limit)
		join(t, alice, "#late", "")
		join(t, bob, "#late", "")
		allMembers(t, nw, []*testNode{alice, bob}, "#late", 2*time.Second)
		var all []string
		for i := range 6 {
			post(t, alice, "#late", fmt.Sprintf("a%d", i))
			post(t, bob, "#late", fmt.Sprintf("b%d", i))
			all = append(all, fmt.Sprintf("alice:a%d", i), fmt.Sprintf("bob:b%d", i))
			nw.RunFor(50 * time.Millisecond)
		}
		nw.RunFor(time.Second)
		dave := start(t, nw.AddHost("d", lan), "dave", 4, limit)
		nw.RunFor(time.Second)
		join(t, dave, "#late", "")
		if !nw.RunUntil(func() bool { return len(roomLog(dave, "#late")) >= 8 }, 10*time.Second) {
			t.Fatalf("dave showed %q, want the last 8", roomLog(dave, "#late"))
		}
		nw.RunFor(RoomQuiet)
		// a_i and b_i were written at the same instant: either may come
		// first, but each author's come in order.
		got, want := roomLog(dave, "#late"), all[len(all)-8:]
		if !sameSet(got, want) {
			t.Errorf("dave showed %q, want %q in some causal order", got, want)
		}
		checkRoom(t, []*testNode{dave}, "#late", map[string][]string{"alice": {"a2", "a3", "a4", "a5"}, "bob": {"b2", "b3", "b4", "b5"}})
	})
}

// A private room is invisible without its secret: a peer that joins the
// same name with another secret is in another room, sees none of its
// members and gets none of its messages.
func TestRoomPrivate(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		eve := start(t, nw.AddHost("e", lan), "eve", 5)
		join(t, alice, "#club", "correct horse battery")
		join(t, bob, "#club", "correct horse battery")
		join(t, eve, "#club", "guess")
		allMembers(t, nw, []*testNode{alice, bob}, "#club", 2*time.Second)
		post(t, alice, "#club", "members only")
		if !nw.RunUntil(func() bool { return len(roomLog(bob, "#club")) == 1 }, time.Second) {
			t.Fatal("bob did not get the message")
		}
		nw.RunFor(RoomQuiet)
		if n := memberCount(eve, "#club"); n != 0 {
			t.Errorf("eve sees %d members of her #club, want 0", n)
		}
		if n := memberCount(alice, "#club"); n != 1 {
			t.Errorf("alice sees %d members, want only bob", n)
		}
		if got := roomLog(eve, "#club"); len(got) != 0 {
			t.Errorf("eve showed %q", got)
		}
		if a, e := alice.Rooms()[0].ID, eve.Rooms()[0].ID; a == e {
			t.Error("the same name with another secret gave the same room")
		}
	})
}

// Leaving a room is announced at once: the others drop the member, and
// nothing more of the room reaches it.
func TestRoomLeave(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		join(t, alice, "#x", "")
		join(t, bob, "#x", "")
		allMembers(t, nw, []*testNode{alice, bob}, "#x", 2*time.Second)
		post(t, bob, "#x", "before")
		nw.RunFor(chat.RoomSyncInterval) // a round: alice sends bob her changed summary
		if summed, _, _, err := alice.RoomSentStateForTest("#x"); err != nil || summed != 1 {
			t.Fatalf("alice keeps round state for %d members (%v), want bob's", summed, err)
		}
		if err := bob.LeaveRoom(t.Context(), "#x"); err != nil {
			t.Fatal(err)
		}
		if !nw.RunUntil(func() bool { return memberCount(alice, "#x") == 0 }, time.Second) {
			t.Fatal("alice still lists bob a second after he left")
		}
		if summed, sent, replied, err := alice.RoomSentStateForTest("#x"); err != nil || summed+sent+replied != 0 {
			t.Errorf("alice keeps send state for bob after he left: summaries %d, answers %d, replies %d (%v)", summed, sent, replied, err)
		}
		if p := post(t, alice, "#x", "after"); p.Members != 0 {
			t.Errorf("sent to %d members after bob left", p.Members)
		}
		nw.RunFor(RoomQuiet)
		if got := roomLog(bob, "#x"); len(got) != 0 {
			t.Errorf("bob showed %q after leaving", got)
		}
		if bob.CurrentRoom() != "" || len(bob.Rooms()) != 0 {
			t.Errorf("bob still in rooms: %+v", bob.Rooms())
		}
		ev, ok := alice.rec.First(func(ev chat.Event) bool { return ev.Kind == chat.EventRoomMember && strings.Contains(ev.Text, "left") })
		if !ok || ev.Room.Nick != "bob" {
			t.Errorf("alice was not told bob left: %+v", ev)
		}
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A member cannot pass a message off as another's (the signature fails),
// a non-member's messages are dropped even when well signed, and a peer
// that copies a member's tag into its own announce is not taken for a
// member of a private room: nothing of the room is sent to it.
func TestRoomImpostors(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		withKey := func(seed byte) func(*chat.Config) {
			return func(c *chat.Config) { c.Identity = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32)) }
		}
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		mallory := start(t, nw.AddHost("m", lan), "mallory", 6, withKey(6))
		eve := start(t, nw.AddHost("e", lan), "eve", 7, withKey(7))
		for _, tn := range []*testNode{alice, bob, mallory} {
			join(t, tn, "#pub", "")
		}
		allMembers(t, nw, []*testNode{alice, bob, mallory}, "#pub", 2*time.Second)
		pub, err := room.New(mustName(t, "#pub"), "")
		if err != nil {
			t.Fatal(err)
		}
		forge := func(seed byte, author string, text string) []byte {
			m := &protocol.RoomMessage{Room: pub.ID, Nick: "bob", Seq: 1, Time: time.Now().UnixMilli(), Text: text}
			room.Sign(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32)), m)
			if author != "" {
				m.Author = author
			}
			line, err := protocol.EncodeRoomMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			return line
		}
		// Mallory, a member, signs as herself but names bob as author.
		if err := alice.ReceiveRoomLineForTest(mallory.PublicKey(), "mallory", forge(6, bob.PublicKey(), "I am bob")); err != nil {
			t.Fatal(err)
		}
		// Eve knows the room (it is public) but never joined: her own,
		// well-signed message comes from a non-member.
		if err := alice.ReceiveRoomLineForTest(eve.PublicKey(), "eve", forge(7, "", "let me in")); err != nil {
			t.Fatal(err)
		}
		// The same message of mallory's own, from her, is shown: the
		// checks above are what dropped the others. It claims the nick
		// bob, but shows under the nickname mallory announces.
		if err := alice.ReceiveRoomLineForTest(mallory.PublicKey(), "mallory", forge(6, "", "from mallory")); err != nil {
			t.Fatal(err)
		}
		nw.RunFor(RoomQuiet)
		if got, want := roomLog(alice, "#pub"), []string{"mallory:from mallory"}; !slices.Equal(got, want) {
			t.Errorf("alice showed %q, want only %q", got, want)
		}
		if ev, ok := alice.rec.First(func(ev chat.Event) bool { return ev.Kind == chat.EventRoomMessage }); !ok || ev.Room.Author != mallory.PublicKey() {
			t.Errorf("the message shown is not mallory's: %+v", ev.Room)
		}

		// A private room: mallory copies bob's tags into her announces.
		join(t, alice, "#club", "s3cret words")
		join(t, bob, "#club", "s3cret words")
		allMembers(t, nw, []*testNode{alice, bob}, "#club", 2*time.Second)
		bp, ok := peerNamed(mallory, "bob")
		if !ok || len(bp.Rooms) != 2 {
			t.Fatalf("mallory does not see bob's two tags: %+v", bp)
		}
		mallory.SetRoomTagsForTest(bp.Rooms)
		nw.RunFor(time.Second)
		if mp, _ := peerNamed(alice, "mallory"); len(mp.Rooms) != 2 {
			t.Fatalf("alice does not list mallory with the copied tags: %q", mp.Rooms)
		}
		if info, _ := alice.Room("#club"); len(info.Members) != 1 || info.Members[0].Nickname != "bob" {
			t.Errorf("alice's #club members: %+v, want bob alone", info.Members)
		}
		if p := post(t, alice, "#club", "for members"); p.Members != 1 {
			t.Errorf("posted to %d members, want 1", p.Members)
		}
		nw.RunFor(time.Second)
		if got := roomLog(bob, "#club"); !slices.Equal(got, []string{"alice:for members"}) {
			t.Errorf("bob showed %q", got)
		}
	})
}

func mustName(t *testing.T, s string) room.Name {
	t.Helper()
	n, err := room.ParseName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A member that floods is throttled, and the user told once: of its
// fresh messages a burst is taken, of backdated ones (which a flooder
// could use to pass for history) at most a history's worth in all. Our
// own posts past the rate are refused.
func TestRoomFloodThrottled(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		limits := func(c *chat.Config) { c.RoomRate, c.RoomBurst, c.RoomHistoryMessages = 10, 5, 20 }
		alice := start(t, nw.AddHost("a", lan), "alice", 1, limits)
		mkey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, 32))
		mallory := start(t, nw.AddHost("m", lan), "mallory", 6, func(c *chat.Config) { c.Identity = mkey })
		join(t, alice, "#pub", "")
		join(t, mallory, "#pub", "")
		allMembers(t, nw, []*testNode{alice, mallory}, "#pub", 2*time.Second)
		pub, err := room.New(mustName(t, "#pub"), "")
		if err != nil {
			t.Fatal(err)
		}
		send := func(seq uint64, written time.Time) {
			m := &protocol.RoomMessage{Room: pub.ID, Nick: "mallory", Seq: seq, Time: written.UnixMilli(), Text: fmt.Sprint("flood ", seq)}
			room.Sign(mkey, m)
			line, err := protocol.EncodeRoomMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := alice.ReceiveRoomLineForTest(mallory.PublicKey(), "mallory", line); err != nil {
				t.Fatal(err)
			}
		}
		for seq := uint64(1); seq <= 50; seq++ {
			send(seq, time.Now())
		}
		nw.Settle() // the recorder takes the events, at this instant
		if got := len(roomLog(alice, "#pub")); got != 5 {
			t.Errorf("%d fresh messages of 50 taken at once, want the burst of 5", got)
		}
		for seq := uint64(51); seq <= 100; seq++ {
			send(seq, time.Now().Add(-time.Hour))
		}
		nw.RunFor(15 * time.Second) // past the causal wait: the gaps are forced past
		if got := len(roomLog(alice, "#pub")); got != 20 {
			t.Errorf("%d messages taken in all, want 20 (a history's worth)", got)
		}
		notices := 0
		for _, ev := range alice.rec.All() {
			if ev.Kind == chat.EventStatus && strings.Contains(ev.Text, "mallory is sending too fast in #pub") {
				notices++
			}
		}
		if notices != 1 {
			t.Errorf("%d notices, want 1", notices)
		}
		for i := range 5 {
			post(t, alice, "#pub", fmt.Sprint("mine ", i))
		}
		if _, err := alice.PostRoom(t.Context(), "#pub", "one too many"); !errors.Is(err, chat.ErrRoomRate) {
			t.Errorf("a post past the burst: %v, want ErrRoomRate", err)
		}
	})
}

// A member's join and leave of a room are told once each; the members
// found when we join, or as peers appear, are not told one by one.
func TestRoomMemberEvents(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		lan := nw.AddSegment("lan")
		alice := start(t, nw.AddHost("a", lan), "alice", 1)
		bob := start(t, nw.AddHost("b", lan), "bob", 2)
		join(t, bob, "#ev", "")
		if !nw.RunUntil(func() bool { return hasPeer(alice, "bob") }, time.Second) {
			t.Fatal("no discovery")
		}
		nw.RunFor(time.Second)
		join(t, alice, "#ev", "")
		allMembers(t, nw, []*testNode{alice, bob}, "#ev", time.Second)
		carol := start(t, nw.AddHost("c", lan), "carol", 3)
		join(t, carol, "#ev", "")
		allMembers(t, nw, []*testNode{alice, bob, carol}, "#ev", 2*time.Second)
		if err := carol.LeaveRoom(t.Context(), "#ev"); err != nil {
			t.Fatal(err)
		}
		if !nw.RunUntil(func() bool { return memberCount(alice, "#ev") == 1 }, time.Second) {
			t.Fatal("carol's leave not seen")
		}
		var got []string
		for _, ev := range alice.rec.All() {
			if ev.Kind == chat.EventRoomMember {
				got = append(got, ev.Text)
			}
		}
		// carol started after alice was in the room: her join comes in
		// the announce that introduces her (a new peer, not told as a
		// member) or in a later update (told).
		if want := []string{"carol left #ev"}; !slices.Equal(got, want) && !slices.Equal(got, []string{"carol joined #ev", "carol left #ev"}) {
			t.Errorf("alice was told %q", got)
		}
		if slices.Contains(got, "bob joined #ev") {
			t.Error("bob, found as alice joined, was told as a join")
		}
	})
}

// A member back from a restart fetches what it missed once: it asks one
// member for each author, rather than every member sending it all (which
// would bring each message once per member). The latency makes its
// summaries reach every member before the first answer is back.
func TestRoomReturningMemberFetchesOnce(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nw.SetDefaultLink(netsim.Link{Latency: 50 * time.Millisecond})
		lan := nw.AddSegment("lan")
		rh := nw.AddHost("r", lan)
		st := openStore(t, filepath.Join(t.TempDir(), "r.db"))
		back := start(t, rh, "back", 50, withStore(st))
		join(t, back, "#back", "")
		nodes := []*testNode{back}
		for i := range 5 {
			tn := start(t, nw.AddHost(fmt.Sprintf("h%d", i), lan), fmt.Sprintf("p%d", i), uint64(51+i))
			join(t, tn, "#back", "")
			nodes = append(nodes, tn)
		}
		allMembers(t, nw, nodes, "#back", 5*time.Second)
		back.close()
		written := map[string][]string{}
		const missed = 20
		for i := range missed {
			tn := nodes[1+i%5]
			text := fmt.Sprintf("m%d", i)
			post(t, tn, "#back", text)
			written[tn.Nickname()] = append(written[tn.Nickname()], text)
			nw.RunFor(100 * time.Millisecond)
		}
		back = start(t, rh, "back", 50, withStore(st))
		nodes[0] = back
		if !nw.RunUntil(func() bool { return len(roomLog(back, "#back")) == missed }, time.Minute) {
			t.Fatalf("back showed %d of the %d it missed", len(roomLog(back, "#back")), missed)
		}
		nw.RunFor(RoomQuiet)
		checkRoom(t, nodes, "#back", written)
		stats, err := back.RoomStatsForTest("#back")
		if err != nil {
			t.Fatal(err)
		}
		// Every member holds all 20: sending them all would bring 4×20
		// copies.
		if stats.Duplicates > 0 {
			t.Errorf("back got %d copies of messages it held; want each missed message once", stats.Duplicates)
		}
	})
}

// An idle room sends no summaries: a member is sent our summary in a
// round only when it changed since the last one it was sent.
func TestRoomIdleSendsNoSummaries(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nodes, _ := roomLAN(t, nw, 4, "p%d", 70, "#idle")
		post(t, nodes[0], "#idle", "hello")
		// The round after the post sends the changed summaries once.
		nw.RunFor(2 * chat.RoomSyncInterval)
		before := nw.Stats().StreamBytes
		nw.RunFor(3 * chat.RoomSyncInterval)
		if got := nw.Stats().StreamBytes - before; got != 0 {
			t.Errorf("an idle room of 4 carried %d stream bytes in 3 summary rounds, want 0", got)
		}
		// A post changes the summaries: the next round carries them, and
		// the room still works.
		post(t, nodes[1], "#idle", "again")
		if !nw.RunUntil(func() bool {
			for _, tn := range nodes[2:] {
				if len(roomLog(tn, "#idle")) != 2 {
					return false
				}
			}
			return true
		}, 5*time.Second) {
			t.Fatal("a post after the idle time did not reach everyone")
		}
	})
}

// In a room of more members than a summary round reaches, a message that
// live sending missed still reaches everyone through the rounds, and each
// member sends at most 8 summaries a round.
func TestRoomRoundsReachEveryone(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nodes, _ := roomLAN(t, nw, 14, "p%02d", 90, "#wide")
		// Let the rounds after the joins pass: then only the unsent post
		// changes a summary.
		nw.RunFor(2 * chat.RoomSyncInterval)
		sends := func() []int {
			var out []int
			for _, tn := range nodes {
				n, err := tn.RoomRoundSendsForTest("#wide")
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, n)
			}
			return out
		}
		before := sends()
		if err := nodes[0].PostRoomUnsentForTest("#wide", "quiet"); err != nil {
			t.Fatal(err)
		}
		rounds := 0
		for ; rounds < 6; rounds++ {
			nw.RunFor(chat.RoomSyncInterval)
			all := true
			for _, tn := range nodes[1:] {
				all = all && len(roomLog(tn, "#wide")) == 1
			}
			if all {
				break
			}
		}
		if rounds == 6 {
			var missing []string
			for _, tn := range nodes[1:] {
				if len(roomLog(tn, "#wide")) != 1 {
					missing = append(missing, tn.Nickname())
				}
			}
			t.Fatalf("after 6 rounds %v still lack the message", missing)
		}
		t.Logf("every member had the message after %d round(s)", rounds+1)
		after := sends()
		for i := range nodes {
			if d := after[i] - before[i]; d > 8*(rounds+1) {
				t.Errorf("%s sent %d summaries in %d round(s), want at most 8 a round", nodes[i].Nickname(), d, rounds+1)
			}
		}
	})
}

// A room link stays open through minutes of quiet (a member of a big room
// writes on most links only when it posts), so a post after the quiet
// costs what one before it did, not a new handshake.
func TestRoomLinkOutlastsQuiet(t *testing.T) {
	netsim.Test(t, func(t *testing.T, nw *netsim.Network) {
		nodes, _ := roomLAN(t, nw, 2, "p%d", 1, "#q")
		alice, bob := nodes[0], nodes[1]
		cost := func(text string, want int) int64 {
			before := nw.Stats().StreamBytes
			post(t, alice, "#q", text)
			if !nw.RunUntil(func() bool { return len(roomLog(bob, "#q")) == want }, 5*time.Second) {
				t.Fatalf("bob did not get %q", text)
			}
			nw.Settle()
			return nw.Stats().StreamBytes - before
		}
		cost("first", 1)
		nw.RunFor(2 * chat.RoomSyncInterval) // the summaries after it
		warm := cost("warm1", 2)
		nw.RunFor(5 * time.Minute) // past the receive idle timeout (2 min)
		quiet := cost("warm2", 3)
		if quiet != warm {
			t.Errorf("a post after 5 quiet minutes cost %d stream bytes, one on an open link %d: the link was closed", quiet, warm)
		}
	})
}

package real

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/parlance-chat/parlance/e2e/internal/proc"
)

// Rooms (issue 12) with the real program: members meet through their
// announces (local mode) or registrations (internet mode), and room lines
// travel over their pairwise sessions.

// roomLineRE matches a room line "[HH:MM:SS] #room nick: text" and
// captures the nickname and the text.
func roomLineRE(room string) *regexp.Regexp {
	return re(`\[\d\d:\d\d:\d\d\] %s (\S+): (.*)$`, q(room))
}

// joinRoom types /join room, waits for its answer and returns the
// members it lists ("Joined #room (public room, 2 other member(s):
// alice#ABCDEFG, bob#HIJKLMN). ...").
func (p *peer) joinRoom(room string) []string {
	p.t.Helper()
	m := p.Mark()
	p.Input("/join " + room)
	_, line := p.WaitLine(m, re(`Joined %s \(public room, `, q(room)), wait)
	var nicks []string
	for _, sub := range memberRE.FindAllStringSubmatch(line, -1) {
		nicks = append(nicks, sub[1])
	}
	return nicks
}

var memberRE = regexp.MustCompile(`([^\s,:()]+)#[A-Z2-7]{7}\b`)

// waitMembers waits until p knows every nick of others as a member of
// room: listed by its /join (listed), or told since by "* nick joined
// room" (a peer known before that joins later).
func (p *peer) waitMembers(room string, listed, others []string) {
	p.t.Helper()
	for _, nick := range others {
		if !slices.Contains(listed, nick) {
			p.WaitLine(0, re(`\* %s joined %s$`, q(nick), q(room)), wait)
		}
	}
}

// postRoom types text as a plain line (to the current room) and waits for
// p's own copy, "[HH:MM:SS] room you: text".
func (p *peer) postRoom(room, text string) {
	p.t.Helper()
	m := p.Mark()
	p.Input(text)
	_, line := p.WaitLine(m, re(`\[\d\d:\d\d:\d\d\] %s you: %s( |$)`, q(room), q(text)), wait)
	if strings.Contains(line, "nobody else here") {
		p.t.Errorf("%s: posted %q with nobody else in %s: %q", p.nick, text, room, line)
	}
}

// waitRoomLines waits until p has shown every line of want (nick → text)
// in room, from line 0.
func (p *peer) waitRoomLines(room string, want map[string]string) {
	p.t.Helper()
	for nick, text := range want {
		p.WaitLine(0, re(`\[\d\d:\d\d:\d\d\] %s %s: %s$`, q(room), q(nick), q(text)), wait)
	}
}

// checkRoomLines checks that p printed each line of want exactly once in
// room, and no other member's line there. Lines of a /history answer are
// indented, so they do not count.
func checkRoomLines(t *testing.T, p *peer, room string, want map[string]string) {
	t.Helper()
	got := map[string]int{}
	lineRE := roomLineRE(room)
	for _, l := range p.Lines() {
		m := lineRE.FindStringSubmatch(l)
		if m == nil || m[1] == "you" {
			continue
		}
		if want[m[1]] != m[2] {
			t.Errorf("%s printed %q, a line nobody posted", p.nick, l)
			continue
		}
		got[m[1]]++
	}
	for nick := range want {
		if got[nick] != 1 {
			t.Errorf("%s printed %s's line %d times, want once", p.nick, nick, got[nick])
		}
	}
}

// Twenty local-mode processes on one host: once all see each other, all
// /join #room, and each knows the 19 others as members (listed by its
// /join, or told as they join after it); each types one plain line (no /), which goes to the
// current room; every process prints each of the other 19 lines exactly
// once, as "[HH:MM:SS] #room nick: text", and its own as "you". At the
// end /history #room holds all twenty, and every process exits 0 at end
// of input.
func TestRealLocalRoom20(t *testing.T) {
	const n, room = 20, "#room"
	s := newScene(t)
	var all []*peer
	for i := range n {
		all = append(all, s.startLocal(fmt.Sprintf("p%02d", i+1)))
	}
	wantFor := talkInRoom(all, room, func(nick string) string { return "hello from " + nick + ", a plain line" })
	for _, p := range all {
		m := p.Mark()
		p.Input("/history " + room + " 50")
		p.WaitLine(m, re(`Last %d message\(s\) in %s:$`, n, q(room)), wait)
	}
	for _, p := range all {
		p.quit()
	}
	for _, p := range all {
		checkRoomLines(t, p, room, wantFor(p))
	}
	noTerminalControls(t, all...)
}

// A room across real NATs in internet mode (nftables routers, see
// TestRealNAT): alice behind a cone NAT, bob behind a symmetric one,
// carol on a public address, all on one bootstrap-server. All /join #nat
// and know the two others as members; each posts a plain line; every member
// prints the two others' lines exactly once, though alice and bob can
// only reach each other through the server's relay.
func TestRealNATRoom(t *testing.T) {
	const room = "#nat"
	n := newNATScene(t)
	cone := n.in.Router(t, proc.Cone)
	symmetric := n.in.Router(t, proc.Symmetric)
	n.routers = append(n.routers, cone, symmetric)
	ans, aip := cone.Host(t)
	bns, bip := symmetric.Host(t)
	cns, cip := n.in.PublicHost(t)
	na := n.startPeer(ans, "alice", aip, cone.WANIP)
	nb := n.startPeer(bns, "bob", bip, symmetric.WANIP)
	nc := n.startPeer(cns, "carol", cip, cip)
	all := []*peer{na.peer, nb.peer, nc.peer}
	wantFor := talkInRoom(all, room, func(nick string) string { return "hello across the NATs from " + nick })
	// Only the relay joins a cone NAT and a symmetric one.
	if a, b := na.pathTo("bob"), nb.pathTo("alice"); a != "relayed" || b != "relayed" {
		t.Errorf("paths alice -> bob %q, bob -> alice %q; want relayed both ways", a, b)
	}
	for _, p := range all {
		p.quit()
	}
	for _, p := range all {
		checkRoomLines(t, p, room, wantFor(p))
	}
	alive(t, n.server)
	noTerminalControls(t, all...)
}

// talkInRoom waits until every peer lists every other (so that every
// later room join is told), has all /join room and wait to see the others
// as members, has each post text(its nick) as a plain line, and waits
// until each printed every other's line. It returns what each must have
// printed: the others' lines by nickname.
func talkInRoom(all []*peer, room string, text func(nick string) string) (wantFor func(*peer) map[string]string) {
	others := func(p *peer) []string {
		var out []string
		for _, o := range all {
			if o != p {
				out = append(out, o.nick)
			}
		}
		return out
	}
	for _, p := range all {
		for _, nick := range others(p) {
			p.waitJoined(0, nick)
		}
	}
	listed := map[*peer][]string{}
	for _, p := range all {
		listed[p] = p.joinRoom(room)
	}
	for _, p := range all {
		p.waitMembers(room, listed[p], others(p))
	}
	for _, p := range all {
		p.postRoom(room, text(p.nick))
	}
	wantFor = func(p *peer) map[string]string {
		w := map[string]string{}
		for _, nick := range others(p) {
			w[nick] = text(nick)
		}
		return w
	}
	for _, p := range all {
		p.waitRoomLines(room, wantFor(p))
	}
	return wantFor
}

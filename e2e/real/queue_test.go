package real

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Crash safety of the message store and the offline queue: a message
// reported Queued, Sent or Delivered is on disk first, so a sender killed
// with SIGKILL after queueing delivers everything when restarted, and a
// receiver killed in the middle of a stream loses nothing and shows
// nothing twice. Each peer keeps its profile (identity key, pinned keys,
// messages.db) in a data dir of its own, which its next run opens again.

// streamWait bounds the waits of the long stream: thousands of messages
// stored, shown and acknowledged, and a reconnection after the kill.
const streamWait = 60 * time.Second

// startRun starts run number run of a local-mode peer whose profile lives
// under dataDir, and waits for its banner. The process is named after the
// run, so that a failure's logs tell the runs apart.
func (s *scene) startRun(nick, dataDir string, run int) *peer {
	s.t.Helper()
	args := []string{"--nickname", nick, "--log-level", "debug", "--mode", "local", "--interface", "lo", "--data-dir", dataDir}
	p := &peer{Process: s.ns.Start(s.t, fmt.Sprintf("%s (run %d)", nick, run), s.parlance, args), t: s.t, nick: nick}
	_, line := p.WaitLine(0, bannerRE, wait)
	p.port, _ = strconv.Atoi(bannerRE.FindStringSubmatch(line)[2])
	return p
}

// kill kills the peer with SIGKILL and waits until it is gone, which
// releases its store's lock.
func (p *peer) kill() {
	p.t.Helper()
	p.Signal(syscall.SIGKILL)
	p.Wait(wait)
}

// waitCount waits until n stdout lines from index from on match re and
// returns them.
func (p *peer) waitCount(from int, re *regexp.Regexp, n int, timeout time.Duration) []string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []string
	defer func() { // also on a failed wait (Goexit): say how far it got
		if len(got) < n {
			p.t.Logf("%s: %d of %d lines matching %q", p.Name(), len(got), n, re)
		}
	}()
	for i := from; len(got) < n; i++ {
		left := time.Until(deadline)
		if left <= 0 {
			p.t.Fatalf("%s: not %d lines matching %q within %v", p.Name(), n, re, timeout)
		}
		var line string
		i, line = p.WaitLine(i, re, left)
		got = append(got, line)
	}
	return got
}

// matching returns the first submatch of re in each line that matches.
func matching(lines []string, re *regexp.Regexp) []string {
	var out []string
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// count returns how many lines match re.
func count(lines []string, re *regexp.Regexp) int {
	n := 0
	for _, l := range lines {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// texts returns the message texts m0000, m0001, ... m(n-1).
func texts(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%04d", i)
	}
	return out
}

// sendAll types /send to each text, all lines in one write, so that the
// messages are posted back to back and pipelined.
func (p *peer) sendAll(to string, texts []string) {
	p.t.Helper()
	var b strings.Builder
	for _, text := range texts {
		fmt.Fprintf(&b, "/send %s %s\n", to, text)
	}
	p.Input(strings.TrimSuffix(b.String(), "\n"))
}

var historyDayRE = re(`  -- \d{4}-\d\d-\d\d --$`)

// history runs /history name n and returns the message lines it lists,
// oldest first, without the date lines and the indent.
func (p *peer) history(name string, n int) []string {
	p.t.Helper()
	m := p.Mark()
	p.Input(fmt.Sprintf("/history %s %d", name, n))
	i, line := p.WaitLine(m, re(`(No messages with %s yet\.|Last (\d+) message\(s\) with %s:)$`, q(name), q(name)), wait)
	sub := re(`Last (\d+) message\(s\) with`).FindStringSubmatch(line)
	if sub == nil {
		return nil
	}
	total, _ := strconv.Atoi(sub[1])
	anyLine := regexp.MustCompile(``)
	var out []string
	for j := i + 1; len(out) < total; j++ {
		_, l := p.WaitLine(j, anyLine, wait)
		if !historyDayRE.MatchString(l) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// Outcomes of alice's /send bob, and messages from alice in bob's chat
// and in the histories.
var (
	queuedRE         = re(`Queued for bob: `)
	deliveredNowRE   = re(`Delivered to bob\.$`)
	deliveredLaterRE = re(`Delivered to bob: "(m\d{4})" \(queued `)
	deliveredAnyRE   = re(`Delivered to bob(?:\.$|: "m\d{4}" \(queued )`)
	failedRE         = re(`(Not sent|Not confirmed|Sent to|Expired)\b`)
	// outcomeRE matches the first outcome of any /send, failures included.
	outcomeRE   = re(`(Delivered to bob\.$|Queued for bob: |(Not sent|Not confirmed|Sent to)\b)`)
	fromAliceRE = re(`\[\d\d:\d\d:\d\d\] alice: (m\d{4})$`)
	// History lines: sent ones with no mark are delivered and encrypted.
	sentDeliveredRE = regexp.MustCompile(`^\[\d\d:\d\d:\d\d\] you (?:→|->) bob: (.*)$`)
	receivedRE      = regexp.MustCompile(`^\[\d\d:\d\d:\d\d\] alice: (.*)$`)
)

// A sender killed with SIGKILL right after it reported its messages
// Queued has them on disk: restarted, it says so at start and delivers
// each, in order, once the peer is back; the peer shows each exactly
// once, and the sender's queue is empty afterwards, its history complete.
func TestRealQueueSenderKilled(t *testing.T) {
	const k = 20
	s := newScene(t)
	aliceDir, bobDir := t.TempDir(), t.TempDir()
	alice := s.startRun("alice", aliceDir, 1)
	bob := s.startRun("bob", bobDir, 1)
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	chat(alice, bob, "hello bob") // alice pins bob's key

	ma := alice.Mark()
	bob.quit()
	alice.waitLeft(ma, "bob")

	want := texts(k)
	ma = alice.Mark()
	alice.sendAll("bob", want)
	alice.waitCount(ma, queuedRE, k, wait)
	alice.kill()
	for _, l := range alice.Lines()[ma:] {
		if failedRE.MatchString(l) || deliveredAnyRE.MatchString(l) {
			t.Errorf("alice (run 1) with bob away: %q, want only Queued", l)
		}
	}

	alice = s.startRun("alice", aliceDir, 2)
	alice.WaitLine(0, re(`%d message\(s\) queued: %d for bob\. `, k, k), wait)
	bob = s.startRun("bob", bobDir, 2)
	// Each goes out once bob is seen; alice tells it in a line of its own.
	delivered := matching(alice.waitCount(0, deliveredLaterRE, k, wait), deliveredLaterRE)
	slices.Sort(delivered)
	if !slices.Equal(delivered, want) {
		t.Errorf("alice (run 2) reported delivered %q, want each of %q once", delivered, want)
	}
	bob.waitMessage(0, "alice", want[k-1])

	m := alice.Mark()
	alice.Input("/queue")
	if _, l := alice.WaitLine(m, re(`(No messages queued\.|\d+ message\(s\) queued:)$`), wait); !re(`No messages`).MatchString(l) {
		t.Errorf("alice's /queue after the deliveries: %q, want no messages queued", l)
	}
	var sent []string
	for _, l := range alice.history("bob", 30) {
		sub := sentDeliveredRE.FindStringSubmatch(l)
		if sub == nil {
			t.Errorf("alice's /history bob: %q, want a message sent to bob and delivered (no mark)", l)
			continue
		}
		sent = append(sent, sub[1])
	}
	if wantSent := append([]string{"hello bob"}, want...); !slices.Equal(sent, wantSent) {
		t.Errorf("alice's /history bob lists %q, want %q", sent, wantSent)
	}

	bob.quit() // its stdout is complete once it has exited
	alice.quit()
	if got := matching(bob.Lines(), fromAliceRE); !slices.Equal(got, want) {
		t.Errorf("bob (run 2) showed %q from alice, want %q, each once, in order", got, want)
	}
	if got := matching(alice.Lines(), deliveredLaterRE); len(got) != k {
		t.Errorf("alice (run 2) reported %d deliveries, want %d", len(got), k)
	}
	for _, l := range alice.Lines() {
		if failedRE.MatchString(l) {
			t.Errorf("alice (run 2): %q", l)
		}
	}
}

// A receiver killed with SIGKILL in the middle of a pipelined stream, and
// restarted, ends up with every message stored exactly once, in order;
// over its two runs it shows none twice (those it stored but had not yet
// shown when killed are in neither run's output, only in its history).
// The sender reports each message either Delivered, or Queued and then
// delivered later, and nothing else.
func TestRealQueueReceiverKilledMidStream(t *testing.T) {
	const (
		m      = 3000
		killAt = 500 // bob is killed once it has shown this many
	)
	s := newScene(t)
	aliceDir, bobDir := t.TempDir(), t.TempDir()
	alice := s.startRun("alice", aliceDir, 1)
	bob := s.startRun("bob", bobDir, 1)
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")

	want := texts(m)
	alice.sendAll("bob", want)
	bob.WaitLine(0, re(`\[\d\d:\d\d:\d\d\] alice: %s$`, want[killAt-1]), streamWait)
	bob.kill()
	shown1 := matching(bob.Lines(), fromAliceRE)
	t.Logf("bob (run 1) showed %d messages when killed; alice had reported %d delivered", len(shown1), count(alice.Lines(), deliveredNowRE))
	if len(shown1) == m {
		t.Errorf("bob (run 1) showed all %d messages before the kill: the kill was not mid-stream (raise m)", m)
	}

	// bob comes back once alice has posted them all: the killed instance
	// stays listed until its timeout, and a /send bob meanwhile would be
	// refused as ambiguous between the two.
	alice.waitCount(0, outcomeRE, m, streamWait)
	bob = s.startRun("bob", bobDir, 2)
	alice.waitCount(0, deliveredAnyRE, m, streamWait)

	// Every message is stored once, in order.
	stored := historyTexts(t, bob, "alice", 2*m, receivedRE, "a message received from alice")
	if !slices.Equal(stored, want) {
		t.Errorf("bob's /history alice lists %d messages, want m0000..m%04d each once in order; first differences: %s",
			len(stored), m-1, firstDiffs(stored, want, 5))
	}
	sent := historyTexts(t, alice, "bob", 2*m, sentDeliveredRE, "a message sent to bob and delivered (no mark)")
	if !slices.Equal(sent, want) {
		t.Errorf("alice's /history bob lists %d delivered messages, want m0000..m%04d; first differences: %s",
			len(sent), m-1, firstDiffs(sent, want, 5))
	}

	bob.quit()
	alice.quit()

	// Over both runs bob showed a prefix of the stream, then a suffix, with
	// at most a gap between them: the messages stored but not yet shown
	// when it was killed, which it drops as duplicates when they come again.
	shown2 := matching(bob.Lines(), fromAliceRE)
	if !slices.Equal(shown1, want[:len(shown1)]) {
		t.Errorf("bob (run 1) showed %d messages, not m0000 onwards each once in order; first differences: %s",
			len(shown1), firstDiffs(shown1, want[:len(shown1)], 5))
	}
	if len(shown2) > m-len(shown1) || !slices.Equal(shown2, want[m-len(shown2):]) {
		t.Errorf("bob (run 2) showed %d messages, not the rest of the stream up to m%04d each once in order (run 1 showed %d); first differences: %s",
			len(shown2), m-1, len(shown1), firstDiffs(shown2, want[max(0, m-len(shown2)):], 5))
	}
	t.Logf("bob showed %d messages in run 1 and %d in run 2; %d stored but not shown (cut by the kill)",
		len(shown1), len(shown2), m-len(shown1)-len(shown2))

	// Alice: one outcome per message, each Queued one delivered later,
	// nothing failed.
	lines := alice.Lines()
	now, queued := count(lines, deliveredNowRE), count(lines, queuedRE)
	later := matching(lines, deliveredLaterRE)
	if now+queued != m {
		t.Errorf("alice reported %d Delivered and %d Queued, want %d outcomes in all", now, queued, m)
	}
	if len(later) != queued || len(later) != len(slices.Compact(slices.Sorted(slices.Values(later)))) {
		t.Errorf("alice reported %d later deliveries (%d distinct) for %d Queued messages, want one each",
			len(later), len(slices.Compact(slices.Sorted(slices.Values(later)))), queued)
	}
	for _, l := range lines {
		if failedRE.MatchString(l) {
			t.Errorf("alice: %q", l)
		}
	}
	t.Logf("alice: %d reported delivered at once, %d queued and then delivered", now, queued)
}

// firstDiffs describes up to n positions where got and want differ.
func firstDiffs(got, want []string, n int) string {
	var d []string
	for i := 0; i < max(len(got), len(want)) && len(d) < n; i++ {
		g, w := "(none)", "(none)"
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			d = append(d, fmt.Sprintf("[%d] %s, want %s", i, g, w))
		}
	}
	if len(d) == 0 {
		return "none"
	}
	return strings.Join(d, "; ")
}

// historyTexts runs p's /history with and returns the texts of its
// lines, each of which must match line (text in the first group); what
// says what a line should be.
func historyTexts(t *testing.T, p *peer, with string, n int, line *regexp.Regexp, what string) []string {
	t.Helper()
	var texts []string
	for _, l := range p.history(with, n) {
		sub := line.FindStringSubmatch(l)
		if sub == nil {
			t.Errorf("%s's /history %s: %q, want %s", p.nick, with, l, what)
			continue
		}
		texts = append(texts, sub[1])
	}
	return texts
}

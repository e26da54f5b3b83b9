package sim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
)

// The attacks of the threat model (SECURITY.md), played on netsim: here a
// man in the middle that reads, rewrites and replays the streams between
// our peers (the OnPacket hook, security_tap_test.go); in
// security_peers_test.go an impostor with its own key, an attacker host
// that strips, replays and forges announces, a peer whose key changes and
// an original client next to ours; in security_property_test.go random
// schedules through a man in the middle.

// A man in the middle rewrites the transport frame that carries a message
// from alice to bob: a ciphertext byte, a tag byte, the length prefix, or
// the whole frame swapped for a plaintext chat line claiming alice.
// Bob never shows an altered text: a transport frame that fails to
// authenticate closes the session at once, bob's user is told (an
// EventSecurity in the instant the frame arrives) and the message is not
// shown. On a fresh connection alice's send ends Queued, without an
// error, within one hop of the tampering (bob's close breaks the
// connection before the ack); the tampering hit one frame only, so after
// the outbox's first retry wait a new session delivers the message
// intact, exactly once, within one session's hops, and alice is told
// (EventDelivered); alice dialled twice, bob raised no second event. On
// a kept-open connection the send is redialled once at once and Delivered
// intact, exactly once. A tampered ack (bob to alice) makes alice resend
// on a new session; bob shows the message once (it knows the id). Every
// rewrite fired (FaultRewrite).
func TestSecurityMITMRewrite(t *testing.T) { simTest(t, mitmRewrite) }

// The man in the middle's run is a function of the seed: the rewrite
// scenario twice gives equal traces (session keys come from the seed).
func TestSecurityDeterminism(t *testing.T) {
	netsim.CheckDeterminism(t, netsim.SeedFromEnv(t), clusterBody(mitmRewrite))
}

func mitmRewrite(t *testing.T, c *cluster) {
	_, ps := startNodes(t, c, "alice", "bob")
	alice, bob := ps[0], ps[1]
	tp := newTap(c.nw)

	// The next transport frame in the chosen direction gets rewritten.
	// Segments 0 and 1 from the initiator are its handshake messages
	// (the preamble with -> e, then -> s, se); segment 0 from the
	// responder is <- e, ee, s, es.
	var (
		rewrite   func([]byte) []byte
		toBob     bool
		tampered  []time.Duration // arrival of each rewritten segment
		rewritten int
	)
	tp.setPolicy(func(s *tapped) netsim.Verdict {
		if rewrite == nil {
			return netsim.Verdict{}
		}
		first := 1 // responder's first transport frame
		if toBob {
			first = 2
		}
		if (toBob && (s.From != alice.Host() || s.To != bob.Host())) ||
			(!toBob && (s.From != bob.Host() || s.To != alice.Host())) || s.Seg < first {
			return netsim.Verdict{}
		}
		out := rewrite(s.Payload)
		rewrite = nil
		tampered = append(tampered, s.Time)
		rewritten++
		return netsim.Verdict{Replace: out}
	})
	arm := func(dirToBob bool, f func([]byte) []byte) {
		tp.do(func() { rewrite, toBob = f, dirToBob })
	}
	lastTamper := func() (at time.Duration) {
		tp.do(func() { at = tampered[len(tampered)-1] })
		return at
	}
	flip := func(i func(frame []byte) int) func([]byte) []byte {
		return func(b []byte) []byte {
			out := bytes.Clone(b)
			out[i(out)] ^= 0x20
			return out
		}
	}
	var msgs []*message

	for i, tc := range []struct {
		what string
		f    func([]byte) []byte
	}{
		{"a ciphertext byte flipped", flip(func(b []byte) int { return 2 + (len(b)-2-16)/2 })},
		{"a tag byte flipped", flip(func(b []byte) int { return len(b) - 1 })},
		{"the length prefix shortened", func(b []byte) []byte {
			out := bytes.Clone(b)
			binary.BigEndian.PutUint16(out, binary.BigEndian.Uint16(out)-1)
			return out
		}},
		{"forged plaintext in the frame", func(b []byte) []byte {
			line, _ := protocol.EncodeChatLine(&protocol.ChatMessage{From: "alice", Content: "forged"})
			out := binary.BigEndian.AppendUint16(nil, uint16(len(line)+16))
			return append(append(out, line...), make([]byte, 16)...)
		}},
	} {
		step(t, "fresh connection, "+tc.what, func() {
			before, dials := len(securityEvents(bob)), countSyns(tp, alice.Host(), bob.Host())
			arm(true, tc.f)
			m := send(t.Context(), alice, bob, "bob", fmt.Sprintf("secret %d", i))
			msgs = append(msgs, m)
			c.nw.Settle()
			at := lastTamper()
			if m.err != nil || m.res.Status != chat.Queued {
				t.Errorf("%v: want queued (bob closed the session before the ack)", m)
			}
			if d := m.done - at; d > hop(lanLink) {
				t.Errorf("alice's send ended %v after the tampering, want within one hop (%v)", d, hop(lanLink))
			}
			if got := shown(bob, m.text); len(got) != 0 {
				t.Errorf("bob showed the tampered message: %+v", got)
			}
			evs := securityEvents(bob)[before:]
			if len(evs) != 1 || !strings.Contains(evs[0].Text, "altered") {
				t.Fatalf("bob's security events: %+v, want one saying the message was altered", evs)
			}
			if d := c.at(evs[0].Time) - at; d < 0 || d > quantum {
				t.Errorf("bob told its user %v after the tampered frame arrived, want in the same instant", d)
			}

			// The resend: intact, once, on a new session.
			bound := queueRetryMin + sessionHops*hop(lanLink) + quantum
			if !c.nw.RunUntil(func() bool { return len(deliveredEvents(alice, m.res.Seq)) > 0 }, bound) {
				t.Errorf("alice was not told of the delivery of %v within %v of the send", m, bound)
			}
			if got := shown(bob, m.text); len(got) != 1 || !got[0].Encrypted || got[0].Key != alice.Chat().PublicKey() {
				t.Errorf("after the resend bob showed %+v, want the message once, encrypted, with alice's key", got)
			}
			if k := countSyns(tp, alice.Host(), bob.Host()) - dials; k != 2 {
				t.Errorf("alice dialled bob %d times, want twice (the session the tampering broke, one for the resend)", k)
			}
			if k := len(securityEvents(bob)) - before; k != 1 {
				t.Errorf("bob raised %d security events, want 1", k)
			}
			// The next case needs a fresh connection: alice closes this
			// one once it has been idle long enough.
			c.nw.RunFor(chat.DefaultIdleTimeout + hop(lanLink))
		})
	}

	step(t, "kept-open connection", func() {
		msgs = append(msgs, mustDeliver(t, alice, bob, "bob", "untouched"))
		// Let alice's queue finish with that connection (it is idle, kept
		// open), so that the next message starts a new exchange on it
		// rather than following on in the same one.
		c.nw.Settle()
		before, dials := len(securityEvents(bob)), countSyns(tp, alice.Host(), bob.Host())
		arm(true, flip(func(b []byte) int { return 3 }))
		m := mustDeliver(t, alice, bob, "bob", "secret on a kept-open session")
		msgs = append(msgs, m)
		c.nw.Settle()
		if k := countSyns(tp, alice.Host(), bob.Host()) - dials; k != 1 {
			t.Errorf("alice dialled bob %d times, want once (one redial of the kept-open session)", k)
		}
		if got := shown(bob, m.text); len(got) != 1 || !got[0].Encrypted || got[0].Key != alice.Chat().PublicKey() {
			t.Errorf("bob showed %+v, want the message once, encrypted, with alice's key", got)
		}
		if k := len(securityEvents(bob)) - before; k != 1 {
			t.Errorf("bob raised %d security events, want 1", k)
		}
	})

	step(t, "tampered ack", func() {
		before, dials := len(securityEvents(alice)), countSyns(tp, alice.Host(), bob.Host())
		arm(false, flip(func(b []byte) int { return 4 }))
		m := mustDeliver(t, alice, bob, "bob", "acked twice, shown once")
		msgs = append(msgs, m)
		c.nw.Settle()
		if k := countSyns(tp, alice.Host(), bob.Host()) - dials; k != 1 {
			t.Errorf("alice dialled bob %d times, want once (a resend on a new session)", k)
		}
		if got := shown(bob, m.text); len(got) != 1 {
			t.Errorf("bob showed the message %d times, want once (the resend has the same id)", len(got))
		}
		t.Logf("alice raised %d security events for the tampered ack", len(securityEvents(alice))-before)
	})

	onlySentTexts(t, bob, msgs)
	onlySentTexts(t, alice, msgs)
	var fired int
	tp.do(func() { fired = rewritten })
	if got := c.nw.FaultCount(netsim.FaultRewrite); got != int64(fired) || fired != 6 {
		t.Errorf("FaultRewrite %d, the tap rewrote %d segments, want 6", got, fired)
	}
}

// A passive listener on the path reads every byte of every stream and
// datagram: no text sent between our peers, and not even the JSON of a
// chat line, appears in any of them. The same check on an original
// peer's traffic finds its texts, so the check can fail.
func TestSecurityMITMReadsNothing(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lan, ps := startNodes(t, c, "alice", "bob", "carol")
		tp := newTap(c.nw)
		olga := startOriginalPeer(t, c, c.nw.AddHost("olga-host", lan), "olga")
		c.nw.RunFor(hop(lanLink) + chat.QueryAnswerMax + hop(lanLink) + quantum)

		secrets := sendAllPairs(t.Context(), ps, "meet me at the old mill at dawn")
		for _, m := range secrets {
			if m.err != nil || !m.res.Encrypted {
				t.Fatalf("%v (encrypted %v)", m, m.res.Encrypted)
			}
		}
		// Two equal texts on one session: still no plaintext.
		secrets = append(secrets, mustDeliver(t, ps[0], ps[1], "bob", "same words twice"), mustDeliver(t, ps[0], ps[1], "bob", "same words twice"))
		c.nw.Settle()

		// The control: plaintext with the original peer, both ways.
		openText := "olga reads this in the clear"
		res, err := ps[0].Chat().Send(t.Context(), "olga", openText)
		if err != nil || res.Encrypted {
			t.Fatalf("send to the original peer: %+v %v", res, err)
		}
		if err := olga.Send(t.Context(), "bob", "and this too"); err != nil {
			t.Fatal(err)
		}
		c.nw.RunFor(hop(lanLink))

		olgaAddr := netip.AddrPortFrom(c.nw.Host("olga-host").IP(), olga.Port())
		var ours, control []byte
		for k, data := range tp.streams() {
			if k[0].Addr() == olgaAddr.Addr() || k[1] == olgaAddr {
				control = append(control, data...)
			} else {
				ours = append(ours, data...)
			}
		}
		var datagrams []byte
		for _, p := range tp.packets() {
			if p.Proto == "udp" {
				datagrams = append(datagrams, p.Payload...)
				datagrams = append(datagrams, 0)
			}
		}
		if len(ours) == 0 || len(datagrams) == 0 {
			t.Fatalf("the tap captured %d stream bytes between our peers and %d datagram bytes", len(ours), len(datagrams))
		}
		for _, m := range secrets {
			for what, b := range map[string][]byte{"a stream between our peers": ours, "a datagram": datagrams} {
				if bytes.Contains(b, []byte(m.text)) {
					t.Errorf("%q appears in %s", m.text, what)
				}
			}
		}
		if bytes.Contains(ours, []byte(`"content"`)) {
			t.Errorf("a chat line's JSON appears in a stream between our peers")
		}
		for _, text := range []string{openText, "and this too"} {
			if !bytes.Contains(control, []byte(text)) {
				t.Errorf("the control failed: %q (plaintext to or from the original peer) is not in the captured streams", text)
			}
		}
		t.Logf("captured %d bytes of our streams, %d of the original's, %d of datagrams", len(ours), len(control), len(datagrams))
	})
}

// A man in the middle replays data segments inside the stream (each
// delivered twice in a row): the handshake's first message, its last,
// the responder's, the first transport frame, an ack. Bob never shows a
// message twice or altered; a replayed transport frame closes the session
// and bob's user is told. Every send ends Delivered (then shown once) or,
// when the replay broke the session before the ack, Queued (shown at most
// once so far), never in an error; the next send to bob goes at once on a
// new session, Delivered, and a queued message goes before it on that
// session: it is then delivered (the sender's store says so) and shown
// exactly once, before the next one.
func TestSecurityMITMReplayInStream(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		_, ps := startNodes(t, c, "alice", "bob")
		alice, bob := ps[0], ps[1]
		tp := newTap(c.nw)
		var (
			seg   = -1 // the segment to replay in the chosen direction
			toBob bool
			done  int
		)
		tp.setPolicy(func(s *tapped) netsim.Verdict {
			from, to := alice.Host(), bob.Host()
			if !toBob {
				from, to = to, from
			}
			if seg < 0 || s.From != from || s.To != to || s.Seg != seg {
				return netsim.Verdict{}
			}
			seg = -1
			done++
			return netsim.Verdict{Duplicate: true}
		})
		var msgs []*message
		for i, tc := range []struct {
			what  string
			toBob bool
			seg   int
		}{
			{"the preamble and the first handshake message", true, 0},
			{"the initiator's last handshake message", true, 1},
			{"the responder's handshake message", false, 0},
			{"the first transport frame", true, 2},
			{"the first ack", false, 1},
		} {
			step(t, tc.what, func() {
				// A fresh session each time: bob's idle connection goes.
				c.nw.ResetStreams([]*netsim.Host{alice.Host()}, []*netsim.Host{bob.Host()})
				c.nw.Settle()
				tp.do(func() { seg, toBob = tc.seg, tc.toBob })
				before := len(securityEvents(bob))
				m := send(t.Context(), alice, bob, "bob", fmt.Sprintf("replayed %d", i))
				msgs = append(msgs, m)
				c.nw.RunFor(hop(lanLink)) // what alice wrote before she gave up lands
				got := shown(bob, m.text)
				switch {
				case m.err != nil:
					t.Errorf("%v: want delivered or queued", m)
				case m.res.Status == chat.Delivered && len(got) != 1:
					t.Errorf("%v: shown %d times, want delivered and shown once", m, len(got))
				case m.res.Status != chat.Delivered && m.res.Status != chat.Queued:
					t.Errorf("%v: want delivered or queued", m)
				case len(got) > 1:
					t.Errorf("%v: shown %d times", m, len(got))
				}
				t.Logf("%v; shown %d times; %d security events at bob", m, len(got), len(securityEvents(bob))-before)
				if tc.seg == 2 && tc.toBob && len(securityEvents(bob)) == before {
					t.Errorf("a replayed transport frame raised no security event at bob")
				}
				// The session is usable again at once; a queued message
				// goes first.
				next := mustDeliver(t, alice, bob, "bob", fmt.Sprintf("after replay %d", i))
				msgs = append(msgs, next)
				if m.err == nil && m.res.Status == chat.Queued {
					if row, err := storedRow(t.Context(), m); err != nil || row.Status != store.Delivered {
						t.Errorf("%v: after the next send alice's store holds %+v (%v), want it delivered", m, row, err)
					}
					if got := shownTexts(bob); len(shown(bob, m.text)) != 1 || slices.Index(got, m.text) > slices.Index(got, next.text) {
						t.Errorf("%v: bob showed %q, want it once, before %q", m, got, next.text)
					}
				}
			})
		}
		c.nw.Settle()
		onlySentTexts(t, bob, msgs)
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob}, msgs) {
			t.Error(err)
		}
		if got := c.nw.FaultCount(netsim.FaultReplay); got != int64(done) || done != 5 {
			t.Errorf("FaultReplay %d, the tap replayed %d segments, want 5", got, done)
		}
	})
}

// An attacker host that captured alice's whole connection to bob (the
// handshake, two messages and the close) opens its own connection to bob
// and writes it all again, at once and then message by message: bob
// answers the replayed first handshake message with a fresh ephemeral
// key, so the replayed rest fails to authenticate and bob closes the
// connection: nothing is shown.
func TestSecurityReplayCapturedSession(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lan, ps := startNodes(t, c, "alice", "bob")
		alice, bob := ps[0], ps[1]
		tp := newTap(c.nw)
		msgs := []*message{
			mustDeliver(t, alice, bob, "bob", "transfer 100 to carol"),
			mustDeliver(t, alice, bob, "bob", "and again"),
		}
		c.nw.RunFor(chat.DefaultIdleTimeout + time.Second) // alice closes the idle session
		syn, ok := tp.firstSyn(alice.Host(), bob.Addr())
		if !ok {
			t.Fatal("the tap saw no connection from alice to bob")
		}
		var segs [][]byte
		for _, p := range tp.packets() {
			if p.Seg >= 0 && p.Src == syn.Src && p.Dst == bob.Addr() {
				segs = append(segs, p.Payload)
			}
		}
		if len(segs) < 4 {
			t.Fatalf("captured %d segments from alice to bob, want the handshake's 2 and the 2 messages", len(segs))
		}
		shownBefore := len(bob.Rec().Messages())
		eve := c.nw.AddHost("eve", lan)
		for _, tc := range []struct {
			what   string
			writes [][]byte
		}{
			{"all at once", [][]byte{bytes.Join(segs, nil)}},
			{"segment by segment", segs},
		} {
			step(t, tc.what, func() {
				conn, err := eve.DialContext(t.Context(), "tcp", bob.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				local := netip.MustParseAddrPort(conn.LocalAddr().String())
				for _, w := range tc.writes {
					if _, err := conn.Write(w); err != nil {
						t.Logf("write: %v (bob closed)", err)
						break
					}
					c.nw.RunFor(hop(lanLink))
				}
				conn.SetReadDeadline(time.Now().Add(chat.DefaultDialTimeout + time.Second))
				if _, err := io.ReadAll(conn); errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("bob kept the replayed connection open past its handshake timeout")
				}
				// What bob wrote back, as the tap saw it (a reset may
				// discard it before eve reads it).
				var answer []byte
				for _, p := range tp.packets() {
					if p.Seg >= 0 && p.Src == bob.Addr() && p.Dst == local {
						answer = append(answer, p.Payload...)
					}
				}
				if len(answer) == 0 {
					t.Errorf("bob never answered the replayed handshake: the replay did not reach it")
				}
				if bytes.Contains(answer, []byte(`"content"`)) || bytes.Contains(answer, []byte(`"ack"`)) {
					t.Errorf("bob answered the replay with plaintext: %q", answer)
				}
				t.Logf("bob answered %d bytes, then closed", len(answer))
			})
		}
		c.nw.Settle()
		if got := bob.Rec().Messages()[shownBefore:]; len(got) != 0 {
			t.Errorf("bob showed %+v from the replayed session", got)
		}
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob}, msgs) {
			t.Error(err)
		}
	})
}

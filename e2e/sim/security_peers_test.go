package sim

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// An impostor: mallory, with her own key, announces the nickname alice
// after bob and alice have talked (so bob pinned alice's key). Bob lists
// both within discoveryBound; "alice" still means the real alice, and
// nothing bob sends ever reaches mallory (not one connection from bob's
// host to hers); mallory's entry is KEY CHANGED at bob, and sending to
// her by address or instance is refused (ErrKeyChanged); her messages
// reach bob marked KEY CHANGED, with her key, not alice's.
func TestSecurityImpostor(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lan, ps := startNodes(t, c, "alice", "bob")
		alice, bob := ps[0], ps[1]
		tp := newTap(c.nw)
		msgs := []*message{
			mustDeliver(t, bob, alice, "alice", "hello alice"),
			mustDeliver(t, alice, bob, "bob", "hello bob"),
		}
		started := c.nw.Now()
		mallory := c.start(c.nw.AddHost("mallory-host", lan), "alice")
		c.nw.RunFor(discoveryBound(lanLink) + quantum)
		st, ok := statusAt(bob, mallory.Addr())
		if !ok {
			t.Fatalf("bob does not list mallory %v after she started", discoveryBound(lanLink))
		}
		if ev, ok := bob.Rec().FirstAbout(mallory.Instance(), chat.EventPeerJoined); !ok || c.at(ev.Time)-started > discoveryBound(lanLink) {
			t.Errorf("bob learnt of mallory late or never: %+v", ev)
		}
		if st.Trust != trust.StateChanged || st.PubKey != mallory.Chat().PublicKey() {
			t.Errorf("bob lists mallory as %v with key %q, want KEY CHANGED with her own key", st.Trust, st.PubKey)
		}
		if real, _ := statusAt(bob, alice.Addr()); real.Trust != trust.StateNew || real.PubKey != alice.Chat().PublicKey() {
			t.Errorf("bob lists the real alice as %v with key %q, want new (pinned this run) with her key", real.Trust, real.PubKey)
		}

		for i := range 3 {
			m := mustDeliver(t, bob, alice, "alice", fmt.Sprintf("for the real alice %d", i))
			msgs = append(msgs, m)
			if m.res.Peer.Addr != alice.Addr() || m.res.Trust != trust.StateNew {
				t.Errorf("%v went to %v (trust %v), want the real alice", m, m.res.Peer.Addr, m.res.Trust)
			}
		}
		for _, name := range []string{registry.Selector(st.Peer), "alice#" + mallory.Instance()[:8], "alice@" + mallory.Host().IP().String()} {
			res, err := bob.Chat().Send(t.Context(), name, "for mallory's eyes?")
			if !errors.Is(err, chat.ErrKeyChanged) || res.Trust != trust.StateChanged {
				t.Errorf("send to %s: %+v %v, want ErrKeyChanged", name, res, err)
			}
		}
		if _, err := bob.Chat().Trust("alice@" + mallory.Addr().String()); !errors.Is(err, chat.ErrKeyChanged) {
			t.Errorf("trust mallory by address: %v, want ErrKeyChanged (only a fingerprint accepts a new key)", err)
		}

		// Mallory writes to bob as "alice".
		m := mustDeliver(t, mallory, bob, "bob", "it's me, alice, new laptop")
		msgs = append(msgs, m)
		c.nw.Settle()
		if got := shown(bob, m.text); len(got) != 1 || got[0].From != "alice" || got[0].Key != mallory.Chat().PublicKey() ||
			got[0].Trust != trust.StateChanged || !got[0].Encrypted {
			t.Errorf("bob showed mallory's message as %+v, want from alice with mallory's key, KEY CHANGED", got)
		}
		for _, text := range []string{"hello bob"} {
			if got := shown(bob, text); len(got) != 1 || got[0].Key != alice.Chat().PublicKey() || got[0].Trust != trust.StateNew {
				t.Errorf("bob showed alice's message as %+v, want her key, trust new", got)
			}
		}
		c.nw.Settle()
		if got := mallory.Rec().Messages(); len(got) != 0 {
			t.Errorf("mallory received %+v", got)
		}
		if tp.connected(bob.Host(), mallory.Host()) {
			t.Errorf("bob connected to mallory's host")
		}
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob, mallory}, msgs) {
			t.Error(err)
		}
	})
}

// An attacker host on the LAN (eve, raw sockets) tries to make bob, who
// has talked with alice, send to it in plaintext, or to move or drop
// alice:
//
//   - alice's announce with the caps stripped and the signature kept (its
//     ts raised, so it is not taken for a replay), and one claiming
//     alice's key signed with eve's: refused (bad signature);
//   - copies of alice's announce with the key, signature and time
//     stripped but her instance kept (with and without caps): refused
//     (a stripped key), wherever they come from;
//   - goodbyes for alice from eve, with and without her instance: alice
//     stays listed;
//   - keyless announces for the nickname alice on ports eve listens on:
//     an original client's, a copy of alice's with every field of ours
//     stripped, and one with a made-up instance that still claims the
//     noise capability.
//
// bob lists only the keyless "alice"s at eve, each KEY CHANGED (a pinned
// nickname without a key); "alice", and alice's instance prefix, still
// mean the real one; each keyless one is refused with ErrDowngrade; eve's
// listeners never see a connection. Plaintext eve writes to bob claiming
// to be alice is shown marked: not encrypted, no key, KEY CHANGED.
func TestSecurityStrippedAnnounces(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lan, ps := startNodes(t, c, "alice", "bob")
		alice, bob := ps[0], ps[1]
		tp := newTap(c.nw)
		msgs := []*message{mustDeliver(t, bob, alice, "alice", "hello alice")}
		c.nw.RunFor(steadyMax(chat.DefaultAnnounceInterval))
		heard := lastAnnounce(t, tp, alice.Host())
		eve := newAttacker(t, c, lan, "eve")

		_, evePriv, _ := ed25519.GenerateKey(bytesReader(c.seeds.Uint64()))
		forged := heard
		forged.TS++
		forged.Sign(evePriv, time.Now())
		forged.Key = heard.Key // claims alice's key, signed with eve's
		capsStripped := heard
		capsStripped.Caps = nil
		capsStripped.TS++
		eve.multicast(&capsStripped, &forged,
			strippedCopy(heard, true, false, false), strippedCopy(heard, true, true, false),
			&protocol.Goodbye{Nickname: "alice", Instance: heard.Instance},
			&protocol.Goodbye{Nickname: "alice"})
		c.nw.RunFor(hop(lanLink))
		if _, all := eve.listed(bob); len(all) != 0 {
			t.Errorf("bob took forged or stripped announces from eve: %+v", all)
		}
		if st, ok := statusAt(bob, alice.Addr()); !ok || st.PubKey != alice.Chat().PublicKey() || st.Instance != alice.Instance() {
			t.Errorf("bob lost or changed the real alice: %+v", st)
		}

		sinks := []*sink{listenSink(t, c, eve.h, 0), listenSink(t, c, eve.h, heard.TCPPort), listenSink(t, c, eve.h, 0)}
		madeUp := strippedCopy(heard, true, false, false)
		madeUp.Instance = "0123456789abcdef"
		madeUp.TCPPort = sinks[2].port()
		eve.multicast(&protocol.Announce{Nickname: "alice", TCPPort: sinks[0].port()},
			strippedCopy(heard, true, true, true), madeUp)
		c.nw.RunFor(hop(lanLink))
		keyed, all := eve.listed(bob)
		if len(keyed) != 0 || len(all) != 3 {
			t.Fatalf("bob lists at eve's address %+v, want the 3 keyless alices", all)
		}
		for _, st := range all {
			if st.Nickname != "alice" || st.Trust != trust.StateChanged {
				t.Errorf("bob lists %s as %v, want KEY CHANGED (pinned nickname, no key)", registry.Selector(st.Peer), st.Trust)
			}
		}
		if st, ok := statusAt(bob, alice.Addr()); !ok || st.PubKey != alice.Chat().PublicKey() || st.Instance != alice.Instance() {
			t.Errorf("bob lost or changed the real alice: %+v", st)
		}

		for _, name := range []string{"alice", "alice#" + heard.Instance[:8]} {
			m := mustDeliver(t, bob, alice, name, "to the real alice as "+name)
			msgs = append(msgs, m)
			if m.res.Peer.Addr != alice.Addr() {
				t.Errorf("%v went to %v", m, m.res.Peer.Addr)
			}
		}
		for _, st := range all {
			res, err := bob.Chat().Send(t.Context(), registry.Selector(st.Peer), "plaintext for eve?")
			if !errors.Is(err, chat.ErrDowngrade) {
				t.Errorf("send to %s: %+v %v, want ErrDowngrade", registry.Selector(st.Peer), res, err)
			}
		}
		c.nw.Settle()
		for i, s := range sinks {
			if conns, data := s.got(); conns != 0 || len(data) != 0 {
				t.Errorf("eve's listener %d (port %d) accepted %d connections, read %q", i, s.port(), conns, data)
			}
		}
		if tp.connected(bob.Host(), eve.h) {
			t.Errorf("bob connected to eve's host")
		}

		// Plaintext from eve claiming alice: shown, but marked.
		text := "plaintext claiming alice"
		line, _ := protocol.EncodeChatLine(&protocol.ChatMessage{From: "alice", Content: text, Timestamp: time.Now().Unix()})
		conn, err := eve.h.DialContext(t.Context(), "tcp", bob.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(line)
		conn.Close()
		c.nw.RunFor(hop(lanLink))
		if got := shown(bob, text); len(got) != 1 || got[0].Encrypted || got[0].Key != "" || got[0].Trust != trust.StateChanged {
			t.Errorf("bob showed eve's plaintext as %+v, want it marked: not encrypted, no key, KEY CHANGED", got)
		}
		msgs = append(msgs, &message{from: alice, to: bob, text: text, err: errors.New("forged by eve")})
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob}, msgs) {
			if !strings.Contains(err.Error(), text) {
				t.Error(err)
			}
		}
		if c.nw.FaultCount(netsim.FaultRewrite)+c.nw.FaultCount(netsim.FaultReplay) != 0 {
			t.Errorf("the tap changed packets: %v", c.nw.FaultCounts())
		}
	})
}

// A signed announce of alice's replayed verbatim from another host (eve).
// Its signature cannot cover the source address, so it would verify; it
// is refused because alice's run (key and instance) is already listed at
// her own address. Bob lists nothing at eve, "alice" still means alice,
// and a copy with the key stripped and alice's instance kept is listed by
// nobody, not even carol, who has not talked with alice. Should a copy be
// listed anyway, a send to it runs a handshake that eve cannot finish:
// eve reads the preamble and an ephemeral key only.
func TestSecurityAnnounceReplayedFromAnotherHost(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		lan, ps := startNodes(t, c, "alice", "bob", "carol")
		alice, bob, carol := ps[0], ps[1], ps[2]
		tp := newTap(c.nw)
		msgs := []*message{mustDeliver(t, bob, alice, "alice", "hello alice")}
		c.nw.RunFor(steadyMax(chat.DefaultAnnounceInterval))
		heard := lastAnnounce(t, tp, alice.Host())
		eve := newAttacker(t, c, lan, "eve")
		replaySink := listenSink(t, c, eve.h, heard.TCPPort)
		strippedSink := listenSink(t, c, eve.h, 0)
		stripped := strippedCopy(heard, true, false, false)
		stripped.TCPPort = strippedSink.port()
		eve.multicast(&heard, stripped)
		c.nw.RunFor(hop(lanLink))
		replayAddr := netip.AddrPortFrom(eve.h.IP(), heard.TCPPort)
		strippedAddr := netip.AddrPortFrom(eve.h.IP(), strippedSink.port())

		// What holds.
		for _, p := range []*peer{bob, carol} {
			if st, ok := statusAt(p, strippedAddr); ok {
				t.Errorf("%v lists the stripped copy of alice's announce: %+v", p, st)
			}
		}
		if _, ok := statusAt(bob, replayAddr); ok {
			m := send(t.Context(), bob, alice, "alice@"+replayAddr.String(), "for alice's key only")
			if m.err == nil || !isClearFailure(m.err) {
				t.Errorf("bob's send to the replayed announce at eve: %v, want a clear failure", m)
			}
			if m.done-m.at > maxSendTime {
				t.Errorf("%v took %v to fail, want at most %v", m, m.done-m.at, maxSendTime)
			}
			msgs = append(msgs, m)
		}
		c.nw.Settle()
		if _, data := replaySink.got(); bytes.Contains(data, []byte("bob")) || bytes.Contains(data, []byte("for alice")) ||
			(len(data) > 0 && !bytes.HasPrefix(data, []byte("\x00PRLNC1\n"))) {
			t.Errorf("eve read %q from bob: more than a session's first message", data)
		}
		if conns, data := strippedSink.got(); conns != 0 {
			t.Errorf("eve's listener for the stripped copy accepted %d connections, read %q", conns, data)
		}
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob, carol}, msgs) {
			t.Error(err)
		}

		if keyed, _ := eve.listed(bob); len(keyed) != 0 {
			t.Errorf("bob took alice's announce replayed from eve: it lists %s with alice's key, trust %v",
				registry.Selector(keyed[0].Peer), keyed[0].Trust)
		}
		mustDeliver(t, bob, alice, "alice", "still alice")
	})
}

// A key change: alice comes back on her address with a new identity key
// (a reinstall). Bob sees the new instance within one hop, KEY CHANGED,
// with the new fingerprint; nothing he sends reaches her until he accepts
// the key: Send("alice") is refused with ErrKeyChanged (not one
// connection), Trust by nickname, address or instance is refused, Verify
// shows both fingerprints; Trust("alice#<fingerprint prefix>") accepts it
// as verified, and then messages flow both ways with the new key. Her
// message before that is shown marked KEY CHANGED.
func TestSecurityKeyChange(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		var newKey ed25519.PrivateKey
		reinstall := func(cfg *chat.Config) {
			if newKey != nil {
				cfg.Identity = newKey
			}
		}
		c.nw.SetDefaultLink(lanLink)
		lan := c.nw.AddSegment("lan")
		hs := addHosts(c.nw, lan, "h", 2)
		alice, bob := c.start(hs[0], "alice", reinstall), c.start(hs[1], "bob")
		if !c.nw.RunUntil(func() bool { return viewsMatch([]*peer{alice, bob}) }, discoveryBound(lanLink)+quantum) {
			t.Fatalf("no discovery: %v", viewsErr([]*peer{alice, bob}))
		}
		tp := newTap(c.nw)
		msgs := []*message{
			mustDeliver(t, bob, alice, "alice", "before the change"),
			mustDeliver(t, alice, bob, "bob", "me before"),
		}
		oldKey := alice.Chat().PublicKey()
		oldInstance := alice.Instance()
		alice.Quit()
		c.nw.RunFor(time.Second)
		_, newKey, _ = ed25519.GenerateKey(bytesReader(c.seeds.Uint64()))
		restartAt := c.nw.Now()
		alice.restart()
		newPub := alice.Chat().PublicKey()
		if newPub == oldKey {
			t.Fatal("alice restarted with her old key")
		}
		c.nw.RunFor(hop(lanLink))
		ev, ok := bob.Rec().FirstAbout(alice.Instance(), chat.EventPeerJoined, chat.EventPeerRestarted)
		if !ok {
			t.Fatalf("bob did not see alice's new instance within one hop")
		}
		if d := c.at(ev.Time) - restartAt; d > hop(lanLink) {
			t.Errorf("bob saw alice's new key %v after her restart, want within one hop", d)
		}
		st, _ := statusAt(bob, alice.Addr())
		if st.Trust != trust.StateChanged || st.PubKey != newPub || st.Fingerprint != protocol.KeyFingerprint(newPub) {
			t.Errorf("bob lists alice as %v key %q fingerprint %q, want KEY CHANGED with the new key", st.Trust, st.PubKey, st.Fingerprint)
		}
		synsBefore := countSyns(tp, bob.Host(), alice.Host())
		res, err := bob.Chat().Send(t.Context(), "alice", "to the new key?")
		if !errors.Is(err, chat.ErrKeyChanged) || res.Trust != trust.StateChanged {
			t.Errorf("send to alice after her key changed: %+v %v, want ErrKeyChanged", res, err)
		}
		if countSyns(tp, bob.Host(), alice.Host()) != synsBefore {
			t.Errorf("bob connected to alice before trusting her new key")
		}
		// Her message arrives, marked (once she has found bob again).
		c.nw.RunFor(discoveryBound(lanLink))
		m := mustDeliver(t, alice, bob, "bob", "new laptop, same alice")
		msgs = append(msgs, m)
		c.nw.Settle()
		if got := shown(bob, m.text); len(got) != 1 || got[0].Key != newPub || got[0].Trust != trust.StateChanged {
			t.Errorf("bob showed %+v, want it once with the new key, KEY CHANGED", got)
		}

		fp := protocol.KeyFingerprint(newPub)
		for _, name := range []string{"alice", "alice@" + alice.Addr().String(), "alice#" + alice.Instance()[:8]} {
			if _, err := bob.Chat().Trust(name); !errors.Is(err, chat.ErrKeyChanged) {
				t.Errorf("Trust(%q): %v, want ErrKeyChanged (a new key is accepted only by fingerprint)", name, err)
			}
		}
		v, err := bob.Chat().Verify("alice")
		if err != nil || v.Pinned != protocol.KeyFingerprint(oldKey) || v.Peer.Fingerprint != fp || v.SafetyNumber == "" {
			t.Errorf("Verify: %+v %v, want the pinned (old) and the new fingerprint and a safety number", v, err)
		}
		st, err = bob.Chat().Trust("alice#" + fp[:7])
		if err != nil || st.Trust != trust.StateVerified {
			t.Fatalf("Trust by fingerprint: %+v %v, want verified", st, err)
		}
		m = mustDeliver(t, bob, alice, "alice", "welcome back")
		msgs = append(msgs, m)
		if m.res.Trust != trust.StateVerified {
			t.Errorf("%v: trust %v, want verified", m, m.res.Trust)
		}
		m = mustDeliver(t, alice, bob, "bob", "thanks")
		msgs = append(msgs, m)
		c.nw.Settle()
		if got := shown(bob, m.text); len(got) != 1 || got[0].Key != newPub || got[0].Trust != trust.StateVerified {
			t.Errorf("bob showed %+v, want it with the new key, verified", got)
		}
		if got := shown(alice, "welcome back"); len(got) != 1 || got[0].Key != bob.Chat().PublicKey() {
			t.Errorf("alice showed %+v, want bob's message with bob's key", got)
		}
		if _, ok := bob.Rec().FirstAbout(oldInstance, chat.EventPeerLeft); !ok {
			t.Errorf("bob never heard the old alice's goodbye")
		}
		for _, err := range deliveryErrs(t.Context(), []*peer{alice, bob}, msgs) {
			t.Error(err)
		}
	})
}

// An original peer (no key, plaintext) and ours interoperate both ways:
// ours send it plaintext (Sent, not encrypted, trust unencrypted) and
// show its messages as unencrypted. A node of ours with
// RequireEncryption refuses both ways: its sends fail with ErrUnencrypted
// (no connection), the original's messages are not shown and its user is
// told (an EventSecurity within one hop); it still talks to ours,
// encrypted.
func TestSecurityOriginalPeer(t *testing.T) {
	simTest(t, func(t *testing.T, c *cluster) {
		c.nw.SetDefaultLink(lanLink)
		lan := c.nw.AddSegment("lan")
		hs := addHosts(c.nw, lan, "h", 3)
		alice := c.start(hs[0], "alice")
		strict := c.start(hs[1], "strict", func(cfg *chat.Config) { cfg.RequireEncryption = true })
		olga := startOriginalPeer(t, c, hs[2], "olga")
		c.nw.RunFor(originalDiscoveryBound())
		tp := newTap(c.nw)

		res, err := alice.Chat().Send(t.Context(), "olga", "hi olga")
		if err != nil || res.Status != chat.Sent || res.Encrypted || res.Trust != trust.StateUnencrypted {
			t.Errorf("alice -> olga: %+v %v, want sent, not encrypted, trust unencrypted", res, err)
		}
		if err := olga.Send(t.Context(), "alice", "hi alice"); err != nil {
			t.Fatal(err)
		}
		c.nw.RunFor(hop(lanLink))
		if got := olga.Received(); len(got) != 1 || got[0].Content != "hi olga" || got[0].From != "alice" {
			t.Errorf("olga received %+v", got)
		}
		if got := shown(alice, "hi alice"); len(got) != 1 || got[0].Encrypted || got[0].Key != "" || got[0].Trust != trust.StateUnencrypted || got[0].From != "olga" {
			t.Errorf("alice showed %+v, want olga's message unencrypted, without key", got)
		}
		if st, ok := statusAt(alice, netip.AddrPortFrom(hs[2].IP(), olga.Port())); !ok || st.Trust != trust.StateUnencrypted || st.Fingerprint != "" {
			t.Errorf("alice lists olga as %+v, want unencrypted without fingerprint", st)
		}

		res, err = strict.Chat().Send(t.Context(), "olga", "never in the clear")
		if !errors.Is(err, chat.ErrUnencrypted) {
			t.Errorf("strict -> olga: %+v %v, want ErrUnencrypted", res, err)
		}
		sentAt := c.nw.Now()
		if err := olga.Send(t.Context(), "strict", "hi strict"); err != nil {
			t.Fatal(err)
		}
		c.nw.RunFor(hop(lanLink))
		if got := shown(strict, "hi strict"); len(got) != 0 {
			t.Errorf("strict showed %+v from the original peer", got)
		}
		evs := securityEvents(strict)
		if len(evs) != 1 {
			t.Fatalf("strict raised %d security events, want 1: %+v", len(evs), evs)
		}
		if d := c.at(evs[0].Time) - sentAt; d > 2*hop(lanLink) {
			t.Errorf("strict told its user %v after olga sent, want within the connection's two hops", d)
		}
		if tp.connected(strict.Host(), hs[2]) {
			t.Errorf("strict connected to the original peer")
		}
		for _, r := range olga.Received() {
			if r.From == "strict" {
				t.Errorf("olga received %+v from strict", r)
			}
		}
		msgs := []*message{
			mustDeliver(t, strict, alice, "alice", "strict to alice"),
			mustDeliver(t, alice, strict, "strict", "alice to strict"),
		}
		c.nw.Settle()
		for _, m := range msgs {
			if got := shown(m.to, m.text); len(got) != 1 || !got[0].Encrypted || got[0].Key != m.from.Chat().PublicKey() {
				t.Errorf("%v shown as %+v, want encrypted with the sender's key", m, got)
			}
		}
	})
}

package simulate

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// run runs one scenario small and returns its result and printed summary.
func run(t *testing.T, scenario string, seed uint64) (*Result, string) {
	t.Helper()
	var out bytes.Buffer
	res, err := Run(t, Config{Scenario: scenario, Peers: 5, Seed: seed, Duration: 5 * time.Second}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out.String())
	for _, want := range []string{fmt.Sprintf("seed %d,", seed), "simulated", "wall", "trace lines", "trace hash " + res.TraceHash} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if res.TraceLines == 0 || len(res.TraceHash) != 64 {
		t.Errorf("trace lines %d, hash %q", res.TraceLines, res.TraceHash)
	}
	return res, out.String()
}

// checkChat asserts the facts every chat scenario must show.
func checkChat(t *testing.T, f Facts) {
	t.Helper()
	if !f.Discovered {
		t.Error("full discovery not reached")
	}
	if f.Messages.Sent == 0 || f.Messages.Violations != 0 || f.Messages.Unclear != 0 {
		t.Errorf("messages: %+v, want some sent, no delivery violations and no unclear errors", f.Messages)
	}
	if !f.Converged {
		t.Error("views not exact at the end")
	}
}

func TestChatLAN(t *testing.T) {
	res, _ := run(t, "chat-lan", 1)
	checkChat(t, res.Facts)
	if m := res.Facts.Messages; m.Sent != 5*fanout || m.Delivered != m.Sent {
		t.Errorf("messages on a healthy LAN: %+v, want %d sent and all delivered", m, 5*fanout)
	}
	if d := res.Facts.Discovery; d <= 0 || d > 200*time.Millisecond {
		t.Errorf("discovery %v after the last start, want within 200 ms", d)
	}
	again, _ := run(t, "chat-lan", 1)
	if again.TraceHash != res.TraceHash {
		t.Errorf("seed 1 twice: hashes %s and %s", res.TraceHash, again.TraceHash)
	}
	other, _ := run(t, "chat-lan", 2)
	if other.TraceHash == res.TraceHash {
		t.Error("seeds 1 and 2 gave the same trace")
	}
}

func TestChatChurn(t *testing.T) {
	res, out := run(t, "chat-churn", 1)
	checkChat(t, res.Facts)
	if !res.Facts.Dropped {
		t.Error("some departed node still listed")
	}
	for _, want := range []string{"quit: dropped by 3 of 3", "crashed: dropped by 3 of 3", "listed by 3 of 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func TestChatPartition(t *testing.T) {
	res, _ := run(t, "chat-partition", 1)
	checkChat(t, res.Facts)
	f := res.Facts
	if !f.Dropped {
		t.Error("the sides did not drop each other during the split")
	}
	if f.CrossSent == 0 || f.CrossQueued != f.CrossSent {
		t.Errorf("%d of %d sends across the split were queued, want all", f.CrossQueued, f.CrossSent)
	}
	if f.CrossArrived != f.CrossSent {
		t.Errorf("%d of %d sends queued across the split arrived after the heal, want all", f.CrossArrived, f.CrossSent)
	}
}

func TestChatInternet(t *testing.T) {
	res, _ := run(t, "chat-internet", 1)
	checkChat(t, res.Facts)
	if res.Facts.Reregistered != 5 {
		t.Errorf("%d of 5 nodes registered again after the server's restart", res.Facts.Reregistered)
	}
	if res.HashNote == "" {
		t.Error("no note that the hash leaves out payload checksums")
	}
	again, _ := run(t, "chat-internet", 1)
	if again.TraceHash != res.TraceHash {
		t.Errorf("seed 1 twice: hashes %s and %s", res.TraceHash, again.TraceHash)
	}
}

func TestClassic(t *testing.T) {
	for _, s := range []string{"lan", "lossy", "partition", "churn"} {
		res, _ := run(t, s, 1)
		if !strings.Contains(strings.Join(res.Lines, "\n"), "at the end: each of") {
			t.Errorf("%s: no end summary: %q", s, res.Lines)
		}
	}
}

func TestRefused(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: "nope", Peers: 5},
		{Scenario: "chat-lan", Peers: MaxChatNodes + 1},
		{Scenario: "chat-lan", Peers: 1},
		{Scenario: "chat-churn", Peers: 2},
	} {
		if _, err := Run(t, cfg, new(bytes.Buffer)); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim/netns"
	"github.com/parlance-chat/parlance/tools/internal/privns"
)

// TestSmoke runs the tool small, in this process (one worker): three
// members, a few posts, a short catch-up. It multicasts, so it runs only
// in a private network namespace (scripts/test provides one).
func TestSmoke(t *testing.T) {
	netns.Require(t)
	args := []string{"-members", "3", "-messages", "6", "-interval", "20ms", "-idle", "0", "-catchup", "10", "-timeout", "3m"}
	var out, errs bytes.Buffer
	err := run(t.Context(), args, strings.NewReader(""), &out, &errs)
	t.Logf("roombench %s:\n%s", strings.Join(args, " "), out.String())
	if errs.Len() > 0 {
		t.Logf("stderr:\n%s", errs.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"reach all 2 other members",
		"(6 of 6 messages reached all)",
		"start to all 10 missed messages shown",
		"checks: messages shown twice by one member 0; earlier messages shown again after the restart 0",
		"| 3 | 6 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRefusesOutsideANamespace(t *testing.T) {
	if netns.Check() == nil {
		t.Skip("in a private network namespace")
	}
	var out, errs bytes.Buffer
	err := run(t.Context(), []string{"-members", "3"}, strings.NewReader(""), &out, &errs)
	if _, ok := err.(privns.NotPrivateError); !ok {
		t.Fatalf("run outside a namespace: %v, want a privns.NotPrivateError", err)
	}
	if out.Len() > 0 {
		t.Errorf("it printed before refusing: %q", out.String())
	}
}

func TestBursts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name string
		in   []time.Time
		want []burst
	}{
		{"nothing", nil, nil},
		{"one", []time.Time{at(0)}, []burst{{at(0), at(0), 1}}},
		{"close times join", []time.Time{at(0), at(200), at(450)}, []burst{{at(0), at(450), 3}}},
		{"a gap splits", []time.Time{at(0), at(100), at(400), at(30000)}, []burst{{at(0), at(100), 2}, {at(400), at(400), 1}, {at(30000), at(30000), 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bursts(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("bursts = %v, want %v", got, tt.want)
			}
			for i := range got {
				if !got[i].at.Equal(tt.want[i].at) || !got[i].end.Equal(tt.want[i].end) || got[i].n != tt.want[i].n {
					t.Errorf("burst %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestQuantiles(t *testing.T) {
	var ds []time.Duration
	for i := 200; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mx := quantiles(ds)
	if p50 != 100*time.Millisecond || p99 != 198*time.Millisecond || mx != 200*time.Millisecond {
		t.Errorf("quantiles of 1..200 ms = %v, %v, %v; want 100ms, 198ms, 200ms (nearest rank)", p50, p99, mx)
	}
}

func TestMessageText(t *testing.T) {
	ph, i, author, ok := parseText(messageText(phaseCatchup, 917, 42))
	if !ok || ph != phaseCatchup || i != 917 || author != 42 {
		t.Errorf("parseText(messageText(c, 917, 42)) = %q, %d, %d, %v", ph, i, author, ok)
	}
	for _, s := range []string{"", "hello", "roombench c x 1", "roombench c 1 -2", "roombench c 1 2 3"} {
		if _, _, _, ok := parseText(s); ok {
			t.Errorf("parseText(%q) accepted it", s)
		}
	}
}

package room

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parlance-chat/parlance/protocol"
)

// A restarted member picks up where it was: what it showed is not shown
// again, what follows is shown at once, it serves its history, and its
// own next seq goes past every seq it stored.
func TestLogRestore(t *testing.T) {
	a1, a2, b1 := msg('A', 1, t0), msg('A', 2, t0, dep('B', 1)), msg('B', 1, t0)
	l := newLog(t, LogConfig{})
	err := l.Restore([]Restored{
		{Author: keyOf('A'), Shown: 2, Highest: 3},
		{Author: keyOf('B'), Shown: 1, Highest: 1},
		{Author: keyOf('S'), Shown: 4, Highest: 5},
	}, []*protocol.RoomMessage{b1, a2})
	if err != nil {
		t.Fatal(err)
	}
	add(t, l, a1, t0, Duplicate)
	add(t, l, a2, t0, Duplicate)
	add(t, l, msg('A', 3, t0, dep('B', 1)), t0, Added)
	ready(t, l, t0, "A3")
	if got := summaryString(l.Summary()); got != "A3 B1 S4" {
		t.Fatalf("summary %s, want A3 B1 S4", got)
	}
	var served []string
	for _, m := range l.Missing(protocol.RoomSummary{Room: testRoom}, t0) {
		served = append(served, m.Text)
	}
	if got := strings.Join(served, " "); got != "B1 A2 A3" {
		t.Fatalf("served %q, want the restored history then A3", got)
	}
	m, err := l.Next(t0, "after", "sam")
	if err != nil {
		t.Fatal(err)
	}
	if m.Seq != 6 {
		t.Fatalf("own seq after restore %d, want 6 (past the stored 5)", m.Seq)
	}
	if err := l.Restore(nil, nil); err == nil {
		t.Fatal("a second Restore was taken")
	}
}

func TestLogRestoreRefuses(t *testing.T) {
	for name, f := range map[string]func(l *Log) error{
		"history past shown": func(l *Log) error {
			return l.Restore([]Restored{{Author: keyOf('A'), Shown: 1, Highest: 2}}, []*protocol.RoomMessage{msg('A', 2, t0)})
		},
		"history of an unnamed author": func(l *Log) error {
			return l.Restore(nil, []*protocol.RoomMessage{msg('A', 1, t0)})
		},
		"bad author": func(l *Log) error {
			return l.Restore([]Restored{{Author: "x", Shown: 1}}, nil)
		},
		"after Add": func(l *Log) error {
			add(t, l, msg('A', 1, t0), t0, Added)
			return l.Restore(nil, nil)
		},
		"after Next": func(l *Log) error {
			if _, err := l.Next(t0, "x", "sam"); err != nil {
				t.Fatal(err)
			}
			return l.Restore(nil, nil)
		},
	} {
		if err := f(newLog(t, LogConfig{})); err == nil {
			t.Errorf("%s: Restore took it", name)
		}
	}
}

func summaryString(s protocol.RoomSummary) string {
	var parts []string
	for _, h := range s.Have {
		parts = append(parts, letterOf(h.Author)+strconv.FormatUint(h.Seq, 10))
	}
	slices.Sort(parts) // by letter, for the reader; the summary sorts by key
	return strings.Join(parts, " ")
}

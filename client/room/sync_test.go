package room

import (
	"maps"
	"strings"
	"testing"

	"github.com/parlance-chat/parlance/protocol"
)

// Highest says what a summary cannot: a seq held past a gap.
func TestLogHighest(t *testing.T) {
	l := newLog(t, LogConfig{})
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('A', 4, t0), t0, Added) // A2, A3 missing: A4 waits
	add(t, l, msg('B', 1, t0, dep('A', 1)), t0, Added)
	ready(t, l, t0, "A1 B1")
	if _, err := l.Next(t0, "s1", "sam"); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{keyOf('A'): 4, keyOf('B'): 1, keyOf('S'): 1}
	if got := l.Highest(); !maps.Equal(got, want) {
		t.Fatalf("Highest %v, want %v", got, want)
	}
	for _, h := range l.Summary().Have {
		if h.Author == keyOf('A') && h.Seq != 1 {
			t.Fatalf("summary has A%d, want A1 (contiguous)", h.Seq)
		}
	}
}

// A summary that asks gets only the authors it asks for; the history
// bound applies to what it asks for, not to everything held.
func TestLogMissingAsked(t *testing.T) {
	l := newLog(t, LogConfig{HistoryMessages: 4})
	add(t, l, msg('A', 1, t0), t0, Added)
	add(t, l, msg('B', 1, t0, dep('A', 1)), t0, Added)
	add(t, l, msg('A', 2, t0, dep('B', 1)), t0, Added)
	add(t, l, msg('B', 2, t0, dep('A', 2)), t0, Added)
	add(t, l, msg('C', 1, t0, dep('B', 2)), t0, Added)
	ready(t, l, t0, "A1 B1 A2 B2 C1")
	texts := func(ms []*protocol.RoomMessage) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Text)
		}
		return strings.Join(out, " ")
	}
	for _, tt := range []struct {
		name string
		sum  protocol.RoomSummary
		want string
	}{
		{"no ask: everything within the bound", protocol.RoomSummary{Room: testRoom}, "B1 A2 B2 C1"},
		{"ask B", protocol.RoomSummary{Room: testRoom, Ask: []string{keyOf('B')}}, "B1 B2"},
		{"ask A and C, holding A1", protocol.RoomSummary{Room: testRoom, Have: []protocol.RoomSeq{dep('A', 1)}, Ask: []string{keyOf('C'), keyOf('A')}}, "A2 C1"},
		{"ask an author not held", protocol.RoomSummary{Room: testRoom, Ask: []string{keyOf('D')}}, ""},
	} {
		if got := texts(l.Missing(tt.sum, t0)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

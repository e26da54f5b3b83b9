package kvline

import (
	"bytes"
	"testing"
	"time"
)

// What Say writes, Parse reads back.
func TestSayParse(t *testing.T) {
	var b bytes.Buffer
	w := &Writer{W: &b}
	at := time.Unix(1795739259, 123456789)
	w.Say("posted", "i", 7, "n", int64(1)<<40, "cpu", 1.5, "at", at.UnixNano(), "zero", 0)
	if got, want := b.String(), "posted i=7 n=1099511627776 cpu=1.5 at=1795739259123456789 zero=0\n"; got != want {
		t.Fatalf("Say wrote %q, want %q", got, want)
	}
	l := Parse(b.String())
	if l.Verb != "posted" || l.Int("i") != 7 || l.Int64("n") != 1<<40 || l.Float("cpu") != 1.5 || !l.Time("at").Equal(at) {
		t.Fatalf("Parse: %+v", l)
	}
	if !l.Time("zero").IsZero() || l.Int("missing") != 0 || l.Float("missing") != 0 {
		t.Fatalf("a zero or missing field: time %v, int %d", l.Time("zero"), l.Int("missing"))
	}
	if e := Parse("  "); e.Verb != "" || len(e.KV) != 0 {
		t.Fatalf("an empty line parsed as %+v", e)
	}
}

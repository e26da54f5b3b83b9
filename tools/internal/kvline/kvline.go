// Package kvline is the line protocol that the benchmark tools
// (cmd/msgbench, cmd/roombench) speak between their coordinator and the
// child processes it starts: one line per event, a verb and then
// key=value fields, written to the child's stdout. Values hold no spaces;
// times are Unix nanoseconds.
package kvline

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Line is one parsed line.
type Line struct {
	Verb string
	KV   map[string]string
}

// Parse splits s into its verb and fields; a field without '=' has an
// empty value.
func Parse(s string) Line {
	f := strings.Fields(s)
	l := Line{KV: make(map[string]string)}
	if len(f) == 0 {
		return l
	}
	l.Verb = f[0]
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		l.KV[k] = v
	}
	return l
}

// Int, Int64 and Float read a field; one that is missing or malformed
// reads as 0.
func (l Line) Int(k string) int {
	v, _ := strconv.Atoi(l.KV[k])
	return v
}

func (l Line) Int64(k string) int64 {
	v, _ := strconv.ParseInt(l.KV[k], 10, 64)
	return v
}

func (l Line) Float(k string) float64 {
	v, _ := strconv.ParseFloat(l.KV[k], 64)
	return v
}

// Time reads a Unix-nanosecond field; 0 is the zero time.
func (l Line) Time(k string) time.Time {
	ns := l.Int64(k)
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Writer writes lines to W; it is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	W  io.Writer
}

// Say writes verb and the key, value pairs kv as one line.
func (w *Writer) Say(verb string, kv ...any) {
	var b strings.Builder
	b.WriteString(verb)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	b.WriteByte('\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	io.WriteString(w.W, b.String())
}

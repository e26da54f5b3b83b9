package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/tools/internal/kvline"
)

// The coordinator and its workers talk in lines: a verb and key=value
// pairs, values without spaces; times are Unix nanoseconds.
//
// Coordinator to worker:
//
//	members                        -> members min=N max=N (room members listed, over the live nodes)
//	stats                          -> stats k=v... (the worker's counters; see worker.stats)
//	nodestats node=K               -> nodestats k=v... (node K's counters)
//	post ph=P i=I node=K           -> posted ph=P i=I at=NS end=NS members=N err=0|1
//	lines node=K ph=P              -> lines n=N bytes=B min=B max=B deps=D authors=A sum=B
//	stop node=K                    -> stopped node=K
//	restart node=K want=N          -> restarted node=K t0=NS started=NS, later caughtup ... and burst lines
//	profile start path=P | stop    -> profile ok=0|1
//	quit (or the end of stdin)     -> final k=v..., then the worker exits
//
// Unasked, a worker says "ready" once its nodes run and have joined the
// room, and "seen ph=P i=I n=N first=NS last=NS evlast=NS" once every
// live node it hosts, but the author, has shown message I of phase P.

// line is one protocol line.
type line struct {
	kvline.Line
	// bursts are the "burst" lines a worker said before this one
	// (caughtup only).
	bursts []line
}

func parseLine(s string) line { return line{Line: kvline.Parse(s)} }

// lineWriter writes protocol lines; it is safe for concurrent use.
type lineWriter = kvline.Writer

// ns is t in Unix nanoseconds, 0 for the zero time.
func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// messageText is message i of phase ph, posted by node author.
func messageText(ph string, i, author int) string {
	return fmt.Sprintf("roombench %s %d %d", ph, i, author)
}

// parseText reads messageText back.
func parseText(s string) (ph string, i, author int, ok bool) {
	f := strings.Fields(s)
	if len(f) != 4 || f[0] != "roombench" {
		return "", 0, 0, false
	}
	i, err1 := strconv.Atoi(f[2])
	author, err2 := strconv.Atoi(f[3])
	return f[1], i, author, err1 == nil && err2 == nil && i >= 0 && author >= 0
}

// nickname is node i's nickname.
func nickname(i int) string { return fmt.Sprintf("m%03d", i) }

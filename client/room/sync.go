package room

import (
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// Summary returns what we hold, for a peer to answer with what we lack:
// per author, the highest seq held (delivered or pending) contiguously
// from the author's start in this log (1 unless history began later).
// Authors of whom we hold nothing are left out. Sorted by author.
func (l *Log) Summary() protocol.RoomSummary {
	s := protocol.RoomSummary{Room: l.cfg.Room}
	for _, a := range l.authors {
		h := a.done.contiguousFrom(max(a.start, 1))
		for a.pending[h+1] != nil {
			h++
		}
		if h > 0 {
			s.Have = append(s.Have, protocol.RoomSeq{Author: a.key, Seq: h})
		}
	}
	slices.SortFunc(s.Have, func(x, y protocol.RoomSeq) int { return strings.Compare(x.Author, y.Author) })
	return s
}

// Highest returns, per author, the highest seq the log holds (delivered
// or pending), gaps or not: what a summary's contiguous have cannot say.
// Authors of whom it holds nothing are left out.
func (l *Log) Highest() map[string]uint64 {
	out := make(map[string]uint64, len(l.authors))
	for _, a := range l.authors {
		h := a.highest
		for s := range a.pending {
			h = max(h, s)
		}
		if h > 0 {
			out[a.key] = h
		}
	}
	return out
}

// Missing returns the messages we hold that the peer whose summary is
// theirs lacks (a seq past its have for that author), oldest first:
// delivered ones in delivery order, then pending ones in arrival order.
// None is older than HistoryAge by its author's clock, and at most
// HistoryMessages are returned, the newest. A late joiner's summary is
// empty, so it gets the recent history. The messages are the log's own:
// the caller must not modify them. A summary of another room gets nil.
// A summary that asks (Ask set) gets only the messages of the authors it
// asks for.
func (l *Log) Missing(theirs protocol.RoomSummary, now time.Time) []*protocol.RoomMessage {
	if theirs.Room != l.cfg.Room {
		return nil
	}
	have := make(map[string]uint64, len(theirs.Have))
	for _, h := range theirs.Have {
		have[h.Author] = h.Seq
	}
	var asked map[string]bool
	if len(theirs.Ask) > 0 {
		asked = make(map[string]bool, len(theirs.Ask))
		for _, a := range theirs.Ask {
			asked[a] = true
		}
	}
	oldest := now.Add(-l.cfg.HistoryAge).UnixMilli()
	var out []*protocol.RoomMessage
	add := func(m *protocol.RoomMessage) {
		if m.Seq > have[m.Author] && m.Time >= oldest && (asked == nil || asked[m.Author]) {
			out = append(out, m)
		}
	}
	for _, m := range l.history {
		add(m)
	}
	for _, p := range l.arrivals[l.forceAt:] {
		if p.state == waiting {
			add(p.m)
		}
	}
	if n := len(out) - l.cfg.HistoryMessages; n > 0 {
		out = out[n:]
	}
	return out
}

// Held returns the delivered messages kept for anti-entropy, oldest
// first: at most HistoryMessages. The messages are the log's own.
func (l *Log) Held() []*protocol.RoomMessage {
	return slices.Clone(l.history)
}

// expire drops history older than HistoryAge from the front. History is in
// delivery order, not by time, so an old message behind a newer one stays
// until it reaches the front; Missing skips it meanwhile.
func (l *Log) expire(now time.Time) {
	oldest := now.Add(-l.cfg.HistoryAge).UnixMilli()
	n := 0
	for n < len(l.history) && l.history[n].Time < oldest {
		n++
	}
	if n > 0 {
		l.evict(n)
	}
}

// evict drops the n oldest messages of the history. Their seqs stay in
// their authors' delivered sets, so they are still dropped as duplicates.
// Reslicing from the front keeps this O(n); append reallocates now and
// then, copying only what is kept.
func (l *Log) evict(n int) {
	clear(l.history[:n])
	l.history = l.history[n:]
}

package room

import (
	"errors"
	"fmt"

	"github.com/parlance-chat/parlance/protocol"
)

// Restored is what an earlier run of this member had of one author, as
// the store keeps it (store.RoomAuthor).
type Restored struct {
	Author string // the author's key (wire form)
	// Shown is the highest seq that was shown; Highest the highest stored
	// (shown or still waiting).
	Shown, Highest uint64
}

// Restore loads what an earlier run of this member had, into a log that
// has taken nothing yet: each author's seqs 1 to Shown count as delivered
// (a gap an earlier run forced past and never filled is given up, so a
// message that fills it after a restart is dropped rather than shown
// late), and history, the messages shown most recently in display order,
// becomes what Missing serves. Messages stored but not shown are not
// restored: the caller Adds them again, and they wait as before.
//
// Highest of our own key moves our next seq past it: a restart never
// reuses a seq, even for a message that never left.
func (l *Log) Restore(authors []Restored, history []*protocol.RoomMessage) error {
	if l.nArrived > 0 || len(l.history) > 0 || l.authors[l.self].seen > 0 {
		return errors.New("room: Restore on a log that has taken messages")
	}
	if len(authors) > l.cfg.MaxMembers {
		return fmt.Errorf("room: restore %d authors: %w", len(authors), ErrTooManyMembers)
	}
	for _, r := range authors {
		if _, err := protocol.ParsePublicKey(r.Author); err != nil {
			return fmt.Errorf("room: restore author %.12s…: %v", r.Author, err)
		}
		if r.Shown > protocol.MaxRoomSeq || r.Highest > protocol.MaxRoomSeq {
			return fmt.Errorf("room: restore author %s: seq past %d", short(r.Author), uint64(protocol.MaxRoomSeq))
		}
		a := l.author(r.Author)
		if r.Shown > 0 {
			a.done.spans = []span{{1, r.Shown}}
		}
		a.highest, a.shown = r.Shown, r.Shown
		if r.Author == l.self {
			a.seen = max(r.Highest, r.Shown)
		}
	}
	for _, m := range history {
		if m.Room != l.cfg.Room {
			return fmt.Errorf("room: restore a message of room %.8s…: %w", m.Room, ErrWrongRoom)
		}
		if a := l.authors[m.Author]; a == nil || !a.done.has(m.Seq) {
			return fmt.Errorf("room: restore %s seq %d: not within what the authors say was shown", short(m.Author), m.Seq)
		}
	}
	l.history = append(l.history, history...)
	if n := len(l.history) - l.cfg.HistoryMessages; n > 0 {
		l.evict(n)
	}
	return nil
}

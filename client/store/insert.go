package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"
)

// shape is how the rows of one INSERT are bound. Binding costs about a
// tenth of a microsecond a parameter (a text more: the driver copies it
// into C memory), so rows that share their peer, as a connection's batch
// and a sender's outgoing rows do, bind its columns once per statement,
// and the columns a direction always has the same value in are constants
// in the statement.
type shape uint8

const (
	// anyRows binds all 13 columns of every row.
	anyRows shape = iota
	// inRows are incoming rows of one peer (key, nickname and encrypted
	// bound once) without a delivered or expiry time, with consecutive
	// seqs (the first bound once): 4 parameters a row.
	inRows
	// outRows are outgoing rows of one peer without a received time: 7
	// parameters a row.
	outRows
)

// minShaped is the shortest run of rows of one peer written by a shaped
// statement: shorter runs, among rows of many peers, go into
// statements of all columns, which hold more rows.
const minShaped = 8

// shapeOf is the shape m can be written in.
func shapeOf(m *Message) shape {
	switch {
	case m.Dir == In && m.Delivered.IsZero() && m.Expires.IsZero():
		return inRows
	case m.Dir == Out && m.Received.IsZero():
		return outRows
	}
	return anyRows
}

// samePeer reports whether a and b share the columns a shaped statement
// binds once.
func samePeer(a, b *Message) bool {
	return a.PeerKey == b.PeerKey && a.PeerNick == b.PeerNick && a.Encrypted == b.Encrypted
}

// insertSQL is the statement that stores n rows of shape sh. OR IGNORE:
// the unique index drops incoming duplicates. The shared parameters come
// first in the text, so that every anonymous one after them is numbered
// past them.
func insertSQL(sh shape, n int) string {
	switch sh {
	case inRows:
		// The writer gives incoming rows consecutive seqs: ?5 is the first.
		var b strings.Builder
		b.WriteString("INSERT OR IGNORE INTO messages (peer_key, peer_nick, encrypted, conv, seq, id, text, sent_ms, received_ms, dir, status) VALUES ")
		for k := range n {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?1,?2,?3,?4,?5+")
			b.WriteString(strconv.Itoa(k))
			b.WriteString(",?,?,?,?,2,5)")
		}
		return b.String()
	case outRows:
		return "INSERT OR IGNORE INTO messages (peer_key, peer_nick, encrypted, conv, seq, id, text, sent_ms, delivered_ms, expires_ms, status, dir) VALUES " +
			repeat("(?1,?2,?3,?4,?,?,?,?,?,?,?,1)", n)
	}
	return "INSERT OR IGNORE INTO messages (" + columns + ", conv) VALUES " + repeat("(?,?,?,?,?,?,?,?,?,?,?,?,?)", n)
}

// insert stores the messages of ops, one statement per run of rows (see
// nextRun), or the largest power of two of its rows, so that a few
// prepared statements serve every batch. An outgoing message has its seq
// from AddOutgoing; the others get theirs here. When a statement stored
// fewer rows than it had, the unique index dropped incoming duplicates,
// and the seqs present tell which; the dropped ones leave gaps in seq.
func (w *writer) insert(ctx context.Context, tx *sql.Tx, ops []*op) error {
	all := w.refs[:0]
	for _, o := range ops {
		if len(o.msgs) == 1 {
			o.newSeqs = o.oneSeq[:]
		} else {
			o.newSeqs = make([]int64, len(o.msgs))
		}
		for i := range o.msgs {
			all = append(all, inRef{o, i})
		}
	}
	defer func() { clear(all); w.refs = all[:0] }()
	for refs := all; len(refs) > 0; {
		sh, n := nextRun(refs)
		n = chunk(n)
		args := w.args[:0]
		seqs := w.seqBuf[:0]
		if sh != anyRows {
			m := refs[0].o.msgs[refs[0].i]
			args = append(args, m.PeerKey, m.PeerNick, boolInt(m.Encrypted), convOf(m.PeerKey, m.PeerNick))
		}
		var next int64 // the seq of the next incoming row, when all are
		if sh == inRows {
			next = w.s.nextSeq.Add(int64(n)) - int64(n)
			args = append(args, next)
		}
		for _, r := range refs[:n] {
			m := r.o.msgs[r.i]
			seq := m.Seq
			switch {
			case sh == inRows:
				seq = next
				next++
			case m.Dir != Out || seq == 0:
				seq = w.s.nextSeq.Add(1) - 1
			}
			seqs = append(seqs, seq)
			switch sh {
			case inRows:
				args = append(args, m.ID, m.Text, w.times.millis(0, m.Sent), w.times.millis(1, m.Received))
			case outRows:
				args = append(args, seq, m.ID, m.Text, w.times.millis(0, m.Sent), w.times.millis(2, m.Delivered),
					w.times.millis(3, m.Expires), int64(m.Status))
			default:
				args = append(args, seq, m.ID, m.PeerKey, m.PeerNick, int64(m.Dir), m.Text,
					millis(m.Sent), millis(m.Received), millis(m.Delivered), millis(m.Expires),
					int64(m.Status), boolInt(m.Encrypted), convOf(m.PeerKey, m.PeerNick))
			}
		}
		w.seqBuf = seqs[:0]
		stored, err := w.execStmt(ctx, stmtKey{kind: opInsert, n: n, shape: sh}, args)
		switch {
		case err != nil:
			return err
		case stored == int64(n):
			for k, r := range refs[:n] {
				r.o.newSeqs[r.i] = seqs[k]
			}
		default:
			if err := w.markStored(ctx, tx, refs[:n], seqs); err != nil {
				return err
			}
		}
		refs = refs[n:]
	}
	return nil
}

// nextRun returns the shape of the statement that writes the first rows
// of refs, and how many rows (up to stmtRows) it could take: a run of
// rows of one shape and peer, or, when that run is short, the rows up to
// the next long run, in all columns.
func nextRun(refs []inRef) (shape, int) {
	sh, n := peerRun(refs)
	if sh != anyRows && (n >= minShaped || n == len(refs)) {
		return sh, n
	}
	for n < len(refs) && n < stmtRows {
		sh, k := peerRun(refs[n:])
		if sh != anyRows && k >= minShaped {
			break
		}
		n += k
	}
	return anyRows, min(n, stmtRows)
}

// peerRun returns the shape of the first row of refs and how many rows
// from it (up to stmtRows) share that shape and peer.
func peerRun(refs []inRef) (shape, int) {
	first := refs[0].o.msgs[refs[0].i]
	sh, n := shapeOf(first), 1
	if sh == anyRows {
		return sh, n
	}
	for n < len(refs) && n < stmtRows {
		m := refs[n].o.msgs[refs[n].i]
		if shapeOf(m) != sh || !samePeer(m, first) {
			break
		}
		n++
	}
	return sh, n
}

// chunk returns the largest power of two <= min(n, stmtRows).
func chunk(n int) int {
	c := stmtRows
	for c > n {
		c /= 2
	}
	return c
}

// markStored sets newSeqs for the rows of refs (given seqs) that the last
// INSERT OR IGNORE stored.
func (w *writer) markStored(ctx context.Context, tx *sql.Tx, refs []inRef, seqs []int64) error {
	at := make(map[int64]inRef, len(refs))
	lo, hi := seqs[0], seqs[0]
	for k, r := range refs {
		at[seqs[k]] = r
		lo, hi = min(lo, seqs[k]), max(hi, seqs[k])
	}
	rows, err := tx.QueryContext(ctx, "SELECT seq FROM messages WHERE seq >= ? AND seq <= ?", lo, hi)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return err
		}
		if r, ok := at[seq]; ok {
			r.o.newSeqs[r.i] = seq
		}
	}
	return rows.Err()
}

// times boxes the times of rows as statement arguments, one column each,
// reusing the box of the previous row when the millisecond is the same,
// as it mostly is in a batch: a box is an allocation.
type times struct {
	ms  [4]int64
	box [4]any
}

func (t *times) millis(col int, tm time.Time) any {
	if tm.IsZero() {
		return nil
	}
	ms := tm.UnixMilli()
	if t.box[col] == nil || t.ms[col] != ms {
		t.ms[col], t.box[col] = ms, ms
	}
	return t.box[col]
}

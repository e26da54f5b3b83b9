package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// RoomMessageRow is one room message as stored: the signed message as it
// travels, when it reached us, and whether and when it was shown.
type RoomMessageRow struct {
	protocol.RoomMessage
	// Received is when the message reached us (or, ours, was written), to
	// the millisecond.
	Received time.Time
	// Shown is 0 for a message held but not shown yet (it waits in a
	// room.Log for what it depends on), else its display number: numbers
	// increase, across rooms and runs, in the order MarkRoomShown gave
	// them. AddRoomMessages ignores it.
	Shown int64
}

// RoomMsgKey names one room message within its room.
type RoomMsgKey struct {
	Author string // the author's key (wire form)
	Seq    uint64
}

// RoomAuthor sums up what the store holds of one author in one room: what
// a restarted member needs to know what it had shown (a room.Log delivers
// each (author, seq) once over its life) and where its history of the
// author starts.
type RoomAuthor struct {
	Author string // the author's key (wire form)
	// Lowest and Highest are the lowest and highest seqs stored, Count
	// how many: Count == Highest-Lowest+1 says no seq between is missing.
	Lowest, Highest uint64
	Count           int
	// Shown is the highest seq shown, 0 for none.
	Shown uint64
}

// roomColumns are the columns of room_messages in the order queryRoom
// reads them.
const roomColumns = "room, author, seq, nick, time_ms, deps, text, sig, received_ms, shown"

// Reads whose plans matter (a test checks them).
const (
	roomHistorySQL  = "SELECT " + roomColumns + " FROM (SELECT " + roomColumns + " FROM room_messages INDEXED BY room_messages_shown WHERE room = ? AND shown > 0 ORDER BY shown DESC LIMIT ?) ORDER BY shown"
	roomMessagesSQL = "SELECT " + roomColumns + " FROM (SELECT n, " + roomColumns + " FROM room_messages INDEXED BY room_messages_time WHERE room = ? ORDER BY time_ms DESC, n DESC LIMIT ?) ORDER BY time_ms, n"
	roomAuthorsSQL  = "SELECT author, min(seq), max(seq), count(*), coalesce((SELECT seq FROM room_messages s INDEXED BY room_messages_key WHERE s.room = a.room AND s.author = a.author AND s.shown > 0 ORDER BY seq DESC LIMIT 1), 0) FROM room_messages a INDEXED BY room_messages_key WHERE room = ? GROUP BY author ORDER BY author"
	roomShowSQL     = "UPDATE room_messages SET shown = ? WHERE room = ? AND author = ? AND seq = ? AND shown = 0"
)

// roomInsertSQL stores n rows, skipping any whose (room, author, seq) is
// stored: the writer gives each row its n, and the rows missing from the
// n it gave are those skipped.
func roomInsertSQL(n int) string {
	return "INSERT INTO room_messages (n, " + roomColumns + ") VALUES " + repeat("(?,?,?,?,?,?,?,?,?,?,0)", n) +
		" ON CONFLICT (room, author, seq) DO NOTHING"
}

// AddRoomMessages stores room messages, each unless one with the same
// (Room, Author, Seq) was stored before, in this run or an earlier one;
// within ms only the first of equal keys counts. done (may be nil) gets
// isNew[i], true where ms[i] was stored. Each message must pass
// protocol.RoomMessage.Validate, else the call stores nothing and done
// gets the error; the signature is not verified (room.Log.Add did). A zero
// Received is set to the time of the call; Shown is ignored (rows are
// stored not shown: see MarkRoomShown). done runs as AddOutgoing's does;
// the store reads ms until then.
func (s *Store) AddRoomMessages(ms []*RoomMessageRow, done func(isNew []bool, err error)) {
	o := roomInsertOp(ms)
	o.done = withFlags(done, func() []bool { return o.isNew })
	s.enqueue(o)
}

// AddRoomMessagesSync is AddRoomMessages that waits for the commit. If
// ctx ends first it returns ctx's error, and the messages may still be
// stored.
func (s *Store) AddRoomMessagesSync(ctx context.Context, ms []*RoomMessageRow) ([]bool, error) {
	o := roomInsertOp(ms)
	if err := s.call(ctx, o); err != nil {
		return nil, err
	}
	return o.isNew, nil
}

func roomInsertOp(ms []*RoomMessageRow) *op {
	o := &op{kind: opRoomInsert, rmsgs: ms, isNew: make([]bool, len(ms))}
	now := time.Now()
	for i, m := range ms {
		if m == nil {
			o.err = fmt.Errorf("store: AddRoomMessages: message %d is nil", i)
			return o
		}
		if err := m.Validate(); err != nil {
			o.err = fmt.Errorf("store: AddRoomMessages: message %d: %w", i, err)
			return o
		}
		if m.Received.IsZero() {
			m.Received = now
		}
	}
	return o
}

// MarkRoomShown gives the messages of room named by keys their display
// numbers, in the order of keys, each one past the last number given; a
// message already shown keeps its number, and a key not stored is skipped
// (the caller stores a message before it shows it). done runs as
// AddOutgoing's does.
func (s *Store) MarkRoomShown(room string, keys []RoomMsgKey, done func(error)) {
	o := roomShowOp(room, keys)
	o.done = orNop(done)
	s.enqueue(o)
}

// MarkRoomShownSync is MarkRoomShown that waits for the commit. If ctx
// ends first it returns ctx's error, and the change may still be made.
func (s *Store) MarkRoomShownSync(ctx context.Context, room string, keys []RoomMsgKey) error {
	return s.call(ctx, roomShowOp(room, keys))
}

func roomShowOp(room string, keys []RoomMsgKey) *op {
	o := &op{kind: opRoomShow, room: room, keys: keys}
	if !isRoomID(room) {
		o.err = badRoomID("MarkRoomShown", room)
		return o
	}
	for i, k := range keys {
		if k.Seq < 1 || k.Seq > protocol.MaxRoomSeq {
			o.err = fmt.Errorf("store: MarkRoomShown: key %d: seq %d is not from 1 to %d", i, k.Seq, uint64(protocol.MaxRoomSeq))
			return o
		}
	}
	return o
}

// roomRef points at one message of an op in the batch.
type roomRef struct {
	o *op
	i int
}

// roomInsert stores the messages of ops, stmtRows (or the largest power
// of two left) per statement, giving each row its n. When a statement
// stores fewer rows than it has, the n present tell which it stored;
// the others were stored before, or earlier in the batch. Their n are
// left unused.
func (w *writer) roomInsert(ctx context.Context, tx *sql.Tx, ops []*op) error {
	var all []roomRef
	for _, o := range ops {
		for i := range o.rmsgs {
			all = append(all, roomRef{o, i})
		}
	}
	for refs := all; len(refs) > 0; {
		n := chunk(len(refs))
		first := w.roomN
		args := w.args[:0]
		for _, r := range refs[:n] {
			m := r.o.rmsgs[r.i]
			w.depsBuf = appendDeps(w.depsBuf[:0], m.Deps)
			args = append(args, w.roomN, m.Room, m.Author, int64(m.Seq), m.Nick, m.Time, string(w.depsBuf),
				m.Text, m.Sig, m.Received.UnixMilli())
			w.roomN++
		}
		stored, err := w.execStmt(ctx, stmtKey{kind: opRoomInsert, n: n}, args)
		switch {
		case err != nil:
			return err
		case stored == int64(n):
			for _, r := range refs[:n] {
				r.o.isNew[r.i] = true
			}
		default:
			if err := markRoomStored(ctx, tx, refs[:n], first); err != nil {
				return err
			}
		}
		refs = refs[n:]
	}
	return nil
}

// markRoomStored sets isNew for the refs (given n from first on) that the
// last INSERT stored.
func markRoomStored(ctx context.Context, tx *sql.Tx, refs []roomRef, first int64) error {
	rows, err := tx.QueryContext(ctx, "SELECT n FROM room_messages WHERE n >= ? AND n < ?", first, first+int64(len(refs)))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			return err
		}
		r := refs[n-first]
		r.o.isNew[r.i] = true
	}
	return rows.Err()
}

// appendDeps appends deps as the JSON of the wire form, [] for none:
// [{"a":"<key>","s":3}]. Keys are base64 (Validate checked them), which
// JSON needs no escapes for.
func appendDeps(b []byte, deps []protocol.RoomSeq) []byte {
	b = append(b, '[')
	for i, d := range deps {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"a":"`...)
		b = append(b, d.Author...)
		b = append(b, `","s":`...)
		b = strconv.AppendUint(b, d.Seq, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// roomShow gives o's keys their display numbers, one statement per key.
func (w *writer) roomShow(ctx context.Context, o *op) error {
	for _, k := range o.keys {
		args := append(w.args[:0], w.shown+1, o.room, k.Author, int64(k.Seq))
		n, err := w.execStmt(ctx, stmtKey{kind: opRoomShow, n: 1}, args)
		if err != nil {
			return err
		}
		if n > 0 {
			w.shown++
			w.shownSet = true
		}
	}
	return nil
}

// RoomHistory returns the last limit messages shown in room, oldest
// first, in the order they were shown: what /history #name shows. limit
// <= 0 returns none.
func (s *Store) RoomHistory(ctx context.Context, room string, limit int) ([]RoomMessageRow, error) {
	if !isRoomID(room) {
		return nil, badRoomID("RoomHistory", room)
	}
	if limit <= 0 {
		return nil, nil
	}
	return s.queryRoom(ctx, roomHistorySQL, room, limit)
}

// RoomMessages returns the newest limit messages stored for room by their
// authors' clocks, shown or not, oldest first (ties in the order stored):
// what a restarted room.Log takes back to serve anti-entropy and to
// deliver what was still held. limit <= 0 returns all.
func (s *Store) RoomMessages(ctx context.Context, room string, limit int) ([]RoomMessageRow, error) {
	if !isRoomID(room) {
		return nil, badRoomID("RoomMessages", room)
	}
	return s.queryRoom(ctx, roomMessagesSQL, room, limitArg(limit))
}

// RoomAuthors sums up, per author with messages stored in room, what the
// store holds of it (see RoomAuthor), sorted by author. It reads the
// room's entries of an index (about 60 ms for 100,000 messages): it is
// for a restart, not for every message.
func (s *Store) RoomAuthors(ctx context.Context, room string) ([]RoomAuthor, error) {
	if !isRoomID(room) {
		return nil, badRoomID("RoomAuthors", room)
	}
	if s.shut.Load() {
		return nil, ErrClosed
	}
	const what = "read the room's authors"
	rows, err := s.rdb.QueryContext(ctx, roomAuthorsSQL, room)
	if err != nil {
		return nil, s.readErr(ctx, what, err)
	}
	defer rows.Close()
	var as []RoomAuthor
	for rows.Next() {
		var a RoomAuthor
		var lo, hi, shown int64
		if err := rows.Scan(&a.Author, &lo, &hi, &a.Count, &shown); err != nil {
			return nil, s.readErr(ctx, what, err)
		}
		a.Lowest, a.Highest, a.Shown = uint64(lo), uint64(hi), uint64(shown)
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(ctx, what, err)
	}
	return as, nil
}

// queryRoom runs a read of room_messages rows on the reader pool.
func (s *Store) queryRoom(ctx context.Context, q string, args ...any) ([]RoomMessageRow, error) {
	const what = "read the room's messages"
	if s.shut.Load() {
		return nil, ErrClosed
	}
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.readErr(ctx, what, err)
	}
	defer rows.Close()
	var ms []RoomMessageRow
	for rows.Next() {
		var m RoomMessageRow
		var seq, received int64
		var deps []byte
		if err := rows.Scan(&m.Room, &m.Author, &seq, &m.Nick, &m.Time, &deps, &m.Text, &m.Sig, &received, &m.Shown); err != nil {
			return nil, s.readErr(ctx, what, err)
		}
		if err := json.Unmarshal(deps, &m.Deps); err != nil {
			return nil, &storeError{
				msg:  fmt.Sprintf("store: %s: room message %d of %s: its deps are not JSON (%s); the database is damaged", s.name, seq, m.Author, oneLine(err)),
				kind: ErrCorrupt, cause: err,
			}
		}
		if len(m.Deps) == 0 {
			m.Deps = nil // as the decoder gives them
		}
		m.Seq, m.Received = uint64(seq), time.UnixMilli(received)
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(ctx, what, err)
	}
	return ms, nil
}

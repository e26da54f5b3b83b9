package store

import (
	"context"
	"database/sql"
	"strings"
	"sync/atomic"
	"time"
)

type opKind uint8

const (
	opInsert  opKind = iota + 1 // AddOutgoing, AddIncoming
	opDeliver                   // MarkDelivered
	opExpire                    // ExpireDue
	opIndex                     // one chunk of IndexSearch
	opFlush                     // Flush: writes nothing
)

// The room writes (rooms.go, roommsg.go).
const (
	opRoomInsert opKind = opFlush + 1 + iota // AddRoomMessages
	opRoomShow                               // MarkRoomShown
	opRoomExec                               // JoinRoom, LeaveRoom, SetCurrentRoom, NextRoomSeq
)

// op is one submitted operation, applied by the writer in submit order.
type op struct {
	kind opKind
	err  error      // refused when submitted (bad input): done gets it, nothing is written
	msgs []*Message // opInsert
	seqs []int64    // opDeliver
	at   time.Time  // opDeliver: the delivery time; opExpire: now
	done func(error)
	sync bool // a caller waits for done (call)

	rmsgs []*RoomMessageRow // opRoomInsert
	room  string            // opRoomShow
	keys  []RoomMsgKey      // opRoomShow
	// exec is an opRoomExec's work. It returns refused when the op cannot
	// apply (a room not joined) but the batch goes on, and err when the
	// transaction must fail.
	exec func(ctx context.Context, tx *sql.Tx) (refused, err error)

	// Results, set by the writer before done.
	newSeqs []int64   // opInsert: the seq of each stored message, 0 for duplicates
	rows    []Message // opExpire
	more    bool      // opIndex: unindexed rows remain
	isNew   []bool    // opRoomInsert: which messages were stored
	refused error     // opRoomExec: what done gets if the batch commits
}

// size is how many rows o writes, roughly: what bounds a transaction.
func (o *op) size() int {
	return len(o.msgs) + len(o.seqs) + len(o.rmsgs) + len(o.keys)
}

const (
	stmtRows   = 128   // rows of one multi-row INSERT (a power of two)
	maxIn      = 256   // seqs of one UPDATE ... IN (a power of two)
	txRows     = 65536 // rows of one transaction, roughly: bounds its latency
	indexChunk = 10000 // rows indexed per IndexSearch transaction
)

// The columns of messages, in the order scanMessage reads them.
const columns = "seq, id, peer_key, peer_nick, dir, text, sent_ms, received_ms, delivered_ms, expires_ms, status, encrypted"

// stmtKey names a prepared statement: a kind and its number of rows.
type stmtKey struct {
	kind opKind
	n    int
}

// writer owns the write connection: it alone writes, in one goroutine,
// so seqs can be assigned here (the lock file keeps other processes out).
type writer struct {
	s        *Store
	db       *sql.DB
	maxBatch int
	foldWait time.Duration
	held     []heldOp              // oldest first; see run
	stmts    map[stmtKey]*sql.Stmt // prepared on db, for every size used
	txStmts  map[stmtKey]*sql.Stmt // the same, bound to the current transaction
	args     []any
	refs     []inRef
	seqBuf   []int64
	commits  atomic.Int64 // committed transactions
	folded   atomic.Int64 // deliveries written with their message's insert
	updated  atomic.Int64 // seqs handed to the delivery UPDATE
	exited   chan struct{}

	rooms    bool  // the schema has the room tables (version 3 or later)
	roomN    int64 // the n of the next room_messages row
	shown    int64 // the last display number MarkRoomShown gave
	shownSet bool  // this transaction gave display numbers: meta must follow
	depsBuf  []byte
}

// inRef points at one message of an op in the batch.
type inRef struct {
	o *op
	i int
}

// newWriter prepares the writer's statements; rooms says the schema has
// the room tables (a store opened at an older version, in tests, has not).
func newWriter(ctx context.Context, s *Store, maxBatch int, foldWait time.Duration, rooms bool) (*writer, error) {
	w := &writer{
		s: s, db: s.wdb, maxBatch: maxBatch, foldWait: foldWait, rooms: rooms,
		stmts:   make(map[stmtKey]*sql.Stmt),
		txStmts: make(map[stmtKey]*sql.Stmt),
		exited:  make(chan struct{}),
	}
	var next int64
	if err := w.db.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) + 1 FROM messages").Scan(&next); err != nil {
		return nil, err
	}
	s.nextSeq.Store(next)
	if rooms {
		if err := w.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'room_shown'").Scan(&w.shown); err != nil {
			return nil, err
		}
		if err := w.db.QueryRowContext(ctx, "SELECT coalesce(max(n), 0) + 1 FROM room_messages").Scan(&w.roomN); err != nil {
			return nil, err
		}
	}
	// Prepare everything now: inside a transaction the only connection is
	// taken, and database/sql could not prepare on the handle.
	for n := 1; n <= maxIn; n *= 2 {
		q := map[stmtKey]string{{opDeliver, n}: "UPDATE messages SET status = 3, delivered_ms = ? WHERE status = 1 AND seq IN (" + repeat("?", n) + ")"}
		if n <= stmtRows {
			// OR IGNORE: the unique index drops incoming duplicates.
			q[stmtKey{opInsert, n}] = "INSERT OR IGNORE INTO messages (" + columns + ", conv) VALUES " + repeat("(?,?,?,?,?,?,?,?,?,?,?,?,?)", n)
			if rooms {
				q[stmtKey{opRoomInsert, n}] = roomInsertSQL(n)
			}
		}
		if rooms && n == 1 {
			q[stmtKey{opRoomShow, 1}] = roomShowSQL
		}
		for k, text := range q {
			st, err := w.db.PrepareContext(ctx, text)
			if err != nil {
				w.closeStmts()
				return nil, err
			}
			w.stmts[k] = st
		}
	}
	return w, nil
}

func repeat(s string, n int) string {
	return strings.TrimSuffix(strings.Repeat(s+",", n), ",")
}

func (w *writer) closeStmts() {
	for _, st := range w.stmts {
		st.Close()
	}
}

// run is the writer goroutine: it takes the first queued op, drains what
// else is queued (up to maxBatch ops and about txRows rows, without
// waiting), applies the batch in one transaction and calls every done. An
// index op gets a batch of its own. run returns when Close has closed the
// queue and everything in it is applied.
//
// With foldWait, an op that only inserts Pending outgoing messages, and
// for which no caller waits, is held back for up to foldWait (see
// Options.FoldWait): a delivery of one of its messages submitted meanwhile
// is folded into it (see fold) and the op is written at once, Delivered,
// in the delivery's transaction. Whatever a caller waits for (a Sync
// call, Flush, Settle) and every Close writes the held ops first, so
// "everything submitted before has committed" stays true for them; a
// done may therefore come after the dones of ops submitted later.
func (w *writer) run() {
	defer close(w.exited)
	var batch, ready []*op
	var carry *op
	var timer *time.Timer
	for open := true; open || carry != nil || len(w.held) > 0; {
		batch = batch[:0]
		switch {
		case carry != nil:
			batch, carry = append(batch, carry), nil
		case !open:
			// Closed: write what is held.
		case len(w.held) > 0:
			// Wait for an op, or until the oldest held op is due.
			d := time.Until(w.held[0].at.Add(w.foldWait))
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case o, ok := <-w.s.ops:
				timer.Stop() // Go 1.23 timers: nothing stale is received later
				if ok {
					batch = append(batch, o)
				} else {
					open = false
				}
			case <-timer.C:
			}
		default:
			o, ok := <-w.s.ops
			if !ok {
				return
			}
			batch = append(batch, o)
		}
		rows := 0
		if len(batch) > 0 {
			rows = batch[0].size()
		}
	drain:
		for open && (len(batch) == 0 || batch[0].kind != opIndex) && len(batch) < w.maxBatch && rows < txRows {
			select {
			case o, ok := <-w.s.ops:
				switch {
				case !ok:
					open = false
					break drain
				case o.kind == opIndex && len(batch) > 0:
					carry = o
					break drain
				}
				batch = append(batch, o)
				rows += 1 + o.size()
			default:
				break drain
			}
		}
		ready = w.sort(batch, ready[:0], !open || carry != nil)
		if len(ready) > 0 {
			w.apply(ready)
		}
		clear(batch)
		clear(ready)
	}
}

// heldOp is an op held back for deliveries to fold into.
type heldOp struct {
	o  *op
	at time.Time // when the writer took it
}

// sort appends to ready the ops of batch to apply now, in order, and
// holds back the others (see run). flush (Close, or an index op next)
// writes every held op.
func (w *writer) sort(batch, ready []*op, flush bool) []*op {
	now := time.Now()
	for _, o := range batch {
		switch {
		case w.foldWait > 0 && holdable(o):
			w.held = append(w.held, heldOp{o, now})
			continue
		case o.sync || o.kind == opFlush || o.kind == opIndex:
			for _, h := range w.held {
				ready = append(ready, h.o)
			}
			clear(w.held)
			w.held = w.held[:0]
		case o.kind == opDeliver && o.err == nil && len(w.held) > 0:
			// Held ops with a message delivered here go first, so
			// that fold writes them Delivered in this transaction.
			ready = w.release(ready, o.seqs)
		}
		ready = append(ready, o)
	}
	// Held ops that are due, and all when flushing at the end.
	i := 0
	for ; i < len(w.held) && (flush || !now.Before(w.held[i].at.Add(w.foldWait))); i++ {
		ready = append(ready, w.held[i].o)
	}
	if i > 0 {
		n := copy(w.held, w.held[i:])
		clear(w.held[n:])
		w.held = w.held[:n]
	}
	return ready
}

// release moves the held ops that insert any of seqs to ready.
func (w *writer) release(ready []*op, seqs []int64) []*op {
	want := make(map[int64]bool, len(seqs))
	for _, seq := range seqs {
		want[seq] = true
	}
	kept := w.held[:0]
	for _, h := range w.held {
		if want[h.o.msgs[0].Seq] {
			ready = append(ready, h.o)
		} else {
			kept = append(kept, h)
		}
	}
	clear(w.held[len(kept):])
	w.held = kept
	return ready
}

// holdable reports whether o may be held back: an asynchronous
// AddOutgoing of a Pending message.
func holdable(o *op) bool {
	return o.kind == opInsert && o.err == nil && !o.sync && len(o.msgs) == 1 &&
		o.msgs[0].Dir == Out && o.msgs[0].Status == Pending && o.msgs[0].Seq != 0
}

// apply runs batch in one transaction and then calls every done, in order.
// If the transaction fails, nothing of it is stored and every op gets the
// error.
func (w *writer) apply(batch []*op) {
	var err error
	for _, o := range batch {
		if o.err == nil && o.kind != opFlush {
			if err = w.exec(batch); err != nil {
				// A failed COMMIT may leave the transaction open; there
				// is only one connection, so this reaches it.
				w.db.Exec("ROLLBACK")
				err = fail(w.s.name, "write", err)
				w.s.noteErr(err)
			} else {
				w.commits.Add(1)
			}
			break
		}
	}
	for _, o := range batch {
		if o.err != nil {
			o.done(o.err)
			continue
		}
		if err == nil && o.refused != nil {
			o.done(o.refused)
			continue
		}
		if err == nil {
			for i, seq := range o.newSeqs {
				// An outgoing message has its seq already, and its
				// poster may be reading it.
				if seq != 0 && o.msgs[i].Seq != seq {
					o.msgs[i].Seq = seq
				}
			}
		}
		o.done(err)
	}
}

func (w *writer) exec(batch []*op) (err error) {
	ctx := context.Background()
	tx, err := w.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: _txlock
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	clear(w.txStmts)
	w.fold(batch)
	w.shownSet = false
	for i := 0; i < len(batch); {
		o, j := batch[i], i+1
		// Consecutive ops of one kind share multi-row statements.
		for o.err == nil && (o.kind == opInsert || o.kind == opDeliver || o.kind == opRoomInsert) && j < len(batch) &&
			batch[j].kind == o.kind && batch[j].err == nil && sameMillis(batch[j].at, o.at) {
			j++
		}
		switch {
		case o.err != nil:
		case o.kind == opInsert:
			err = w.insert(ctx, tx, batch[i:j])
		case o.kind == opDeliver:
			err = w.deliver(ctx, tx, batch[i:j])
		case o.kind == opExpire:
			err = w.expire(ctx, tx, o)
		case o.kind == opIndex:
			err = w.index(ctx, tx, o)
		case o.kind >= opRoomInsert && !w.rooms:
			err = errNoRoomTables
		case o.kind == opRoomInsert:
			err = w.roomInsert(ctx, tx, batch[i:j])
		case o.kind == opRoomShow:
			err = w.roomShow(ctx, tx, o)
		case o.kind == opRoomExec:
			o.refused, err = o.exec(ctx, tx)
		}
		if err != nil {
			return err
		}
		i = j
	}
	if w.shownSet {
		if _, err := tx.ExecContext(ctx, "UPDATE meta SET value = ? WHERE key = 'room_shown'", w.shown); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (w *writer) stmt(ctx context.Context, tx *sql.Tx, k stmtKey) *sql.Stmt {
	st := w.txStmts[k]
	if st == nil {
		st = tx.StmtContext(ctx, w.stmts[k])
		w.txStmts[k] = st
	}
	return st
}

// fold applies deliveries to the outgoing messages inserted earlier in
// the same batch: they are inserted Delivered, and their deliver ops skip
// them. A sender's chat writes a message while its row is being stored,
// so under load its ack is often back before the row is written; folding
// then saves the UPDATE of every such row (a fifth of a busy sender's
// CPU). The commit is one transaction either way.
func (w *writer) fold(batch []*op) {
	var rows map[int64]*Message
	for _, o := range batch {
		switch {
		case o.err != nil:
		case o.kind == opInsert:
			for _, m := range o.msgs {
				if m.Dir == Out && m.Status == Pending && m.Seq != 0 {
					if rows == nil {
						rows = make(map[int64]*Message)
					}
					rows[m.Seq] = m
				}
			}
		case o.kind == opDeliver && rows != nil:
			var left []int64
			for i, seq := range o.seqs {
				m, ok := rows[seq]
				if !ok {
					if left != nil {
						left = append(left, seq)
					}
					continue
				}
				if left == nil {
					left = append(make([]int64, 0, len(o.seqs)), o.seqs[:i]...)
				}
				m.Status, m.Delivered = Delivered, o.at
				delete(rows, seq)
				w.folded.Add(1)
			}
			if left != nil {
				o.seqs = left
			}
		}
	}
}

// insert stores the messages of ops, stmtRows (or the largest power of two
// left) per statement. An outgoing message has its seq from AddOutgoing;
// the others get theirs here. When a statement stored fewer rows than it
// had, the unique index dropped incoming duplicates, and the seqs present
// tell which; the dropped ones leave gaps in seq.
func (w *writer) insert(ctx context.Context, tx *sql.Tx, ops []*op) error {
	all := w.refs[:0]
	for _, o := range ops {
		o.newSeqs = make([]int64, len(o.msgs))
		for i := range o.msgs {
			all = append(all, inRef{o, i})
		}
	}
	defer func() { clear(all); w.refs = all[:0] }()
	for refs := all; len(refs) > 0; {
		n := chunk(len(refs))
		args := w.args[:0]
		seqs := w.seqBuf[:0]
		for _, r := range refs[:n] {
			m := r.o.msgs[r.i]
			seq := m.Seq
			if m.Dir != Out || seq == 0 {
				seq = w.s.nextSeq.Add(1) - 1
			}
			seqs = append(seqs, seq)
			args = append(args, seq, m.ID, m.PeerKey, m.PeerNick, int64(m.Dir), m.Text,
				millis(m.Sent), millis(m.Received), millis(m.Delivered), millis(m.Expires),
				int64(m.Status), boolInt(m.Encrypted), convOf(m.PeerKey, m.PeerNick))
		}
		w.seqBuf = seqs[:0]
		stored, err := w.execRows(ctx, tx, stmtKey{opInsert, n}, args)
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

// execRows runs the prepared multi-row statement k with args (w.args,
// which it clears for reuse) and returns how many rows it changed.
func (w *writer) execRows(ctx context.Context, tx *sql.Tx, k stmtKey, args []any) (int64, error) {
	res, err := w.stmt(ctx, tx, k).ExecContext(ctx, args...)
	clear(args)
	w.args = args[:0]
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
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

// deliver marks the seqs of ops (which share one delivery millisecond)
// Delivered. Short IN lists are padded to a power of two by repeating the
// last seq, so a handful of prepared statements serve every length.
func (w *writer) deliver(ctx context.Context, tx *sql.Tx, ops []*op) error {
	seqs := w.seqBuf[:0]
	for _, o := range ops {
		seqs = append(seqs, o.seqs...)
	}
	w.seqBuf = seqs[:0]
	w.updated.Add(int64(len(seqs)))
	for len(seqs) > 0 {
		n, p := min(len(seqs), maxIn), 1
		for p < n {
			p *= 2
		}
		args := append(w.args[:0], millis(ops[0].at))
		for k := range p {
			args = append(args, seqs[min(k, n-1)])
		}
		_, err := w.stmt(ctx, tx, stmtKey{opDeliver, p}).ExecContext(ctx, args...)
		clear(args)
		w.args = args[:0]
		if err != nil {
			return err
		}
		seqs = seqs[n:]
	}
	return nil
}

func (w *writer) expire(ctx context.Context, tx *sql.Tx, o *op) error {
	rows, err := tx.QueryContext(ctx, "UPDATE messages SET status = 4 WHERE status = 1 AND expires_ms <= ? RETURNING "+columns, millis(o.at))
	if err == nil {
		o.rows, err = scanMessages(rows)
	}
	return err
}

// index adds up to indexChunk messages past the high-water mark to the
// full-text index and moves the mark.
func (w *writer) index(ctx context.Context, tx *sql.Tx, o *op) error {
	var mark int64
	var hi sql.NullInt64
	var n int
	err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'fts_seq'").Scan(&mark)
	if err == nil {
		err = tx.QueryRowContext(ctx, "SELECT max(seq), count(*) FROM (SELECT seq FROM messages WHERE seq > ? ORDER BY seq LIMIT ?)",
			mark, indexChunk).Scan(&hi, &n)
	}
	if err != nil || n == 0 {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO messages_fts (rowid, text) SELECT seq, text FROM messages WHERE seq > ? AND seq <= ?",
		mark, hi.Int64); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE meta SET value = ? WHERE key = 'fts_seq'", hi.Int64)
	o.more = n == indexChunk
	return err
}

// millis is t in unix milliseconds, or nil (SQL NULL) for the zero time.
func millis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func sameMillis(a, b time.Time) bool {
	return a.IsZero() == b.IsZero() && a.UnixMilli() == b.UnixMilli()
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

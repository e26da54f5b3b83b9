package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
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
	err  error       // refused when submitted (bad input): done gets it, nothing is written
	msgs []*Message  // opInsert
	one  [1]*Message // msgs of an AddOutgoing: one allocation less a message
	seqs []int64     // opDeliver
	at   time.Time   // opDeliver: the delivery time; opExpire: now
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
	oneSeq  [1]int64  // newSeqs of an AddOutgoing
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

// writer owns the write connection: it alone writes, in one goroutine,
// so seqs can be assigned here (the lock file keeps other processes out).
type writer struct {
	s        *Store
	db       *sql.DB
	maxBatch int
	foldWait time.Duration
	held     []heldOp  // oldest first; see run
	conn     *sql.Conn // the connection of the current transaction
	stmts    stmts     // prepared on conn's driver connection
	args     []any
	nv       []driver.NamedValue
	times    times
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
		exited: make(chan struct{}),
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
	return w, nil
}

func repeat(s string, n int) string {
	return strings.TrimSuffix(strings.Repeat(s+",", n), ",")
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
	// The statements run on the driver's connection (see execStmt):
	// the transaction is on a *sql.Conn so that they reach it too.
	conn, err := w.db.Conn(ctx)
	if err != nil {
		return err
	}
	var tx *sql.Tx
	w.conn = conn
	defer func() {
		if err != nil {
			if tx != nil {
				tx.Rollback()
			}
			// A failed COMMIT may leave the transaction open.
			conn.ExecContext(ctx, "ROLLBACK")
		}
		w.conn = nil
		conn.Close()
	}()
	if tx, err = conn.BeginTx(ctx, nil); err != nil { // BEGIN IMMEDIATE: _txlock
		return err
	}
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
			err = w.deliver(ctx, batch[i:j])
		case o.kind == opExpire:
			err = w.expire(ctx, tx, o)
		case o.kind == opIndex:
			err = w.index(ctx, tx, o)
		case o.kind >= opRoomInsert && !w.rooms:
			err = errNoRoomTables
		case o.kind == opRoomInsert:
			err = w.roomInsert(ctx, tx, batch[i:j])
		case o.kind == opRoomShow:
			err = w.roomShow(ctx, o)
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

// deliver marks the seqs of ops (which share one delivery millisecond)
// Delivered. Short IN lists are padded to a power of two by repeating the
// last seq, so a handful of prepared statements serve every length.
func (w *writer) deliver(ctx context.Context, ops []*op) error {
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
		if _, err := w.execStmt(ctx, stmtKey{kind: opDeliver, n: p}, args); err != nil {
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

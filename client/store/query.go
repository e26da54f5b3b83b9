package store

import (
	"context"
	"database/sql"
	"errors"
	"sort"
	"strings"
	"time"
	"unicode"
)

// Reads whose plans matter (a test checks them). conv picks the index
// entries, the text comparisons make the result exact. INDEXED BY, since
// SQLite would as soon scan a peer's whole history in
// messages_conversation.
const (
	pendingSQL = "SELECT " + columns + " FROM messages INDEXED BY messages_pending WHERE status = 1 AND conv = ? AND peer_key = ? AND seq > ? ORDER BY seq LIMIT ?"
	historySQL = "SELECT " + columns + " FROM (SELECT " + columns + " FROM messages WHERE conv = ? AND peer_key = ? AND (peer_key != '' OR peer_nick = ?) ORDER BY seq DESC LIMIT ?) ORDER BY seq"
	searchSQL  = "SELECT " + columns + " FROM messages WHERE seq IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT ?) ORDER BY seq DESC"
)

// scanMessages reads rows of columns into Messages and closes rows.
func scanMessages(rows *sql.Rows) ([]Message, error) {
	defer rows.Close()
	var ms []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

func scanMessage(row interface{ Scan(...any) error }) (Message, error) {
	var m Message
	var sent, received, delivered, expires sql.NullInt64
	var dir, status, encrypted int64
	err := row.Scan(&m.Seq, &m.ID, &m.PeerKey, &m.PeerNick, &dir, &m.Text,
		&sent, &received, &delivered, &expires, &status, &encrypted)
	m.Dir, m.Status, m.Encrypted = Direction(dir), Status(status), encrypted != 0
	m.Sent, m.Received, m.Delivered, m.Expires = fromMillis(sent), fromMillis(received), fromMillis(delivered), fromMillis(expires)
	return m, err
}

func fromMillis(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64)
}

// limitArg turns "0 or less: no limit" into SQLite's LIMIT -1.
func limitArg(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// query runs a read on the reader pool.
func (s *Store) query(ctx context.Context, what, q string, args ...any) ([]Message, error) {
	if s.shut.Load() {
		return nil, ErrClosed
	}
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err == nil {
		var ms []Message
		if ms, err = scanMessages(rows); err == nil {
			return ms, nil
		}
	}
	return nil, s.readErr(ctx, what, err)
}

func (s *Store) readErr(ctx context.Context, what string, err error) error {
	switch {
	case s.shut.Load():
		return ErrClosed
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return err
	}
	return fail(s.name, what, err)
}

// Pending returns the outgoing Pending messages for peerKey with Seq >
// afterSeq, ascending, at most limit of them (limit <= 0: all). peerKey ""
// has none: messages to peers without a key cannot be acknowledged.
func (s *Store) Pending(ctx context.Context, peerKey string, afterSeq int64, limit int) ([]Message, error) {
	if peerKey == "" {
		return nil, nil
	}
	return s.query(ctx, "read the queue", pendingSQL, convOf(peerKey, ""), peerKey, afterSeq, limitArg(limit))
}

// Queue returns every outgoing Pending message, ascending Seq.
func (s *Store) Queue(ctx context.Context) ([]Message, error) {
	return s.query(ctx, "read the queue", "SELECT "+columns+" FROM messages WHERE status = 1 ORDER BY seq")
}

// QueueSummary returns, per PeerKey with Pending messages, their count,
// the nickname of the latest of them and the Sent time of the oldest,
// sorted by nickname (then key).
func (s *Store) QueueSummary(ctx context.Context) ([]PeerQueue, error) {
	if s.shut.Load() {
		return nil, ErrClosed
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT peer_key, count(*), min(sent_ms),
	(SELECT peer_nick FROM messages l INDEXED BY messages_pending
		WHERE l.status = 1 AND l.conv = m.conv AND l.peer_key = m.peer_key ORDER BY l.seq DESC LIMIT 1)
	FROM messages m WHERE status = 1 GROUP BY peer_key`)
	if err != nil {
		return nil, s.readErr(ctx, "read the queue", err)
	}
	defer rows.Close()
	var qs []PeerQueue
	for rows.Next() {
		var q PeerQueue
		var oldest sql.NullInt64
		if err := rows.Scan(&q.PeerKey, &q.Count, &oldest, &q.PeerNick); err != nil {
			return nil, s.readErr(ctx, "read the queue", err)
		}
		q.Oldest = fromMillis(oldest)
		qs = append(qs, q)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(ctx, "read the queue", err)
	}
	sort.Slice(qs, func(i, j int) bool {
		if qs[i].PeerNick != qs[j].PeerNick {
			return qs[i].PeerNick < qs[j].PeerNick
		}
		return qs[i].PeerKey < qs[j].PeerKey
	})
	return qs, nil
}

// ExpireDue turns every Pending message with Expires <= now into Expired
// and returns those rows (Status already Expired), ascending Seq. It goes
// through the writer, ordered with the other writes; if ctx ends before
// the answer, the messages may have expired all the same (Stats shows it).
func (s *Store) ExpireDue(ctx context.Context, now time.Time) ([]Message, error) {
	o := &op{kind: opExpire, at: now}
	if err := s.call(ctx, o); err != nil {
		return nil, err
	}
	sort.Slice(o.rows, func(i, j int) bool { return o.rows[i].Seq < o.rows[j].Seq })
	return o.rows, nil
}

// History returns the last n messages of one conversation, oldest first:
// by PeerKey when peerKey != "", else those with PeerKey "" and PeerNick
// peerNick. n <= 0 returns none.
func (s *Store) History(ctx context.Context, peerKey, peerNick string, n int) ([]Message, error) {
	if n <= 0 {
		return nil, nil
	}
	return s.query(ctx, "read the history", historySQL, convOf(peerKey, peerNick), peerKey, peerNick, n)
}

// Search returns the messages whose Text matches every word of query
// (a word ending in * matches as a prefix), newest first, at most limit
// (limit <= 0: all). Words are matched literally: FTS5 syntax in query
// ("AND", quotes, parentheses, ':', '-', ...) is not interpreted. It
// first brings the index up to date, so the result is complete. A query
// with no words is an error; one whose words hold no letters or digits
// matches nothing.
func (s *Store) Search(ctx context.Context, query string, limit int) ([]Message, error) {
	if strings.TrimSpace(query) == "" {
		return nil, errEmptyQuery
	}
	match := ftsQuery(query)
	if match == "" {
		return nil, nil
	}
	if err := s.IndexSearch(ctx); err != nil {
		return nil, err
	}
	return s.query(ctx, "search", searchSQL, match, limitArg(limit))
}

// ftsQuery turns the user's words into an FTS5 query of quoted strings:
// each word becomes "word" (with " doubled), a trailing * a prefix match.
// Words without a letter or digit are dropped: the tokenizer would find
// nothing in them.
func ftsQuery(q string) string {
	var terms []string
	for _, w := range strings.Fields(q) {
		prefix := strings.HasSuffix(w, "*")
		w = strings.TrimRight(w, "*")
		if strings.IndexFunc(w, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }) < 0 {
			continue
		}
		t := `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
		if prefix {
			t += "*"
		}
		terms = append(terms, t)
	}
	return strings.Join(terms, " ")
}

// IndexSearch brings the full-text index up to date, indexChunk messages
// per transaction through the writer, so other writes go on between the
// chunks. Search calls it; the chat calls it when idle.
func (s *Store) IndexSearch(ctx context.Context) error {
	for {
		o := &op{kind: opIndex}
		if err := s.call(ctx, o); err != nil || !o.more {
			return err
		}
	}
}

// Get returns the message with Seq seq, or ErrNotFound.
func (s *Store) Get(ctx context.Context, seq int64) (Message, error) {
	ms, err := s.query(ctx, "read a message", "SELECT "+columns+" FROM messages WHERE seq = ?", seq)
	if err != nil {
		return Message{}, err
	}
	if len(ms) == 0 {
		return Message{}, ErrNotFound
	}
	return ms[0], nil
}

// Stats counts the messages by status. It reads the whole table: it is
// for /queue and tests, not for every message.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	if s.shut.Load() {
		return st, ErrClosed
	}
	err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status = 2),
	count(*) FILTER (WHERE status = 3), count(*) FILTER (WHERE status = 4), count(*) FILTER (WHERE status = 5) FROM messages`).
		Scan(&st.Pending, &st.Sent, &st.Delivered, &st.Expired, &st.Received)
	if err != nil {
		return Stats{}, s.readErr(ctx, "count messages", err)
	}
	return st, nil
}

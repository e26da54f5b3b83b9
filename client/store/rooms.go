package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// RoomRow is one joined room as the store keeps it: what a member needs to
// rebuild the room after a restart (room.FromKey(Name, Key, Private)).
type RoomRow struct {
	ID      string    // the room ID: protocol.RoomIDLen lowercase hex characters
	Name    string    // the room name with its '#', as room.Name.String gives it
	Key     [32]byte  // the room key (room.Room.Key); the secret is never stored
	Private bool      // joined with a secret
	Joined  time.Time // when we joined (room.LogConfig.Joined), to the millisecond
	Current bool      // the current room: where a line without a command goes
	NextSeq uint64    // our own next seq in the room; at least 1
}

var (
	// errNotJoined: SetCurrentRoom or NextRoomSeq named a room with no row.
	errNotJoined = errors.New("not joined")
	// errNoRoomTables: a room write on a store opened at a schema version
	// before 3 (only tests open one).
	errNoRoomTables = errors.New("store: the schema has no room tables")
)

// JoinRoom stores r as a joined room, or updates the row of a room joined
// before: then Name, Key and Private are replaced, Joined is kept (it is
// when we first joined, where the room's history starts for us), NextSeq
// becomes the higher of the two. Current true makes r the current room
// (and no other); false leaves r not current. A zero Joined is the time
// of the call, a zero NextSeq 1. It goes through the writer, ordered with
// the other writes, and returns once committed. The key is stored, never
// the secret: see the package doc.
func (s *Store) JoinRoom(ctx context.Context, r RoomRow) error {
	o := &op{kind: opRoomExec}
	switch {
	case !isRoomID(r.ID):
		o.err = badRoomID("JoinRoom", r.ID)
	case len(r.Name) < 2 || r.Name[0] != '#':
		o.err = fmt.Errorf("store: JoinRoom: %q is not a room name ('#' and its name)", r.Name)
	case r.Key == [32]byte{}:
		o.err = fmt.Errorf("store: JoinRoom %s: the room key is zero", r.Name)
	case r.NextSeq > protocol.MaxRoomSeq+1:
		o.err = fmt.Errorf("store: JoinRoom %s: next seq %d is past the highest seq, %d", r.Name, r.NextSeq, uint64(protocol.MaxRoomSeq))
	}
	if r.Joined.IsZero() {
		r.Joined = time.Now()
	}
	r.NextSeq = max(r.NextSeq, 1)
	o.exec = func(ctx context.Context, tx *sql.Tx) (error, error) {
		if r.Current {
			if _, err := tx.ExecContext(ctx, "UPDATE rooms SET current = 0 WHERE current = 1 AND id != ?", r.ID); err != nil {
				return nil, err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO rooms (id, name, key, private, joined_ms, current, next_seq) VALUES (?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (id) DO UPDATE SET name = excluded.name, key = excluded.key, private = excluded.private,
		current = excluded.current, next_seq = max(next_seq, excluded.next_seq)`,
			r.ID, r.Name, r.Key[:], boolInt(r.Private), r.Joined.UnixMilli(), boolInt(r.Current), int64(r.NextSeq))
		return nil, err
	}
	return s.call(ctx, o)
}

// LeaveRoom deletes the room's row; leaving a room not joined does
// nothing. The room's messages stay: /history still shows them, and a
// member that joins again keeps what it had (RoomAuthors), so it neither
// shows a message twice nor reuses a seq of its own.
func (s *Store) LeaveRoom(ctx context.Context, id string) error {
	o := &op{kind: opRoomExec}
	if !isRoomID(id) {
		o.err = badRoomID("LeaveRoom", id)
	}
	o.exec = func(ctx context.Context, tx *sql.Tx) (error, error) {
		_, err := tx.ExecContext(ctx, "DELETE FROM rooms WHERE id = ?", id)
		return nil, err
	}
	return s.call(ctx, o)
}

// SetCurrentRoom makes the joined room id the current one, and no other;
// id "" clears the current room. A room not joined is an error, and then
// nothing changes.
func (s *Store) SetCurrentRoom(ctx context.Context, id string) error {
	o := &op{kind: opRoomExec}
	if id != "" && !isRoomID(id) {
		o.err = badRoomID("SetCurrentRoom", id)
	}
	o.exec = func(ctx context.Context, tx *sql.Tx) (error, error) {
		if id != "" {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM rooms WHERE id = ?", id).Scan(&n); err != nil {
				return nil, err
			}
			if n == 0 {
				return fmt.Errorf("store: SetCurrentRoom: room %s is %w", id, errNotJoined), nil
			}
		}
		// Two statements: the unique index is checked row by row.
		if _, err := tx.ExecContext(ctx, "UPDATE rooms SET current = 0 WHERE current = 1 AND id != ?", id); err != nil {
			return nil, err
		}
		_, err := tx.ExecContext(ctx, "UPDATE rooms SET current = 1 WHERE id = ?", id)
		return nil, err
	}
	return s.call(ctx, o)
}

// NextRoomSeq records that our next seq in the room is at least next: the
// row keeps the higher of next and what it has, so it never goes back. The
// chat records it before a message with seq next-1 leaves, so that a
// restart never reuses a seq, even when no member has the message to give
// back. A room not joined is an error.
func (s *Store) NextRoomSeq(ctx context.Context, id string, next uint64) error {
	o := &op{kind: opRoomExec}
	switch {
	case !isRoomID(id):
		o.err = badRoomID("NextRoomSeq", id)
	case next < 1 || next > protocol.MaxRoomSeq+1:
		o.err = fmt.Errorf("store: NextRoomSeq: next seq %d is not from 1 to %d", next, uint64(protocol.MaxRoomSeq)+1)
	}
	o.exec = func(ctx context.Context, tx *sql.Tx) (error, error) {
		res, err := tx.ExecContext(ctx, "UPDATE rooms SET next_seq = max(next_seq, ?) WHERE id = ?", int64(next), id)
		var n int64
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err == nil && n == 0 {
			return fmt.Errorf("store: NextRoomSeq: room %s is %w", id, errNotJoined), nil
		}
		return nil, err
	}
	return s.call(ctx, o)
}

// Rooms returns the joined rooms, sorted by name.
func (s *Store) Rooms(ctx context.Context) ([]RoomRow, error) {
	if s.shut.Load() {
		return nil, ErrClosed
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT id, name, key, private, joined_ms, current, next_seq FROM rooms ORDER BY name, id")
	if err != nil {
		return nil, s.readErr(ctx, "read the rooms", err)
	}
	defer rows.Close()
	var rs []RoomRow
	for rows.Next() {
		var r RoomRow
		var key []byte
		var private, current bool
		var joined, next int64
		if err := rows.Scan(&r.ID, &r.Name, &key, &private, &joined, &current, &next); err != nil {
			return nil, s.readErr(ctx, "read the rooms", err)
		}
		if len(key) != len(r.Key) {
			return nil, &storeError{
				msg:  fmt.Sprintf("store: %s: room %s has a key of %d bytes, not %d; the database is damaged", s.name, r.Name, len(key), len(r.Key)),
				kind: ErrCorrupt,
			}
		}
		copy(r.Key[:], key)
		r.Private, r.Current, r.Joined, r.NextSeq = private, current, time.UnixMilli(joined), uint64(next)
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(ctx, "read the rooms", err)
	}
	return rs, nil
}

// isRoomID reports whether id is a room ID: protocol.RoomIDLen lowercase
// hex characters.
func isRoomID(id string) bool {
	if len(id) != protocol.RoomIDLen {
		return false
	}
	return strings.Trim(id, "0123456789abcdef") == ""
}

func badRoomID(method, id string) error {
	return fmt.Errorf("store: %s: %q is not a room ID (%d characters 0-9, a-f)", method, truncate(id, 40), protocol.RoomIDLen)
}

// truncate shortens s for an error message, without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
)

// convOf is a conversation's key in the indexes: a 63-bit FNV-1a hash of
// the peer's identity key, or of its nickname when it has no key. Integer
// index entries are small and cheap to compare: measured, they carry 1.5
// to 2 times as many messages per second as entries of the two texts.
// Queries also compare the texts, so a collision never mixes two
// conversations in a result; it could only make two messages with one id
// from two colliding peers count as one (odds about n²/2⁶⁴ for n peers).
func convOf(peerKey, peerNick string) int64 {
	h := fnv.New64a()
	if peerKey != "" {
		h.Write([]byte{'k'})
		h.Write([]byte(peerKey))
	} else {
		h.Write([]byte{'n'})
		h.Write([]byte(peerNick))
	}
	return int64(h.Sum64() >> 1)
}

// migrations[i] brings a database from schema version i to i+1. Each step
// runs in its own transaction, which also sets PRAGMA user_version. Add
// steps at the end; never change one that has shipped.
var migrations = []func(ctx context.Context, tx *sql.Tx) error{
	migrateV1,
	migrateV2,
	migrateV3,
}

// roomsVersion is the schema version that has the room tables.
const roomsVersion = 3

// migrateV1 creates the message table and the indexes of the write path.
// conv is convOf(peer_key, peer_nick).
func migrateV1(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, peer_key TEXT NOT NULL, peer_nick TEXT NOT NULL,
	dir INTEGER NOT NULL, text TEXT NOT NULL, sent_ms INTEGER, received_ms INTEGER, delivered_ms INTEGER, expires_ms INTEGER,
	status INTEGER NOT NULL, encrypted INTEGER NOT NULL, conv INTEGER NOT NULL)`,
		// An incoming id is stored once per sender, in any run.
		`CREATE UNIQUE INDEX messages_incoming_id ON messages (conv, id) WHERE dir = 2 AND id != ''`,
		// The offline queue: Pending, Queue, ExpireDue.
		`CREATE INDEX messages_pending ON messages (conv, seq) WHERE status = 1`,
		// History of one conversation.
		`CREATE INDEX messages_conversation ON messages (conv, seq)`,
	)
}

// migrateV2 adds the full-text index, kept off the write path: meta's
// fts_seq is the highest seq indexed so far, and IndexSearch catches up.
// Messages stored under version 1 are indexed by the first IndexSearch.
func migrateV2(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='seq', tokenize='unicode61 remove_diacritics 2')`,
		`CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
		`INSERT INTO meta (key, value) VALUES ('fts_seq', 0)`,
	)
}

// migrateV3 adds rooms: the joined rooms, with their keys (never their
// secrets), and every room message held or shown, stored once per (room,
// author, seq) in any run. n is the order rows were stored in, given by
// the writer. shown is 0 for a message held but not shown yet, else its
// display number; meta's room_shown is the last number given, so numbers
// keep increasing across runs. The partial unique index keeps one room
// current at most.
func migrateV3(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE rooms (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, key BLOB NOT NULL, private INTEGER NOT NULL,
	joined_ms INTEGER NOT NULL, current INTEGER NOT NULL DEFAULT 0, next_seq INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID`,
		`CREATE UNIQUE INDEX rooms_current ON rooms (current) WHERE current = 1`,
		`CREATE TABLE room_messages (n INTEGER PRIMARY KEY, room TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
	nick TEXT NOT NULL, time_ms INTEGER NOT NULL, deps TEXT NOT NULL, text TEXT NOT NULL, sig TEXT NOT NULL,
	received_ms INTEGER NOT NULL, shown INTEGER NOT NULL DEFAULT 0)`,
		// Dedupe, and RoomAuthors.
		`CREATE UNIQUE INDEX room_messages_key ON room_messages (room, author, seq)`,
		// RoomHistory: the shown messages of a room in display order.
		`CREATE INDEX room_messages_shown ON room_messages (room, shown)`,
		// RoomMessages: the newest messages of a room. It costs inserts
		// about 7%; without it, reading the newest 500 of 100,000 took
		// 0.5 s (a sort of the whole room), with it 6 ms.
		`CREATE INDEX room_messages_time ON room_messages (room, time_ms)`,
		`INSERT INTO meta (key, value) VALUES ('room_shown', 0)`,
	)
}

func execAll(ctx context.Context, tx *sql.Tx, stmts ...string) error {
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// migrate brings the database up to schema version upto (len(migrations)
// for a normal Open), each step in its own transaction. name is for errors.
func migrate(ctx context.Context, db *sql.DB, name string, upto int) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fail(name, "open", err)
	}
	if v < 0 || v > len(migrations) {
		return &storeError{
			msg: fmt.Sprintf("store: %s: the file has schema version %d but this parlance knows versions up to %d; use a newer parlance with this profile",
				name, v, len(migrations)),
			kind: ErrTooNew,
		}
	}
	for ; v < upto; v++ {
		if err := migrateStep(ctx, db, v); err != nil {
			return fail(name, fmt.Sprintf("open: upgrading the schema to version %d", v+1), err)
		}
	}
	return nil
}

func migrateStep(ctx context.Context, db *sql.DB, v int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := migrations[v](ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return err
	}
	return tx.Commit()
}

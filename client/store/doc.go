// Package store owns a chat profile's message database: every message the
// node sends or receives is stored, and outgoing messages wait there as
// Pending (the offline queue) until the peer acknowledges them
// (MarkDelivered) or their TTL ends (ExpireDue). Incoming messages are
// deduplicated by (peer key, id), or (nickname, id) for peers without a
// key, across runs; History, Queue and full-text Search read it back.
// It also keeps the rooms the member joined and every room message it
// held or showed, so that rooms survive a restart (see version 3 below).
//
// The database is one SQLite file per profile, used through
// modernc.org/sqlite: pure Go, so `go install` needs no C compiler. It runs
// in WAL mode, so reads (a small pool of query_only connections) run
// beside the writer. With synchronous=FULL, the default, the WAL frames of
// every commit are fsynced before COMMIT returns: a commit survives a crash
// of the process and a power cut. Options.NoSync selects synchronous=NORMAL,
// which syncs only at checkpoints: a process crash still loses nothing
// committed, a power cut may lose the last commits.
//
// Writes are group-committed. AddOutgoing, AddIncoming, MarkDelivered,
// AddRoomMessages and MarkRoomShown queue an operation and return (the
// room-table calls, JoinRoom and the like, queue one and wait for its
// commit); one writer goroutine takes what is queued
// (up to Options.MaxBatch operations and about 65536 rows, without waiting
// for more, so an idle store commits at once and a busy one in large
// batches), applies it in one BEGIN IMMEDIATE transaction with multi-row
// statements (128 rows per INSERT, 256 seqs per UPDATE), commits, and then
// calls each operation's done, in submit order, on the writer goroutine.
// That is one fsync per batch instead of one per message, and the per-call
// cost of a statement spread over many rows. The writer's statements are
// prepared once on the driver's connection and run through its
// driver.StmtExecContext, without database/sql's conversion of every
// argument; rows of one peer bind the peer's columns once per statement
// (incoming ones their seqs too), and the other direction's columns not
// at all: a row of a receiver's batch went from about 41,000 to 30,000
// instructions (BenchmarkReceiverRows). A failed transaction (disk full,
// say) stores none of its batch and gives every operation the error, so
// nothing a done reported as stored is lost. The queue holds 8192
// operations; past that, submitting blocks (backpressure).
//
// A sender's message is written to the peer while its row is stored, and
// the row is rewritten when the ack comes: for a busy sender that UPDATE
// was a fifth of its CPU. So AddOutgoing gives the message its seq at
// once, and a delivery that reaches the writer before the message's row is
// written is folded into it: the row is written once, Delivered. With
// Options.FoldWait the writer holds an asynchronous Pending insert back
// for up to that long to let its ack come (anything a caller waits for
// writes it first, and so does WriteHeld); its done then comes after the
// dones of later operations. The cost is that a row may stay in memory
// for FoldWait: callers must say nothing about a message before its done,
// which the chat does not.
//
// The full-text index is kept off the write path: maintaining an FTS5
// index in a trigger cut inserts from ~100k/s to ~19k/s. Instead meta's
// fts_seq records the highest Seq indexed, and IndexSearch indexes the rest
// in bulk, in chunks, through the writer; Search calls it first, so its
// results are complete, and the chat calls it when idle.
//
// Schema (PRAGMA user_version; Open upgrades older files, one transaction
// per step, and refuses newer ones with ErrTooNew):
//
//   - version 1: table messages (seq INTEGER PRIMARY KEY, id, peer_key,
//     peer_nick, dir, text, sent_ms, received_ms, delivered_ms, expires_ms
//     (unix milliseconds, NULL for the zero time), status, encrypted, and
//     conv: a 63-bit hash of the conversation, the peer's key or, for a
//     peer without one, its nickname); a partial unique index on incoming
//     (conv, id) for deduplication; a partial index of Pending rows by
//     (conv, seq); an index of conversations by (conv, seq). Indexing an
//     integer instead of the texts carries 1.5 to 2 times as many messages.
//   - version 2: messages_fts, an external-content FTS5 table over
//     messages.text (tokenizer unicode61, remove_diacritics 2), and table
//     meta holding the fts_seq mark.
//   - version 3: rooms. Table rooms, one row per joined room: id (the
//     room ID), name ("#team"), key, private, joined_ms, current (one row
//     at most, which a partial unique index holds) and next_seq, our own
//     next seq in the room, which only grows (NextRoomSeq), so that a
//     restart never reuses a seq even when no member gives our messages
//     back. The key is the 32-byte room key, never the secret: the key is
//     all a member needs (room.FromKey rebuilds the room from name, key
//     and privacy, without running Argon2id again), while the secret is
//     what a person typed and may use elsewhere. Whoever reads the file can
//     read and post in the room, as whoever reads it can read the messages
//     themselves: the profile directory is its owner's alone (Open
//     creates it 0700, and the files 0600).
//     Table room_messages, one row per room message held or shown: n (the
//     order stored), room, author, seq, nick, time_ms, deps (the JSON of
//     the wire form, [{"a":"<key>","s":3}], [] for none, so that the
//     signed message comes back exactly), text, sig, received_ms and
//     shown. A unique index on (room, author, seq) stores a message once in
//     any run, and AddRoomMessages reports which were new, as AddIncoming
//     does. shown is 0 while the message is held (it waits in a room.Log
//     for what it depends on), else a display number from one counter per
//     store (meta's room_shown), given by MarkRoomShown as the chat shows
//     it: /history then shows a room in the order it was shown, which is
//     neither by its authors' clocks (clocks differ) nor by arrival (the
//     causal order makes messages wait). Indexes (room, shown) and (room,
//     time_ms) serve RoomHistory and RoomMessages. A row per message,
//     rather than a room.Log's state in one value: it is an append the
//     group commit already batches, deduplicated by the index across runs,
//     and it keeps every message where a Log keeps a bounded history.
//     A rowid table with n given by the writer, rather than one WITHOUT
//     ROWID keyed by (room, author, seq): rows of ~450 bytes made that
//     B-tree split often, and without n an INSERT needs RETURNING to tell
//     which of its rows it stored; measured, about 42,000 rows a second
//     against 66,000 (BenchmarkAddRoomMessages). The store keeps every room
//     message, as it keeps every direct message: nothing is pruned, and
//     leaving a room keeps its messages (/history still shows them). Room
//     messages are not in the full-text index.
//
// Only one process may use a database: Open takes an exclusive flock on
// <path>.lock, which holds the owner's pid, until Close; a second Open
// fails at once with ErrLocked.
package store

// Package store owns a chat profile's message database: every message the
// node sends or receives is stored, and outgoing messages wait there as
// Pending (the offline queue) until the peer acknowledges them
// (MarkDelivered) or their TTL ends (ExpireDue). Incoming messages are
// deduplicated by (peer key, id), or (nickname, id) for peers without a
// key, across runs; History, Queue and full-text Search read it back.
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
// Writes are group-committed. AddOutgoing, AddIncoming and MarkDelivered
// queue an operation and return; one writer goroutine takes what is queued
// (up to Options.MaxBatch operations and about 65536 rows, without waiting
// for more, so an idle store commits at once and a busy one in large
// batches), applies it in one BEGIN IMMEDIATE transaction with multi-row
// statements (128 rows per INSERT, 256 seqs per UPDATE), commits, and then
// calls each operation's done, in submit order, on the writer goroutine.
// That is one fsync per batch instead of one per message, and the per-call
// cost of database/sql spread over many rows. A failed transaction (disk
// full, say) stores none of its batch and gives every operation the error,
// so nothing a done reported as stored is lost. The queue holds 8192
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
//
// Only one process may use a database: Open takes an exclusive flock on
// <path>.lock, which holds the owner's pid, until Close; a second Open
// fails at once with ErrLocked.
package store

// Package room owns the pure part of rooms (group chat without a
// server): room names and the keys and identifiers derived from them, the
// signatures on room messages, and the per-room Log that puts messages in
// causal order, delivers each exactly once and keeps the bounded history
// that anti-entropy serves. It does no I/O and reads no clock: time is an
// argument. The chat loop owns each Log and does the sending.
//
// # Names, keys, identifiers
//
// A room name is '#' and 1 to 32 characters a-z, 0-9, '_' or '-' (ASCII
// capitals are lowered; nothing else is, so no two spellings look alike).
// The room key of a public room is HKDF-SHA256 over its name (salt
// "parlance room v1", info = the name without '#'); that of a private room
// is Argon2id(secret, salt = "parlance room v1" 0x00 name; 19 MiB, two
// passes). One name and secret give one key, and the name never needs to
// travel. From the key:
//
//   - the room ID, the first 16 bytes of HMAC-SHA256(key, "id") in hex,
//     names the room inside room messages and summaries. Those travel only
//     in encrypted sessions, so only members see it.
//   - a membership tag, the first 12 bytes of HMAC-SHA256(key, "member" ||
//     the peer's raw 32-byte identity key) in hex, is what a member puts in
//     its announces and registrations, which anyone on the LAN or at the
//     bootstrap server sees. Without the key, two members' tags cannot be
//     linked to each other or to the room. A tag is bound to the key that
//     signs the announce, so a peer that copies it into its own announce
//     gains nothing: members check the tag against the announcer's key
//     (IsMember), and send room traffic only to those that pass.
//
// A member keeps a room's name and key across restarts, never its
// secret: the key is all membership needs, and FromKey rebuilds the Room
// from them without running Argon2id again.
//
// A public room has the empty secret: anyone who knows, or guesses, its
// name can compute its key, join it, and test any announce's tags for it,
// and so learn who is in #general. That is the point of a public room.
// A private room's secret is only as strong as it is hard to guess: a tag
// and the announcer's key, both public, let anyone test guesses of name
// and secret offline. Argon2id makes each guess cost about 50 ms and 19
// MiB (HKDF would cost a microsecond), so a secret of a few random words
// holds; a short common one does not. Secrets longer than MaxSecretLen
// bytes are refused; no minimum is enforced here.
//
// # Messages
//
// A room message (protocol.RoomMessage) carries its author's key and
// per-room sequence number, starting at 1 with no gaps: an append-only log
// per author, as in Secure Scuttlebutt. It is signed over every field
// (protocol.RoomSigningBytes, which includes the room ID, so a message
// cannot be moved to another room), so any member can forward it and every
// receiver checks it against the author's key.
//
// deps says what the author had seen: for each other author whose highest
// delivered seq changed since the author's own previous message, that
// author and seq, unless the causal past of another dep already holds
// that author at that seq or later. The past of a message is its author's
// previous message and its deps, and their pasts. So deps is short even in
// a busy room: when everyone speaks in turn, it is the last speaker alone
// (1 entry of 99 at 100 members, lines of 371 bytes instead of 6.4 KB;
// BenchmarkNext). It is complete by induction: a receiver delivers a
// message only after its author's previous one and its deps, so after
// their whole past. Next proves what a dep implies only from the messages
// its history holds; what it cannot prove stays listed. A dep cycle,
// which only forced deliveries allow, never leaves deps empty. The
// induction breaks where a receiver forced a delivery, as before, and,
// since deps now rely on others' deps, where an author signed two
// messages with one seq and receivers hold different ones.
//
// # The log
//
// Add takes a message from anyone. It checks the room and the fields,
// drops a duplicate (author, seq) that is held, pending or was ever
// delivered, and verifies the signature of anything new itself: the log
// serves what it holds to other members, so it must never hold what it has
// not verified, and a flag the caller could forget would be no guard.
// Duplicates are dropped before the signature check, since anti-entropy
// brings many. Add does not reject by age: a message's time is its
// author's clock, and refusing by it would silence a member whose clock is
// wrong; the count bounds below protect memory.
//
// Ready returns what can be shown, in causal order: a message comes after
// its author's previous one and after every dep. A message that has waited
// CausalWait since it arrived is delivered anyway (Forced, with Unmet
// listing what it missed); its author's lower pending seqs go first, so
// each author's messages still come in increasing seq. Each (author, seq)
// is delivered once over the log's life: the delivered seqs of each author
// are kept as spans even after the message leaves the history, and a gap
// forced past and filled later is delivered when it comes, marked Late.
//
// Where an author's history starts. A member that joins late gets only the
// recent history, so an author's oldest message it receives may have no
// predecessor anywhere. Messages written before LogConfig.Joined (by the
// author's clock) are history: once one has waited StartWait (2 s, much
// less than CausalWait) for an author the log knows nothing of, the lowest
// message the log holds of that author becomes the author's start, and
// what comes before it counts as gone (listed in Unmet, not Forced). Only
// held messages, which their author signed, can set a start: a dep on an
// author the log holds nothing of excuses that one message from waiting,
// and nothing more, so a member cannot make the log skip another's
// messages by naming a high seq. Live messages never set a start: after a
// partition, what an author wrote earlier really is on its way.
//
// Next builds, signs and records our own next message: the log has our
// key, because what it holds of ours is served to others by Missing and
// so must carry the signature. It counts as delivered (the caller shows
// it). Its seq goes past any of our messages that reached the log, so a
// member restarted without its history, once anti-entropy brought its
// messages back, does not reuse a seq.
//
// Anti-entropy: Summary says, per author, the highest seq held
// contiguously from the author's start; Missing answers a peer's summary
// with what it lacks, oldest first: at most HistoryMessages, none older
// than HistoryAge. A late joiner's summary is empty, so it gets the
// recent history; a member back from a partition gets what it missed.
// A summary cannot say "I hold seq 9 past a gap at 8", so such messages are
// offered again on each exchange until the gap fills; they are dropped as
// duplicates.
//
// Bounds: at most MaxMembers authors (named as author or in deps; our own
// key is one), else ErrTooManyMembers; at most MaxPending messages and
// MaxPendingBytes waiting, past which the message farthest ahead of its
// author's delivered seqs is dropped (counted in Stats; anti-entropy brings
// it again); at most HistoryMessages delivered messages kept; at most 64
// spans of delivered seqs per author, past which the lowest gap is given
// up (its seqs count as delivered).
//
// A Log is not safe for concurrent use; time passed to it must not go
// backwards.
package room

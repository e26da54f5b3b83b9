package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Direction says whether a message was sent or received.
type Direction uint8

const (
	// Out is a message this node sent (or will send).
	Out Direction = 1
	// In is a message this node received.
	In Direction = 2
)

// String returns "out", "in", or "direction(N)".
func (d Direction) String() string { return name([]string{Out: "out", In: "in"}, int(d), "direction") }

// Status is where a message is in its life.
type Status uint8

const (
	// Pending is an outgoing message not yet acknowledged: the offline queue.
	Pending Status = 1
	// Sent is an outgoing message to a peer that cannot acknowledge (an
	// original client): it was written, nothing more is known.
	Sent Status = 2
	// Delivered is an outgoing message the peer acknowledged.
	Delivered Status = 3
	// Expired is an outgoing message whose TTL ran out before delivery.
	Expired Status = 4
	// Received is an incoming message.
	Received Status = 5
)

// String returns "pending", "sent", "delivered", "expired", "received", or
// "status(N)".
func (s Status) String() string {
	return name([]string{Pending: "pending", Sent: "sent", Delivered: "delivered", Expired: "expired", Received: "received"},
		int(s), "status")
}

func name(names []string, i int, kind string) string {
	if i < len(names) && names[i] != "" {
		return names[i]
	}
	return fmt.Sprintf("%s(%d)", kind, i)
}

// Message is one stored chat message. Times are stored to the millisecond.
type Message struct {
	Seq       int64     // local row id, assigned by the store: the order messages were stored in
	ID        string    // the message id on the wire; "" for messages from original clients (no id)
	PeerKey   string    // the peer's identity key (wire form, base64 text); "" for an original client without key
	PeerNick  string    // the peer's nickname when the message was stored
	Dir       Direction // Out or In
	Text      string    // the message text
	Sent      time.Time // outgoing: when posted; incoming: the sender's timestamp
	Received  time.Time // incoming: when stored; zero for outgoing
	Delivered time.Time // outgoing: when acknowledged (or written, for Sent); zero otherwise
	Expires   time.Time // outgoing: when the TTL of the Pending message ends (kept when it is delivered or expires); zero without a TTL
	Status    Status    // where the message is in its life
	Encrypted bool      // travelled (or will travel) inside an encrypted session
}

// Options tune Open.
type Options struct {
	// NoSync turns synchronous=FULL into synchronous=NORMAL: a crash of the
	// process still loses nothing committed; a power cut may lose the last
	// commits. Default false = FULL.
	NoSync bool
	// MaxBatch bounds the operations of one group commit (default 4096).
	MaxBatch int
	// FoldWait is how long a group commit holding a Pending outgoing
	// message waits for more operations, so that the message's delivery,
	// if it comes meanwhile, is written with it rather than by a second
	// write (see MarkDelivered). A Sync call, Flush or Settle ends the
	// wait. Zero: no wait. The chat uses DefaultFoldWait.
	FoldWait time.Duration
}

// DefaultFoldWait is short against a person's typing and long against
// the round trip of a pipelined message on a LAN under full load (a
// window of 1,024 messages at about 50,000 a second is 20 ms): at full
// rate nearly every message's row is written once, Delivered. It is how
// much longer a message may stay in memory only, unreported, before it
// is on disk.
const DefaultFoldWait = 100 * time.Millisecond

// PeerQueue summarises the offline queue for one peer.
type PeerQueue struct {
	PeerKey  string    // the peer's identity key
	PeerNick string    // the nickname of the peer's latest queued message
	Count    int       // how many messages wait for the peer
	Oldest   time.Time // the Sent time of the oldest of them
}

// Stats counts the stored messages by status.
type Stats struct {
	Pending, Sent, Delivered, Expired, Received int
}

const (
	defaultMaxBatch = 4096
	queueLen        = 8192 // operations waiting for the writer: bounds memory
	readConns       = 4
	busyTimeoutMs   = 5000
)

// Store is one profile's message database. Every method is safe for
// concurrent use.
type Store struct {
	path string // "" for memory
	name string // for errors: the path, or "(memory)"
	wdb  *sql.DB
	rdb  *sql.DB // == wdb for memory
	lock *os.File
	w    *writer

	ops     chan *op
	closing chan struct{} // closed when Close starts
	mu      sync.RWMutex  // submitters hold it shared; Close exclusively, to close ops
	closed  bool          // guarded by mu
	shut    atomic.Bool   // Close has started: reads fail with ErrClosed

	closeOnce sync.Once
	closeErr  error

	errMu    sync.Mutex
	firstErr error // the first write error since the last Flush

	// nextSeq is the seq the next stored message gets. AddOutgoing takes
	// one when it is called, so that its caller knows the row before it
	// is committed; the writer takes them for incoming messages. A failed
	// write leaves its seqs unused.
	nextSeq atomic.Int64
}

// Open opens the message database at path, creating it (mode 0600, its
// directory 0700) if missing, upgrading its schema if it is older, and
// locking it against a second Open until Close. Every error names the
// file in one line; ErrLocked, ErrCorrupt, ErrDiskFull and ErrTooNew can
// be told apart with errors.Is.
func Open(path string, opts Options) (*Store, error) {
	return open(path, opts, len(migrations))
}

// OpenMemory opens a private in-memory database, for tests and embedding:
// it behaves as Open does, with nothing on disk and no lock file. Reads
// wait for the writer's transaction instead of running beside it.
func OpenMemory(opts Options) (*Store, error) {
	return openMemory(opts, len(migrations))
}

func open(path string, opts Options, version int) (s *Store, err error) {
	if path == "" {
		return nil, fmt.Errorf("store: no database path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &storeError{msg: fmt.Sprintf("store: %s: %s", path, oneLine(err)), cause: err}
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, &storeError{msg: fmt.Sprintf("store: %s: cannot create its directory: %s", abs, oneLine(err)), cause: err}
	}
	lock, err := lockFile(abs)
	if err != nil {
		return nil, err
	}
	var dbs []*sql.DB
	defer func() {
		if err != nil {
			for _, db := range dbs {
				db.Close()
			}
			unlockFile(lock)
		}
	}()
	// Create the file ourselves so that it gets mode 0600; SQLite gives
	// the -wal and -shm files the same mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &storeError{msg: fmt.Sprintf("store: %s: cannot open: %s", abs, oneLine(err)), cause: err}
	}
	f.Close()
	sync := "FULL"
	if opts.NoSync {
		sync = "NORMAL"
	}
	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMs)
	for _, dsn := range []string{
		// The writer: the statement journal of multi-row statements in
		// memory, not in a temporary file.
		fileDSN(abs, busy, "_pragma=journal_mode(WAL)", "_pragma=synchronous("+sync+")",
			"_pragma=foreign_keys(1)", "_pragma=temp_store(MEMORY)", "_txlock=immediate"),
		fileDSN(abs, busy, "_pragma=query_only(1)"),
	} {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, fail(abs, "open", err)
		}
		dbs = append(dbs, db)
	}
	dbs[0].SetMaxOpenConns(1)
	dbs[1].SetMaxOpenConns(readConns)
	dbs[1].SetMaxIdleConns(readConns)
	return start(abs, abs, dbs[0], dbs[1], lock, opts, version)
}

func openMemory(opts Options, version int) (*Store, error) {
	var b [8]byte
	rand.Read(b[:])
	// One database handle with one connection that never expires: the
	// database lives as long as that connection does.
	db, err := sql.Open("sqlite", "file:parlance-"+hex.EncodeToString(b[:])+"?mode=memory&_txlock=immediate&_pragma=foreign_keys(1)")
	if err != nil {
		return nil, fail("(memory)", "open", err)
	}
	db.SetMaxOpenConns(1)
	s, err := start("", "(memory)", db, db, nil, opts, version)
	if err != nil {
		db.Close()
	}
	return s, err
}

// fileDSN is a file: URI for the modernc driver, the path escaped so that
// '?', '#' and '%' in it stay part of the path.
func fileDSN(path string, params ...string) string {
	u := url.URL{Scheme: "file", Path: path}
	return u.String() + "?" + strings.Join(params, "&")
}

// start migrates the database to version and starts the writer.
func start(path, name string, wdb, rdb *sql.DB, lock *os.File, opts Options, version int) (*Store, error) {
	ctx := context.Background()
	if err := wdb.PingContext(ctx); err != nil {
		return nil, fail(name, "open", err)
	}
	if err := migrate(ctx, wdb, name, version); err != nil {
		return nil, err
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = defaultMaxBatch
	}
	s := &Store{
		path: path, name: name, wdb: wdb, rdb: rdb, lock: lock,
		ops:     make(chan *op, queueLen),
		closing: make(chan struct{}),
	}
	w, err := newWriter(ctx, s, opts.MaxBatch, opts.FoldWait, version >= roomsVersion)
	if err != nil {
		return nil, fail(name, "open", err)
	}
	if rdb != wdb {
		if err := rdb.PingContext(ctx); err != nil {
			w.stmts.close(wdb)
			return nil, fail(name, "open", err)
		}
	}
	s.w = w
	go w.run()
	return s, nil
}

// WriterStats counts the writer's work since Open, for benchmarks and
// diagnostics.
type WriterStats struct {
	Commits int64 // transactions committed
	// Folded deliveries were written with their message's insert; Updated
	// ones rewrote a row already stored (see MarkDelivered).
	Folded, Updated int64
}

// WriterStats returns the writer's counters.
func (s *Store) WriterStats() WriterStats {
	return WriterStats{Commits: s.w.commits.Load(), Folded: s.w.folded.Load(), Updated: s.w.updated.Load()}
}

// Path returns the absolute path of the database file, "" for memory.
func (s *Store) Path() string { return s.path }

// Close commits every operation submitted before it, calls their done
// functions, closes the database and releases the lock. Operations
// submitted after it get ErrClosed. Calling Close again returns the first
// call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.shut.Store(true)
		close(s.closing) // wakes submitters blocked on a full queue
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.ops) // no submitter can send any more
		<-s.w.exited
		s.w.stmts.close(s.wdb)
		err := s.wdb.Close()
		if s.rdb != s.wdb {
			err = errors.Join(s.rdb.Close(), err)
		}
		if err = errors.Join(err, unlockFile(s.lock)); err != nil {
			s.closeErr = fail(s.name, "close", err)
		}
	})
	return s.closeErr
}

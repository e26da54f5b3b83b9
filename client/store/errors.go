package store

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Errors callers branch on with errors.Is. The errors the store returns
// wrap them in one line that names the database file and says what to do.
var (
	// ErrClosed is returned (and given to done callbacks) after Close.
	ErrClosed = errors.New("store: the message store is closed")
	// ErrNotFound says no message has the requested Seq.
	ErrNotFound = errors.New("store: no such message")
	// ErrLocked says another process (another parlance with the same
	// profile and nickname) holds the database.
	ErrLocked = errors.New("store: the message database is in use by another parlance")
	// ErrCorrupt says the file is not a database or is damaged.
	ErrCorrupt = errors.New("store: the message database is damaged")
	// ErrDiskFull says the disk (or a size limit) is full: the write was
	// not stored.
	ErrDiskFull = errors.New("store: disk full")
	// ErrTooNew says the file was written by a newer parlance whose schema
	// this program does not know.
	ErrTooNew = errors.New("store: the message database is from a newer parlance")
)

// errEmptyQuery is Search's answer to a query with no words.
var errEmptyQuery = errors.New("store: empty search: give at least one word to search for")

// storeError is the one-line error the store returns: msg is the whole
// text, kind the sentinel it matches (or nil), cause the error underneath.
type storeError struct {
	msg   string
	kind  error
	cause error
}

func (e *storeError) Error() string { return e.msg }

func (e *storeError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// sqliteCode returns the primary SQLite result code of err (extended codes
// masked to their low byte), or 0 when err is not an SQLite error.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// oneLine flattens err's text to a single line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// fail builds the store's error for an operation on the database at name
// ("open", "write", "read" or "search"), mapping SQLite's codes to the
// sentinels. Errors that are already the store's pass through.
func fail(name, what string, err error) error {
	if err == nil {
		return nil
	}
	var se *storeError
	if errors.As(err, &se) || errors.Is(err, ErrClosed) {
		return err
	}
	switch code := sqliteCode(err); {
	case code == sqlite3.SQLITE_FULL || errors.Is(err, syscall.ENOSPC):
		msg := fmt.Sprintf("store: %s: disk full: the message was not stored; free some disk space and send it again", name)
		if what != "write" {
			msg = fmt.Sprintf("store: %s: %s: disk full; free some disk space and try again", name, what)
		}
		return &storeError{msg: msg, kind: ErrDiskFull, cause: err}
	case code == sqlite3.SQLITE_NOTADB || code == sqlite3.SQLITE_CORRUPT:
		return &storeError{
			msg: fmt.Sprintf("store: %s: not a message database, or damaged (%s); moving the file away starts a fresh history, losing the messages queued in it",
				name, oneLine(err)),
			kind: ErrCorrupt, cause: err,
		}
	case code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED:
		return &storeError{
			msg:  fmt.Sprintf("store: %s: %s: the database is busy: another program has it open (%s)", name, what, oneLine(err)),
			kind: ErrLocked, cause: err,
		}
	}
	return &storeError{msg: fmt.Sprintf("store: %s: %s: %s", name, what, oneLine(err)), cause: err}
}

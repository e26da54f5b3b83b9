package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strconv"
)

// stmtKey names a prepared statement: a kind, its number of rows and,
// for opInsert, its shape.
type stmtKey struct {
	kind  opKind
	n     int
	shape shape
}

// stmtSQL is the text of statement k.
func stmtSQL(k stmtKey) string {
	switch k.kind {
	case opInsert:
		return insertSQL(k.shape, k.n)
	case opDeliver:
		return "UPDATE messages SET status = 3, delivered_ms = ? WHERE status = 1 AND seq IN (" + repeat("?", k.n) + ")"
	case opRoomInsert:
		return roomInsertSQL(k.n)
	case opRoomShow:
		return roomShowSQL
	}
	panic("store: no statement for kind " + strconv.Itoa(int(k.kind)))
}

// stmts are the writer's statements, prepared on the driver connection
// under the writer's *sql.DB when first used and kept until Close. They
// run through driver.StmtExecContext, without database/sql's conversion
// and copy of every argument: measured, 7% of a receiver's row.
type stmts struct {
	dc any // the driver connection they were prepared on
	m  map[stmtKey]driver.Stmt
}

// execStmt runs statement k with args (w.args, which it clears for reuse)
// in the current transaction and returns how many rows it changed.
func (w *writer) execStmt(ctx context.Context, k stmtKey, args []any) (n int64, err error) {
	nv := w.nv[:0]
	for i, a := range args {
		nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	clear(args)
	w.args = args[:0]
	err = w.conn.Raw(func(dc any) error {
		st, err := w.stmts.get(ctx, dc, k)
		if err != nil {
			return err
		}
		res, err := st.(driver.StmtExecContext).ExecContext(ctx, nv)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	clear(nv)
	w.nv = nv[:0]
	return n, err
}

// get returns statement k on dc, preparing it if need be. database/sql
// keeps the writer's one connection for the life of the store, unless
// the driver reports it broken: then the statements of the old
// connection are dropped with it.
func (s *stmts) get(ctx context.Context, dc any, k stmtKey) (driver.Stmt, error) {
	if dc != s.dc {
		s.dc, s.m = dc, make(map[stmtKey]driver.Stmt)
	}
	if st := s.m[k]; st != nil {
		return st, nil
	}
	st, err := dc.(driver.ConnPrepareContext).PrepareContext(ctx, stmtSQL(k))
	if err != nil {
		return nil, err
	}
	s.m[k] = st
	return st, nil
}

// close closes the statements, on their connection: SQLite closes a
// database (and checkpoints its WAL) only once every statement is
// finalized.
func (s *stmts) close(db *sql.DB) {
	if len(s.m) == 0 {
		return
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Raw(func(dc any) error {
		if dc == s.dc {
			for _, st := range s.m {
				st.Close()
			}
		}
		return nil
	})
	s.dc, s.m = nil, nil
}

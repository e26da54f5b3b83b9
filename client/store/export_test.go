package store

import (
	"context"
	"fmt"
)

// commits returns how many transactions the writer committed.
func (s *Store) commits() int64 { return s.w.commits.Load() }

// setMaxPageCount sets PRAGMA max_page_count on the writer's connection
// and returns the limit now in force (SQLite never sets it below the
// current size).
func (s *Store) setMaxPageCount(ctx context.Context, n int64) (int64, error) {
	var got int64
	err := s.wdb.QueryRowContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n)).Scan(&got)
	return got, err
}

// openVersion opens path migrated only up to schema version v.
func openVersion(path string, v int) (*Store, error) { return open(path, Options{}, v) }

// latestVersion is the schema version Open migrates to.
var latestVersion = len(migrations)

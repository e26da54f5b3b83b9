package store

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawDB opens path directly, read-only, bypassing the store.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	var v int
	if err := rawDB(t, path).QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// schema returns the database's schema: one "type name: sql" per object.
func schema(t *testing.T, path string) []string {
	t.Helper()
	rows, err := rawDB(t, path).Query("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var objs []string
	for rows.Next() {
		var typ, name, text string
		if err := rows.Scan(&typ, &name, &text); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, typ+" "+name+": "+text)
	}
	return objs
}

func TestMigrateFromEveryVersion(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	s, err := Open(fresh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if v := userVersion(t, fresh); v != latestVersion {
		t.Fatalf("a fresh database has version %d, want %d", v, latestVersion)
	}
	want := schema(t, fresh)

	for from := 1; from <= latestVersion; from++ {
		t.Run(fmt.Sprintf("from version %d", from), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "messages.db")
			old, err := openVersion(path, from)
			if err != nil {
				t.Fatal(err)
			}
			mustAddOut(t, old, out("KA", "alice", "an old outgoing message about otters"))
			mustAddIn(t, old, in("KA", "alice", "1", "an old incoming message about otters"), in("", "bob", "1", "keyless otters"))
			team := roomRow(t, "#team", "", true)
			oldRoom := rmsg(team.ID, 'a', 1, t0, "an old room message")
			if from >= roomsVersion {
				mustJoin(t, old, team)
				mustAddRoom(t, old, oldRoom)
				mustShow(t, old, team.ID, oldRoom)
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			if v := userVersion(t, path); v != from {
				t.Fatalf("built version %d, file says %d", from, v)
			}

			s, err := Open(path, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			if v := userVersion(t, path); v != latestVersion {
				t.Errorf("after Open the file has version %d, want %d", v, latestVersion)
			}
			if got := schema(t, path); !reflect.DeepEqual(got, want) {
				t.Errorf("migrated schema differs from a fresh one:\n got %q\nwant %q", got, want)
			}
			found, err := s.Search(t.Context(), "otters", 0)
			if err != nil || len(found) != 3 {
				t.Errorf("Search found %d old messages (%v), want 3", len(found), err)
			}
			h, err := s.History(t.Context(), "KA", "", 10)
			if err != nil || len(h) != 2 {
				t.Errorf("History found %d old messages (%v), want 2", len(h), err)
			}
			// The dedupe of the old rows still holds.
			if isNew := mustAddIn(t, s, in("KA", "alice", "1", "again"), in("", "bob", "1", "again")); isNew[0] || isNew[1] {
				t.Errorf("old incoming ids stored again: %v", isNew)
			}

			// Rooms work after the upgrade, and what was stored in them
			// before is kept.
			var wantRooms []string
			if from >= roomsVersion {
				wantRooms = []string{"#team"}
			}
			mustJoin(t, s, roomRow(t, "#general", "", false))
			newRoom := rmsg(team.ID, 'a', 2, t0, "a new room message")
			if isNew := mustAddRoom(t, s, oldRoom, newRoom); isNew[0] != (from < roomsVersion) || !isNew[1] {
				t.Errorf("AddRoomMessages of an old and a new message: isNew %v", isNew)
			}
			mustShow(t, s, team.ID, oldRoom, newRoom)
			var names []string
			for _, r := range mustRooms(t, s) {
				if r.Name == "#team" && !r.Current {
					t.Error("the current room is no longer current")
				}
				names = append(names, r.Name)
			}
			if want := append([]string{"#general"}, wantRooms...); !reflect.DeepEqual(names, want) {
				t.Errorf("Rooms = %q, want %q", names, want)
			}
			rh, err := s.RoomHistory(t.Context(), team.ID, 10)
			if want := []string{"an old room message", "a new room message"}; err != nil || !reflect.DeepEqual(texts(rh), want) {
				t.Errorf("RoomHistory = %q (%v), want %q", texts(rh), err, want)
			}
		})
	}
}

func TestQueriesUseTheirIndexes(t *testing.T) {
	s := openMem(t)
	plans := []struct {
		query string
		args  []any
		index string
	}{
		{pendingSQL, []any{1, "k", 0, 10}, "messages_pending"},
		{historySQL, []any{1, "k", "n", 10}, "messages_conversation"},
	}
	for _, p := range plans {
		plan := queryPlan(t, s, p.query, p.args...)
		if !strings.Contains(strings.Join(plan, "\n"), "USING INDEX "+p.index+" ") {
			t.Errorf("plan of %q does not use %s: %q", p.query, p.index, plan)
		}
	}
}

// queryPlan returns the detail lines of EXPLAIN QUERY PLAN for query.
func queryPlan(t *testing.T, s *Store, query string, args ...any) []string {
	t.Helper()
	rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

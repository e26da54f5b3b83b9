package store

import (
	"bufio"
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// checkOneLine fails unless err is a single line that names path.
func checkOneLine(t *testing.T, err error, path string) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	if !strings.HasPrefix(msg, "store: ") {
		t.Errorf("error does not start with \"store: \": %q", msg)
	}
	if path != "" && !strings.Contains(msg, path) {
		t.Errorf("error does not name %s: %q", path, msg)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "profile")
	path := filepath.Join(dir, "messages.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	for name, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600, path + ".lock": 0o600} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != want {
			t.Errorf("%s has mode %v, want %v", name, got, want)
		}
	}
	if m, err := OpenMemory(Options{}); err != nil || m.Path() != "" {
		t.Errorf("OpenMemory: Path %q, %v", m.Path(), err)
	} else {
		m.Close()
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	s, path := openTemp(t)
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	checkOneLine(t, err, path)
	if pid := "pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), pid) {
		t.Errorf("error does not name the holder (%s): %v", pid, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(7, 7))
	random := make([]byte, 16384)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}

	// A real database, cut short.
	full := filepath.Join(dir, "full.db")
	s, err := Open(full, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		s.AddOutgoing(out("K", "k", fmt.Sprintf("%d %s", i, strings.Repeat("x", 200))), nil)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 100*1024 {
		t.Fatalf("the database is only %d bytes; it should have grown", len(data))
	}

	tests := []struct {
		name string
		data []byte
	}{
		{"random bytes", random},
		{"a database cut to a third", data[:len(data)/3]},
		{"a database cut inside its header", data[:50]},
		{"a database with its first page zeroed", append(make([]byte, 4096), data[4096:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "messages.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				// SQLite found nothing wrong at open: the damage must
				// show on the first read instead, as an error.
				t.Log("Open succeeded")
				_, err = s.Queue(t.Context())
				s.Close()
			}
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			checkOneLine(t, err, path)
			if !strings.Contains(err.Error(), "fresh history") {
				t.Errorf("the error does not say what to do: %v", err)
			}
		})
	}
}

func TestTooNewSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrTooNew) {
		t.Fatalf("Open: %v, want ErrTooNew", err)
	}
	checkOneLine(t, err, path)
	if want := fmt.Sprintf("version 99 but this parlance knows versions up to %d", latestVersion); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	// The lock was released: the error left nothing behind.
	if _, err := Open(path, Options{}); !errors.Is(err, ErrTooNew) {
		t.Errorf("second Open: %v, want ErrTooNew again", err)
	}
}

func TestDiskFull(t *testing.T) {
	s, path := openTemp(t)
	ctx := t.Context()
	mustAddOut(t, s, out("K", "k", "before the limit"))
	if _, err := s.setMaxPageCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var stored []*Message
	var full error
	big := strings.Repeat("to fill the pages ", 100)
	for i := 0; i < 1000 && full == nil; i++ {
		m := out("K", "k", fmt.Sprint(i, big))
		if err := s.AddOutgoingSync(ctx, m); err != nil {
			full = err
		} else {
			stored = append(stored, m)
		}
	}
	if !errors.Is(full, ErrDiskFull) {
		t.Fatalf("writing past max_page_count: %v, want ErrDiskFull", full)
	}
	checkOneLine(t, full, path)
	if msg := full.Error(); !strings.Contains(msg, "disk full") || !strings.Contains(msg, "not stored") {
		t.Errorf("error does not say the disk is full and the message not stored: %q", msg)
	}
	if err := s.Flush(ctx); !errors.Is(err, ErrDiskFull) {
		t.Errorf("Flush after the failure: %v, want ErrDiskFull", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Errorf("a second Flush reports the old error again: %v", err)
	}

	if _, err := s.setMaxPageCount(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	after := out("K", "k", "after the limit")
	mustAddOut(t, s, after)
	stored = append(stored, after)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, m := range stored {
		if got := mustGet(t, s2, m.Seq); got.Text != m.Text {
			t.Fatalf("seq %d: text %.20q, want %.20q", m.Seq, got.Text, m.Text)
		}
	}
	st, _ := s2.Stats(ctx)
	if st.Pending != len(stored)+1 {
		t.Errorf("%d messages after reopening, want %d", st.Pending, len(stored)+1)
	}
}

func TestCommittedMessagesAreOnDisk(t *testing.T) {
	s, path := openTemp(t)
	var ms []*Message
	for i := range 300 {
		m := out("K", "k", fmt.Sprint("durable ", i))
		ms = append(ms, m)
		s.AddOutgoing(m, func(err error) {
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		})
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Another connection, opened read-only on the file while the store is
	// open, sees every message whose done reported nil.
	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, m := range ms {
		var text string
		if err := ro.QueryRow("SELECT text FROM messages WHERE seq = ?", m.Seq).Scan(&text); err != nil || text != m.Text {
			t.Fatalf("seq %d through a second connection: %q, %v", m.Seq, text, err)
		}
	}
}

const crashEnv = "PARLANCE_STORE_CRASH_CHILD"

// TestCrashChild is the child of TestKilledWriterLosesNothing: it stores
// messages until it is killed, printing "seq i" for each whose done
// reported nil.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("runs only as the child of TestKilledWriterLosesNothing")
	}
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		m := out("K", "k", fmt.Sprint("crash ", i))
		s.AddOutgoing(m, func(err error) {
			if err == nil {
				// One write per line, unbuffered: what is printed was
				// reported stored.
				fmt.Fprintf(os.Stdout, "%d %d\n", m.Seq, i)
			}
		})
	}
}

func TestKilledWriterLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "messages.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	const killAfter = 3000
	confirmed := map[int64]int{}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		var seq int64
		var i int
		if _, err := fmt.Sscanf(lines.Text(), "%d %d", &seq, &i); err != nil {
			t.Fatalf("child printed %q", lines.Text())
		}
		confirmed[seq] = i
		if len(confirmed) == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if len(confirmed) < killAfter {
		t.Fatalf("the child confirmed only %d messages (%v): %s", len(confirmed), err, stderr.Bytes())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, not by SIGKILL: %s", err, stderr.Bytes())
	}

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopening after the kill: %v", err)
	}
	defer s.Close()
	for seq, i := range confirmed {
		m, err := s.Get(t.Context(), seq)
		if err != nil || m.Text != fmt.Sprint("crash ", i) {
			t.Fatalf("confirmed seq %d: %q, %v", seq, m.Text, err)
		}
	}
	t.Logf("%d confirmed messages survived SIGKILL", len(confirmed))
}

package store

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive advisory lock on path+".lock" (created with
// mode 0600) and writes this process's pid into it. The lock lasts until
// the returned file is passed to unlockFile or the process ends, however
// it ends: the kernel drops flock locks with the last descriptor.
func lockFile(path string) (*os.File, error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &storeError{msg: fmt.Sprintf("store: %s: cannot create the lock file: %s", path, oneLine(err)), cause: err}
	}
	// flock locks belong to the open file description, so a second Open in
	// this same process conflicts too, as it should.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &storeError{
				msg: fmt.Sprintf("store: %s is in use by %s: another parlance with the same profile and nickname is running; quit it or start with another nickname",
					path, holder),
				kind: ErrLocked, cause: err,
			}
		}
		return nil, &storeError{msg: fmt.Sprintf("store: %s: cannot lock %s: %s", path, name, oneLine(err)), cause: err}
	}
	// The pid is for the message above only; failing to write it is harmless.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// readHolder returns the pid written in a lock file, as text.
func readHolder(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0) // io.EOF after a short file
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return "a process whose pid is unknown"
	}
	return "pid " + strconv.Itoa(pid)
}

// unlockFile releases a lock taken by lockFile. The file stays: removing
// it would race with a process that just opened it.
func unlockFile(f *os.File) error {
	if f == nil {
		return nil
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return f.Close()
}

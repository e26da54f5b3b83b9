// Package privfile writes a file readable by its owner alone, whole or
// not at all: the data goes to a temporary file (mode 0600) in the same
// directory, which is synced and then moved into place, and the directory
// entry is synced where the system allows. The profile's identity key and
// known-peers file are written this way, so a crash or a full disk never
// leaves a half-written key or pin list behind.
package privfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write writes data to path, creating its directory (mode 0700) if
// needed. With replace, an existing file is replaced (rename); without, an
// existing file is left alone and the error wraps fs.ErrExist (link).
func Write(path string, data []byte, replace bool) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		tmp.Close()
		// After a rename the temporary name is gone; after a link it is
		// a second name of path.
		if rerr := os.Remove(tmp.Name()); rerr != nil && !os.IsNotExist(rerr) && err == nil {
			err = fmt.Errorf("remove temporary file: %w", rerr)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	put := os.Link
	if replace {
		put = os.Rename
	}
	if err := put(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: not every system can sync a directory
		d.Close()
	}
	return nil
}

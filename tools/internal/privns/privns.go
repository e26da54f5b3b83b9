// Package privns holds what the tools that multicast (cmd/msgbench,
// cmd/roombench) share about where they may run: they refuse to start
// outside a private network namespace (netsim/netns.Check), and say so
// with exit status 2, apart from any other failure (1).
package privns

import (
	"errors"
	"fmt"
	"os"

	"github.com/parlance-chat/parlance/netsim/netns"
)

// NotPrivateError: the process is not in a private network namespace.
type NotPrivateError struct{ Err error }

func (e NotPrivateError) Error() string {
	return "refusing to multicast outside a private network namespace: " + e.Err.Error()
}

func (e NotPrivateError) Unwrap() error { return e.Err }

// Check returns a NotPrivateError unless the process is in a private
// network namespace.
func Check() error {
	if err := netns.Check(); err != nil {
		return NotPrivateError{err}
	}
	return nil
}

// Exit ends the process after tool's run returned err: status 0 for nil,
// 2 for a NotPrivateError, 1 for any other error, which it prints.
func Exit(tool string, err error) {
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
	var np NotPrivateError
	if errors.As(err, &np) {
		os.Exit(2)
	}
	os.Exit(1)
}

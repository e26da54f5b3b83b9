//go:build !linux

package rendezvous

import (
	"net"
	"time"
)

// loopSupported says whether Serve can run an event loop here: only on
// Linux (loop_linux.go). Elsewhere every connection waits on a
// goroutine of its own.
const loopSupported = false

type loop struct{}

func (s *Server) newLoops(net.Listener, *fallbackListener) ([]*loop, error) { return nil, nil }

func (*loop) run() {}

func (*loop) wait() error { return nil }

func (*loop) expireFresh(time.Time) {}

// loopConn is never made here.
type loopConn struct{ net.Conn }

func (*loopConn) park() bool                              { return false }
func (*loopConn) setHandlers(func([]byte) []byte, func()) {}
func (*loopConn) tryWrite(_, _ []byte) (int, error)       { return 0, nil }

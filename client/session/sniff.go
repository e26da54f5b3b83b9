package session

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Sniff reads the first byte of an accepted conn to tell a Noise session
// from an original peer's plaintext. If it is Preamble's NUL, Sniff reads
// the rest of the preamble and returns encrypted=true and c, ready for
// Server; a preamble of another version is an error wrapping ErrHandshake.
// Otherwise it returns encrypted=false and a conn that reads the byte
// already read and then the rest of c, for the plaintext line reader.
// Sniff reads nothing past the preamble. It blocks until the peer sends:
// set a read deadline on c first. On error c is left open.
func Sniff(c net.Conn) (encrypted bool, plain net.Conn, err error) {
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return false, nil, fmt.Errorf("session: sniff %s: %w", c.RemoteAddr(), err)
	}
	if first[0] != Preamble[0] {
		return false, &replayConn{Conn: c, pending: first[:]}, nil
	}
	rest := make([]byte, len(Preamble)-1)
	if _, err := io.ReadFull(c, rest); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return false, nil, fmt.Errorf("session: sniff %s: read preamble: %w: %w", c.RemoteAddr(), ErrHandshake, err)
	}
	if string(rest) != Preamble[1:] {
		return false, nil, fmt.Errorf("session: sniff %s: unknown preamble %q: %w", c.RemoteAddr(), append(first[:], rest...), ErrHandshake)
	}
	return true, c, nil
}

// replayConn returns pending before reading from the conn.
type replayConn struct {
	net.Conn
	mu      sync.Mutex // guards pending, never held across a Read of Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 && len(p) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

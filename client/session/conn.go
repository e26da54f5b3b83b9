package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/flynn/noise"
)

// Conn is an established session: a net.Conn whose Write encrypts and
// frames and whose Read authenticates and decrypts. One goroutine may Read
// while another Writes. Deadlines are the underlying conn's.
//
// A frame that fails to authenticate (ErrTampered), a malformed frame, an
// end of stream inside a frame and any read error but a timeout make the
// Conn fail for good: the underlying conn is closed and every later Read
// returns the same error, after the plaintext decrypted before the failure.
// A read timeout is not fatal: a partial frame is kept for the next Read.
// Any write error, a timeout included, is final for writes (as in
// crypto/tls): part of a frame may have been sent, and a frame's nonce is
// never used twice. The caller then closes the Conn. Errors other than
// io.EOF are *net.OpError values, so net.Error's Timeout works on them.
type Conn struct {
	conn net.Conn
	peer Peer

	// The read side. rmu is held across the underlying Read, as
	// crypto/tls does: it serialises readers of one stream and guards
	// nothing else; Close does not take it.
	rmu    sync.Mutex
	recv   *noise.CipherState
	rbuf   []byte // raw bytes from the underlying conn, starting at a frame
	rnext  int    // where the next frame starts in rbuf, after rplain is read
	rplain []byte // decrypted and not yet returned (aliases rbuf)
	rerr   error

	// The write side, the same way.
	wmu  sync.Mutex
	send *noise.CipherState
	wbuf []byte
	werr error

	closeOnce sync.Once
	closeErr  error
}

var _ net.Conn = (*Conn)(nil)

// Sizes of the Conn's buffers: reads start small and grow to one frame;
// one underlying Write carries up to writeBatch frames.
const (
	readBufStart = 4 << 10
	writeBatch   = 4
)

func newConn(c net.Conn, peer Peer, send, recv *noise.CipherState) *Conn {
	return &Conn{conn: c, peer: peer, send: send, recv: recv}
}

// Remote returns what the peer proved in the handshake.
func (c *Conn) Remote() Peer { return c.peer }

// Read reads decrypted bytes: at most what is left of one frame.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rplain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		if err := c.readFrame(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rplain)
	c.rplain = c.rplain[n:]
	return n, nil
}

// readFrame reads and decrypts the next frame into rplain.
func (c *Conn) readFrame() error {
	if c.rnext > 0 { // drop the frame rplain was read from
		c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[c.rnext:])]
		c.rnext = 0
	}
	if err := c.fill(2); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(c.rbuf))
	if n < tagSize {
		return c.readFailed(fmt.Errorf("%d-byte frame is shorter than its tag: %w", n, ErrTampered))
	}
	if err := c.fill(2 + n); err != nil {
		return err
	}
	frame := c.rbuf[2 : 2+n]
	plain, err := c.recv.Decrypt(frame[:0], nil, frame)
	if err != nil {
		return c.readFailed(fmt.Errorf("frame %d: %w", c.recv.Nonce(), ErrTampered))
	}
	c.rplain = plain
	c.rnext = 2 + n
	return nil
}

// fill reads until rbuf holds at least n bytes, reading ahead as far as
// rbuf's capacity allows. A timeout keeps what was read.
func (c *Conn) fill(n int) error {
	if cap(c.rbuf) < n {
		c.rbuf = slices.Grow(c.rbuf, max(n, readBufStart)-len(c.rbuf))
	}
	for len(c.rbuf) < n {
		m, err := c.conn.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+m]
		if len(c.rbuf) >= n {
			return nil
		}
		switch {
		case err == nil:
		case isTimeout(err):
			return err
		case errors.Is(err, io.EOF) && len(c.rbuf) == 0:
			c.rerr = io.EOF
			return io.EOF
		case errors.Is(err, io.EOF):
			return c.readFailed(fmt.Errorf("stream ends inside a frame: %w", io.ErrUnexpectedEOF))
		default:
			return c.readFailed(err)
		}
	}
	return nil
}

func (c *Conn) readFailed(err error) error {
	c.rerr = c.opError("read", err)
	c.rbuf, c.rplain = nil, nil
	c.closeConn()
	return c.rerr
}

// Write encrypts p into frames of at most 65519 plaintext bytes and writes
// them.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	written := 0
	for len(p) > 0 {
		out := c.wbuf[:0]
		batch := 0
		for i := 0; i < writeBatch && len(p) > 0; i++ {
			chunk := p[:min(len(p), maxChunk)]
			start := len(out)
			out = append(out, 0, 0)
			var err error
			if out, err = c.send.Encrypt(out, nil, chunk); err != nil {
				return written, c.writeFailed(err)
			}
			binary.BigEndian.PutUint16(out[start:], uint16(len(out)-start-2))
			batch += len(chunk)
			p = p[len(chunk):]
		}
		c.wbuf = out
		if _, err := c.conn.Write(out); err != nil {
			return written, c.writeFailed(err)
		}
		written += batch
	}
	return written, nil
}

func (c *Conn) writeFailed(err error) error {
	c.werr = c.opError("write", err)
	c.wbuf = nil
	return c.werr
}

// opError describes a failed Read or Write like the net package does,
// keeping the cause's Timeout.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "noise", Source: c.conn.LocalAddr(), Addr: c.conn.RemoteAddr(), Err: err}
}

// Close closes the underlying conn.
func (c *Conn) Close() error { return c.closeConn() }

func (c *Conn) closeConn() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}

// LocalAddr returns the underlying conn's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the underlying conn's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the underlying conn's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the underlying conn's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the underlying conn's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

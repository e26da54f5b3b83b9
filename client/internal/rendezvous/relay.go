package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

// ErrRelayRefused wraps the server's error message when it refuses to
// open or accept a relayed stream (see the ErrTextRelay constants of the
// bootstrap server for the texts).
var ErrRelayRefused = errors.New("rendezvous: relay refused")

// DialRelay opens a relayed stream to peerID through the bootstrap server
// at server, the one we are registered with (Update.Server of the
// Registered update that brought token): a WebSocket of its own, dialled
// with cfg.Dial (and cfg.TLSConfig), that sends relay_connect with token
// (Update.RelayToken) and waits for relay_ready, for as long as ctx allows
// (the server gives the peer 10 s to accept by default). Only cfg.Dial
// and cfg.TLSConfig are used.
func DialRelay(ctx context.Context, cfg Config, server, token, peerID string) (net.Conn, error) {
	return openRelay(ctx, &cfg, server, &protocol.RelayConnect{Token: token, PeerID: peerID}, "")
}

// AcceptRelay accepts the relayed stream that Config.OnRelayIncoming
// announced, at the server and with the token that came with it, like
// DialRelay.
func AcceptRelay(ctx context.Context, cfg Config, in Incoming) (net.Conn, error) {
	return openRelay(ctx, &cfg, in.Server, &protocol.RelayAccept{Token: in.Token, Stream: in.Stream}, in.Stream)
}

func openRelay(ctx context.Context, cfg *Config, server string, first protocol.ClientMessage, stream string) (conn net.Conn, err error) {
	if cfg.Dial == nil {
		return nil, errors.New("rendezvous: Config.Dial is required")
	}
	if err := checkURL(server); err != nil {
		return nil, err
	}
	frame, err := protocol.EncodeClientMessage(first)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: relay: %w", err)
	}
	d := websocket.Dialer{
		NetDialContext:   cfg.Dial,
		TLSClientConfig:  cfg.TLSConfig,
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   16 << 10,
		// One buffer holds a whole frame: a Write of up to
		// MaxRelayFrameSize bytes goes out as one frame.
		WriteBufferSize: protocol.MaxRelayFrameSize,
	}
	ws, resp, err := d.DialContext(ctx, server, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("rendezvous: relay: connect to %s: %w (HTTP %s)", server, err, resp.Status)
		}
		return nil, fmt.Errorf("rendezvous: relay: connect to %s: %w", server, err)
	}
	// The server's text frames (error, relay_ready) are small, and the
	// peer's binary frames at most MaxRelayFrameSize.
	ws.SetReadLimit(protocol.MaxRelayFrameSize)

	// ctx bounds the exchange through the socket's deadlines; cancelling
	// it moves them into the past, which interrupts a read in progress.
	if dl, ok := ctx.Deadline(); ok {
		ws.NetConn().SetDeadline(dl)
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		ws.NetConn().SetDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-interrupted
			if err == nil { // too late: the deadlines are in the past now
				conn, err = nil, fmt.Errorf("rendezvous: relay: %w", context.Cause(ctx))
			}
		}
		if err == nil {
			return
		}
		ws.Close()
		switch dl, ok := ctx.Deadline(); {
		case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
			err = fmt.Errorf("%w: %w", err, context.Cause(ctx))
		case ok && !time.Now().Before(dl) && !errors.Is(err, context.DeadlineExceeded):
			// The socket's deadline fired before ctx's own timer.
			err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		ws.SetWriteDeadline(dl)
	}
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return nil, fmt.Errorf("rendezvous: relay: write to %s: %w", server, err)
	}
	typ, b, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("rendezvous: relay: read from %s: %w", server, err)
	}
	if typ != websocket.TextMessage {
		return nil, fmt.Errorf("rendezvous: relay: %s sent data before relay_ready", server)
	}
	m, err := protocol.DecodeServerMessage(b)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: relay: %w", err)
	}
	switch m := m.(type) {
	case *protocol.RelayReady:
		if stream != "" && m.Stream != stream {
			return nil, fmt.Errorf("rendezvous: relay: relay_ready for stream %q, want %q", m.Stream, stream)
		}
		stream = m.Stream
	case *protocol.Error:
		return nil, fmt.Errorf("%w: %q", ErrRelayRefused, m.Message)
	default:
		return nil, fmt.Errorf("rendezvous: relay: unexpected %T from %s", m, server)
	}
	ws.NetConn().SetDeadline(time.Time{})
	ws.SetWriteDeadline(time.Time{})
	return newRelayConn(ws, stream), nil
}

// relayConn is a relayed stream: its bytes travel in binary frames of at
// most MaxRelayFrameSize bytes over the WebSocket.
//
// Read returns what is left of the current frame; a close frame with
// 1000 (normal) is io.EOF, any other an error that carries its reason.
// Write sends p as frames of at most MaxRelayFrameSize. Deadlines are
// the WebSocket's: an expired one fails the Read or Write with an error
// that wraps os.ErrDeadlineExceeded, and like any error of a WebSocket
// it ends the stream (gorilla's errors are permanent), so a timeout is
// for giving up, not for polling. Close sends a close frame and closes
// the socket. Reads, writes and Close may run concurrently.
type relayConn struct {
	ws     *websocket.Conn
	stream string

	// Readers and writers are each serialised by a channel, not a
	// mutex: a Read blocked in the network must not hold a lock that
	// another goroutine waits on outside the scheduler's view.
	rsem chan struct{}
	r    io.Reader // current frame; guarded by rsem
	rerr error     // guarded by rsem

	wsem chan struct{}
	wdl  atomic.Pointer[time.Time] // write deadline for the next frame
	werr error                     // guarded by wsem

	closeOnce sync.Once
	closeErr  error
}

func newRelayConn(ws *websocket.Conn, stream string) *relayConn {
	return &relayConn{ws: ws, stream: stream, rsem: make(chan struct{}, 1), wsem: make(chan struct{}, 1)}
}

// relayAddr is the address of both ends of a relayed stream: the server
// connection's, marked with the stream.
type relayAddr struct {
	net.Addr
	stream string
}

func (a relayAddr) Network() string { return "relay" }
func (a relayAddr) String() string  { return a.Addr.String() + "/relay/" + a.stream }

func (c *relayConn) Read(p []byte) (int, error) {
	c.rsem <- struct{}{}
	defer func() { <-c.rsem }()
	if len(p) == 0 {
		return 0, c.rerr
	}
	for {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				c.rerr = c.opError("read", err)
				return 0, c.rerr
			}
			if typ != websocket.BinaryMessage {
				c.rerr = c.opError("read", errors.New("unexpected text frame on a relayed stream"))
				c.ws.Close()
				return 0, c.rerr
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			c.rerr = c.opError("read", err)
			return n, c.rerr
		}
		return n, nil
	}
}

func (c *relayConn) Write(p []byte) (int, error) {
	c.wsem <- struct{}{}
	defer func() { <-c.wsem }()
	if c.werr != nil {
		return 0, c.werr
	}
	written := 0
	for len(p) > 0 {
		k := min(len(p), protocol.MaxRelayFrameSize)
		var dl time.Time
		if t := c.wdl.Load(); t != nil {
			dl = *t
		}
		c.ws.SetWriteDeadline(dl)
		if err := c.ws.WriteMessage(websocket.BinaryMessage, p[:k]); err != nil {
			c.werr = c.opError("write", err)
			return written, c.werr
		}
		written += k
		p = p[k:]
	}
	return written, nil
}

// opError turns a WebSocket error into what a net.Conn returns.
func (c *relayConn) opError(op string, err error) error {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure && op == "read":
		return io.EOF
	case errors.As(err, &ce):
		err = fmt.Errorf("relayed stream closed by the server: %s (%d)", ce.Text, ce.Code)
	case isTimeout(err):
		err = os.ErrDeadlineExceeded
	case errors.Is(err, websocket.ErrCloseSent):
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "relay", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close sends a close frame (bounded by closeTimeout) and closes the
// socket; the server then closes the other end with 1000.
func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeTimeout))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

func (c *relayConn) LocalAddr() net.Addr  { return relayAddr{c.ws.LocalAddr(), c.stream} }
func (c *relayConn) RemoteAddr() net.Addr { return relayAddr{c.ws.RemoteAddr(), c.stream} }

func (c *relayConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *relayConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline applies to the frames Write sends from now on, and to
// one being written now.
func (c *relayConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(&t)
	return c.ws.NetConn().SetWriteDeadline(t)
}

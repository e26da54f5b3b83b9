package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

// sourceIP spreads clients over 127.0.0.0/8, perIP clients per address,
// so that no source address runs out of ephemeral ports.
func sourceIP(i, perIP int) net.IP {
	n := i/perIP + 1
	return net.IPv4(127, byte(1+n>>16), byte(n>>8), byte(n))
}

// dialClient opens one WebSocket from source address ip.
func dialClient(ctx context.Context, url string, ip net.IP) (*websocket.Conn, error) {
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	d := websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 512}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(protocol.MaxServerFrameSize)
	return ws, nil
}

func writeMsg(ws *websocket.Conn, m protocol.ClientMessage) error {
	b, err := protocol.EncodeClientMessage(m)
	if err != nil {
		return err
	}
	return ws.WriteMessage(websocket.TextMessage, b)
}

// The held clients speak WebSocket by hand over plain TCP: a fixed
// upgrade request, masked frames built once, no goroutine per client
// after registration and one heartbeat loop per worker. The load
// generator shares the machine's two cores with the server during the
// register burst, so what it spends there is time the server does not
// get; gorilla's client (http.Request, header maps, bufio, a reader and a
// heartbeat goroutine per client) cost about as much CPU as the server.

const upgradeRequest = "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// maskedFrame encodes a client text frame (clients must mask).
func maskedFrame(dst, payload []byte) []byte {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	dst = append(dst, 0x81)
	if n := len(payload); n < 126 {
		dst = append(dst, 0x80|byte(n))
	} else {
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	}
	dst = append(dst, mask[:]...)
	for i, b := range payload {
		dst = append(dst, b^mask[i%4])
	}
	return dst
}

// registerRaw connects from ip, upgrades and registers; it returns the
// connection once the server's first frame (registered, or an error)
// is read.
func registerRaw(ctx context.Context, host string, ip net.IP, req []byte, idx int, buf []byte) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, err }
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	// The 101 answer, up to its blank line.
	n := 0
	for {
		k, err := c.Read(buf[n:])
		n += k
		if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
			if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
				return fail(fmt.Errorf("handshake: %q", buf[:i]))
			}
			n = copy(buf, buf[i+4:n])
			break
		}
		if err != nil {
			return fail(fmt.Errorf("handshake: %w", err))
		}
		if n == len(buf) {
			return fail(errors.New("handshake: answer too long"))
		}
	}
	msg := append(append([]byte(`{"type":"register","nickname":"load`), strconv.Itoa(idx)...), `","local_addr":"0.0.0.0:`...)
	msg = append(append(msg, strconv.Itoa(10000+idx%50000)...), `"}`...)
	if _, err := c.Write(maskedFrame(make([]byte, 0, len(msg)+14), msg)); err != nil {
		return fail(err)
	}
	// The first frame from the server (unmasked, short).
	for {
		if n >= 2 {
			hl, pl := 2, int(buf[1]&0x7f)
			if pl == 126 && n >= 4 {
				hl, pl = 4, int(buf[2])<<8|int(buf[3])
			}
			if pl != 126 && pl != 127 && n >= hl+pl {
				if !bytes.Contains(buf[hl:hl+pl], []byte(`"type":"registered"`)) {
					return fail(fmt.Errorf("%s", buf[hl:hl+pl]))
				}
				c.SetDeadline(time.Time{})
				return c, nil
			}
		}
		if n == len(buf) {
			return fail(errors.New("first frame too long"))
		}
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			return fail(err)
		}
	}
}

// runWorker holds count registered clients (global indexes first..) until
// stdin says quit. Protocol on stdin/stdout, one line each: worker
// starts its dialers and prints "ready"; coordinator sends "go"; worker
// connects and registers all, prints "registered <ok> <failed>";
// coordinator closes stdin; worker closes everything and exits.
func runWorker(ctx context.Context, url string, first, count, perIP, conc int, in io.Reader, out io.Writer) error {
	host := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/")
	req := []byte(fmt.Sprintf(upgradeRequest, host))
	var (
		next   atomic.Int64
		ok     atomic.Int64
		failed atomic.Int64
		errMsg atomic.Value
		wg     sync.WaitGroup
		conns  = make([]net.Conn, count)
		start  = make(chan struct{})
	)
	for range min(conc, count) {
		wg.Go(func() {
			buf := make([]byte, 1024)
			<-start
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				c, err := registerRaw(ctx, host, sourceIP(first+i, perIP), req, first+i, buf)
				if err != nil {
					failed.Add(1)
					errMsg.Store(err.Error())
					continue
				}
				conns[i] = c
				ok.Add(1)
			}
		})
	}
	sc := bufio.NewScanner(in)
	fmt.Fprintln(out, "ready")
	if !sc.Scan() || sc.Text() != "go" {
		return fmt.Errorf("worker: expected go")
	}
	close(start)
	wg.Wait()
	fmt.Fprintf(out, "registered %d %d %v\n", ok.Load(), failed.Load(), errMsg.Load())

	// Heartbeat every client every 10 s, like an original client, spread
	// over the interval; the server never needs to ping them.
	hb := maskedFrame(nil, []byte(`{"type":"heartbeat"}`))
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var hwg sync.WaitGroup
	hwg.Go(func() {
		const every = 10 * time.Second
		t := time.NewTicker(every / 100)
		defer t.Stop()
		for slot := 0; ; slot = (slot + 1) % 100 {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			for i := slot; i < count; i += 100 {
				if c := conns[i]; c != nil {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					c.Write(hb)
				}
			}
		}
	})
	for sc.Scan() {
	}
	cancel()
	hwg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

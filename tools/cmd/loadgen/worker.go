package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
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

// runWorker holds count registered clients (global indexes first..) until
// stdin says quit. Protocol on stdin/stdout, one line each:
// worker prints "ready"; coordinator sends "go"; worker connects and
// registers all, prints "registered <ok> <failed>"; coordinator closes
// stdin; worker closes everything and exits.
func runWorker(ctx context.Context, url string, first, count, perIP, conc int, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	fmt.Fprintln(out, "ready")
	if !sc.Scan() || sc.Text() != "go" {
		return fmt.Errorf("worker: expected go")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		ok     atomic.Int64
		failed atomic.Int64
		regWG  sync.WaitGroup
		sem    = make(chan struct{}, conc)
		mu     sync.Mutex
		conns  []*websocket.Conn
		errMsg atomic.Value
	)
	regWG.Add(count)
	for i := range count {
		idx := first + i
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			registered := false
			defer func() {
				if !registered {
					failed.Add(1)
					regWG.Done()
				}
			}()
			ws, err := dialClient(ctx, url, sourceIP(idx, perIP))
			<-sem
			if err != nil {
				errMsg.Store(err.Error())
				return
			}
			mu.Lock()
			conns = append(conns, ws)
			mu.Unlock()
			defer ws.Close()
			if err := writeMsg(ws, &protocol.Register{Nickname: "load" + strconv.Itoa(idx), LocalAddr: "0.0.0.0:" + strconv.Itoa(10000+idx%50000)}); err != nil {
				return
			}
			// Heartbeat like an original client, in this goroutine's
			// own timer; the read loop answers pings.
			go func() {
				t := time.NewTicker(10 * time.Second)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						if writeMsg(ws, &protocol.Heartbeat{}) != nil {
							return
						}
					}
				}
			}()
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if !registered {
					if m, err := protocol.DecodeServerMessage(b); err == nil {
						if _, isReg := m.(*protocol.Registered); isReg {
							registered = true
							ok.Add(1)
							regWG.Done()
						} else {
							errMsg.Store(fmt.Sprintf("%s", b))
						}
					}
				}
			}
		}()
	}
	regWG.Wait()
	fmt.Fprintf(out, "registered %d %d %v\n", ok.Load(), failed.Load(), errMsg.Load())
	for sc.Scan() {
	}
	cancel()
	mu.Lock()
	for _, ws := range conns {
		ws.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

package netsim_test

import (
	"net"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// TestConnConformance runs nettest.TestConn's cases against netsim streams,
// one synctest bubble per case, with latency and a small window so that
// backpressure and timing are exercised.
func TestConnConformance(t *testing.T) {
	for _, tc := range connSuite {
		t.Run(tc.name, func(t *testing.T) {
			netsim.Test(t, func(t *testing.T, n *netsim.Network) {
				c1, c2 := netsimPipe(t, n)
				defer c1.Close()
				defer c2.Close()
				tc.f(t, c1, c2)
			}, netsim.Options{Window: 8 << 10, Link: netsim.Link{Latency: 2 * time.Millisecond}})
		})
	}
}

func netsimPipe(t *testing.T, n *netsim.Network) (net.Conn, net.Conn) {
	t.Helper()
	lan := n.AddSegment("lan")
	a, b := n.AddHost("a", lan), n.AddHost("b", lan)
	ln, err := b.Listen(t.Context(), "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := a.DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c1, c2
}

// TestConnConformanceLoopback runs the same cases against real TCP sockets on 127.0.0.1 (outside any bubble: a real
// socket in a bubble would freeze its clock). It shows the suite holds for
// the real thing, so netsim passing it means netsim behaves like it.
func TestConnConformanceLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("real sockets; skipped in -short mode")
	}
	for _, tc := range connSuite {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2, stop, err := loopbackPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			tc.f(t, c1, c2)
		})
	}
}

func loopbackPipe() (c1, c2 net.Conn, stop func(), err error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	c1, err = net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return nil, nil, nil, err
	}
	r := <-ch
	if r.err != nil {
		c1.Close()
		return nil, nil, nil, r.err
	}
	return c1, r.c, func() { c1.Close(); r.c.Close() }, nil
}

package rendezvous

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/netsim/netns"
)

// pipeListener is a net.Listener whose connections are net.Pipe ends,
// made by dial.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client end of a new connection to l.
func (l *pipeListener) dial() (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.done:
		c.Close()
		s.Close()
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) dialContext(context.Context, string, string) (net.Conn, error) {
	return l.dial()
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// bothPaths is one Server reached two ways: fast through Serve, which
// answers upgrades itself and declines the rest to net/http, and slow
// through an http.Server with Handler, net/http and gorilla only.
type bothPaths struct {
	s          *Server
	fast, slow *pipeListener
}

func newBothPaths(t testing.TB, cfg Config) *bothPaths {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = mrand.NewChaCha8([32]byte{1})
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &bothPaths{s: s, fast: newPipeListener(), slow: newPipeListener()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, p.fast) }()
	hs := &http.Server{Handler: s.Handler()}
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		hs.Serve(p.slow)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-slowDone
		cancel()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return p
}

// exchange sends req on a new connection to ln and returns the answer:
// its head, and its body when it has a Content-Length or is read to EOF.
// After a 101 it checks that the WebSocket answers list_peers. A Date
// header is left out, so that answers at different times compare equal.
func (p *bothPaths) exchange(t testing.TB, ln *pipeListener, req string) string {
	t.Helper()
	c, err := ln.dial()
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan struct{})
	go func() { // ends at the latest when c is closed below
		defer close(wrote)
		c.Write([]byte(req))
	}()
	defer func() {
		c.Close()
		<-wrote
	}()
	br := bufio.NewReader(c)
	var head strings.Builder
	length := -1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			head.WriteString(line)
			return head.String() // closed before or within a head
		}
		if strings.HasPrefix(line, "Date: ") {
			continue
		}
		head.WriteString(line)
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	var body []byte
	switch {
	case strings.HasPrefix(head.String(), "HTTP/1.1 101 "):
		// The connection works, and the server has counted it: it
		// answers list_peers.
		mask := [4]byte{1, 2, 3, 4}
		frame := append([]byte{0x81, 0x80 | byte(len(listPeersJSON))}, mask[:]...)
		for i := range len(listPeersJSON) {
			frame = append(frame, listPeersJSON[i]^mask[i%4])
		}
		if _, err := c.Write(frame); err != nil {
			t.Fatalf("write list_peers: %v", err)
		}
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil || hdr[0] != 0x81 || hdr[1] >= 126 {
			t.Fatalf("answer to list_peers: % x, %v", hdr, err)
		}
		if _, err := io.ReadFull(br, make([]byte, hdr[1])); err != nil {
			t.Fatalf("answer to list_peers: %v", err)
		}
	case length >= 0:
		body = make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("read body: %v", err)
		}
	default:
		body, _ = io.ReadAll(br)
	}
	return head.String() + string(body)
}

// acceptKey is Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Every upgrade parseUpgrade takes is answered by the fast path, with the
// bytes net/http and gorilla answer it with.
func TestFastUpgradeAnswer(t *testing.T) {
	p := newBothPaths(t, Config{MaxConnsPerIP: -1})
	for i, tc := range fastHeads {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := parseUpgrade([]byte(tc.head))
			want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(string(req.key)) + "\r\n\r\n"
			if got := p.exchange(t, p.slow, tc.head); got != want {
				t.Fatalf("net/http and gorilla answer %q, want %q", got, want)
			}
			if got := p.exchange(t, p.fast, tc.head); got != want {
				t.Fatalf("fast path answers %q, want %q", got, want)
			}
			if n := counter(t, p.s, "parlance_bootstrap_fast_upgrades_total"); n != float64(i+1) {
				t.Fatalf("%v fast upgrades, want %d", n, i+1)
			}
		})
	}
}

// What the fast path declines, net/http answers as it did without it.
func TestDeclinedAnsweredByNetHTTP(t *testing.T) {
	p := newBothPaths(t, Config{MaxConnsPerIP: -1})
	for _, tc := range []struct {
		name, req, want string // want: the answer's start
	}{
		{"healthz", "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK\r\n"},
		{"metrics", "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK\r\n"},
		{"a plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 426 Upgrade Required\r\n"},
		{"a plain GET of HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 426 Upgrade Required\r\n"},
		{"an upgrade with an obs-fold", upgradeHead("/", with("X-Long: a", " b")...), "HTTP/1.1 101 "},
		{"an upgrade with a bare LF", strings.Replace(upgradeHead("/", stdLines...), "Go-http-client/1.1\r\n", "Go-http-client/1.1\n", 1), "HTTP/1.1 101 "},
		{"an upgrade with a %-escaped path", upgradeHead("/%61", stdLines...), "HTTP/1.1 101 "},
		{"an upgrade to an unclean path", upgradeHead("/a/../b", stdLines...), "HTTP/1.1 307 "},
		{"an upgrade of HTTP/1.0", strings.Replace(upgradeHead("/", stdLines...), "HTTP/1.1", "HTTP/1.0", 1), "HTTP/1.1 101 "},
		{"an upgrade with a byte after its head", upgradeHead("/", stdLines...) + "x", ""},
		{"an oversized head", upgradeHead("/", with("X-Pad: "+strings.Repeat("p", maxHead))...), "HTTP/1.1 101 "},
		{"an upgrade with two keys", upgradeHead("/", with("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==")...), "HTTP/1.1 101 "},
		{"an upgrade with a bad key", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: x")...), "HTTP/1.1 400 Bad Request\r\n"},
		{"version 8", upgradeHead("/", without("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")...), "HTTP/1.1 400 Bad Request\r\n"},
		{"a POST upgrade", strings.Replace(upgradeHead("/", stdLines...), "GET", "POST", 1), "HTTP/1.1 405 Method Not Allowed\r\n"},
		{"an upgrade with Expect", upgradeHead("/", with("Expect: x")...), "HTTP/1.1 417 Expectation Failed\r\n"},
		{"an upgrade with two Hosts", upgradeHead("/", with("Host: b")...), "HTTP/1.1 400 Bad Request\r\n"},
		{"not HTTP", "\x16\x03\x01\x00\x05hello\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counter(t, p.s, "parlance_bootstrap_fast_upgrades_total")
			want := p.exchange(t, p.slow, tc.req)
			got := p.exchange(t, p.fast, tc.req)
			if got != want || !strings.HasPrefix(got, tc.want) {
				t.Fatalf("through Serve %q,\nnet/http alone %q,\nwant %q...", got, want, tc.want)
			}
			if after := counter(t, p.s, "parlance_bootstrap_fast_upgrades_total"); after != before {
				t.Fatalf("the fast path answered it")
			}
		})
	}
}

// selfSignedTLS returns a server config with a fresh self-signed
// certificate and a client config that trusts it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "rendezvous test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"server.test"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, ServerName: "server.test"}
	return server, client
}

// Behind tls.NewListener, the fast path answers upgrades once the TLS
// handshake is done, and net/http still answers the rest: plain
// endpoints over TLS, and a client speaking plain HTTP to the TLS port.
func TestServeTLS(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t)
	s, err := NewServer(Config{Rand: mrand.NewChaCha8([32]byte{1})})
	if err != nil {
		t.Fatal(err)
	}
	pl := newPipeListener()
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), tls.NewListener(pl, serverTLS)) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})

	d := websocket.Dialer{NetDialContext: pl.dialContext, TLSClientConfig: clientTLS}
	ws, _, err := d.Dial("wss://server.test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	c := &client{t: t, ws: ws}
	if r := c.register("alice", 4000); r.PeerID == "" {
		t.Fatalf("registered %+v", r)
	}
	if n := counter(t, s, "parlance_bootstrap_fast_upgrades_total"); n != 1 {
		t.Fatalf("%v fast upgrades, want 1", n)
	}

	get := func(nc net.Conn, req string) string {
		t.Helper()
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		go nc.Write([]byte(req)) // ends when nc is closed
		b, _ := io.ReadAll(nc)
		return string(b)
	}
	nc, err := pl.dial()
	if err != nil {
		t.Fatal(err)
	}
	if got := get(tls.Client(nc, clientTLS), "GET /healthz HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\nok\n") {
		t.Fatalf("GET /healthz over TLS: %q", got)
	}
	nc, err = pl.dial()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := get(nc, upgradeHead("/", stdLines...)), "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"; got != want {
		t.Fatalf("plain HTTP to the TLS port: %q, want %q", got, want)
	}
}

// Shutdown closes connections still in their handshake at once, rather
// than wait for the handshake's deadline.
func TestShutdownClosesHandshakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := NewServer(Config{Rand: mrand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		pl := newPipeListener()
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), pl) }()
		c, err := pl.dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= handshakeTimeout {
			t.Fatalf("Close took %v: it waited for the handshake's deadline", d)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("client read %d, %v; want EOF", n, err)
		}
	})
}

// A client that does not complete its request head within the handshake
// timeout is cut off without an answer, as by net/http's
// ReadHeaderTimeout before.
func TestHandshakeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := NewServer(Config{Rand: mrand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		pl := newPipeListener()
		go s.Serve(t.Context(), pl)
		defer s.Close()
		c, err := pl.dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n")); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF || time.Since(start) != handshakeTimeout {
			t.Fatalf("read %d, %v after %v; want EOF after %v", n, err, time.Since(start), handshakeTimeout)
		}
	})
}

// tempErr is an Accept error net/http's Serve retries (EMFILE and such).
type tempErr struct{}

func (tempErr) Error() string   { return "too many open files" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

// flakyListener fails its first fails Accepts with tempErr.
type flakyListener struct {
	*pipeListener
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, tempErr{}
	}
	return l.pipeListener.Accept()
}

// A temporary Accept error makes Serve wait and retry, 5 ms doubling, as
// net/http's Serve does, not return.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := NewServer(Config{Rand: mrand.NewChaCha8([32]byte{1})})
		if err != nil {
			t.Fatal(err)
		}
		ln := &flakyListener{pipeListener: newPipeListener(), fails: 4}
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- s.Serve(context.Background(), ln) }()
		d := websocket.Dialer{NetDialContext: ln.dialContext}
		ws, _, err := d.Dial("ws://server.test/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if waited, want := time.Since(start), (5+10+20+40)*time.Millisecond; waited != want {
			t.Fatalf("accepted after %v, want %v", waited, want)
		}
		(&client{t: t, ws: ws}).register("alice", 4000)
		ws.Close()
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
	})
}

// With TrustForwardedFor, the fast path takes the client's address from
// the last X-Forwarded-For header's last entry, as serveWebSocket does.
func TestForwardedForOnBothPaths(t *testing.T) {
	p := newBothPaths(t, Config{TrustForwardedFor: true})
	h := http.Header{"X-Forwarded-For": {"192.0.2.1", " 198.51.100.7 ,\t203.0.113.9 "}}
	for _, ln := range []*pipeListener{p.fast, p.slow} {
		d := websocket.Dialer{NetDialContext: ln.dialContext}
		ws, _, err := d.Dial("ws://server.test/", h)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if r := (&client{t: t, ws: ws}).register("alice", 4000); r.PublicAddr != "203.0.113.9:4000" || r.Observed != "" {
			t.Fatalf("registered %+v, want public_addr 203.0.113.9:4000 and no observed address", r)
		}
	}
	if n := counter(t, p.s, "parlance_bootstrap_fast_upgrades_total"); n != 1 {
		t.Fatalf("%v fast upgrades, want 1", n)
	}
}

// The test harness's clients (netsim streams) take the fast path, so the
// rest of the suite runs through it.
func TestHarnessUpgradesOnFastPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, sim := testServer(t, Config{})
		dial(t, sim, "192.0.2.1").register("alice", 4000)
		dial(t, sim, "192.0.2.2").register("bob", 4001)
		if n, all := counter(t, s, "parlance_bootstrap_fast_upgrades_total"), counter(t, s, "parlance_bootstrap_connections_accepted_total"); n != 2 || all != 2 {
			t.Fatalf("%v of %v connections upgraded on the fast path, want 2 of 2", n, all)
		}
	})
}

// On a real socket, a connection upgraded by either path is served from
// the socket itself (the idle wait needs it: the event loop's loopConn,
// or the *net.TCPConn): the fast path hands
// gorilla the socket, and a declined one is unwrapped when net/http
// hijacks it.
func TestUpgradeOnRealSocketKeepsSocket(t *testing.T) {
	bothWaits(t, testUpgradeOnRealSocketKeepsSocket)
}

func testUpgradeOnRealSocketKeepsSocket(t *testing.T, mode waitMode) {
	netns.Require(t)
	s, err := NewServer(withWait(Config{}, mode))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(t.Context(), ln)
	t.Cleanup(func() { s.Close() })
	for _, h := range []http.Header{
		nil, // the fast path
		{"X-Pad": {strings.Repeat("p", maxHead)}}, // declined: too long
	} {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", h)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		(&client{t: t, ws: ws}).register("alice", 4000)
	}
	if n, all := counter(t, s, "parlance_bootstrap_fast_upgrades_total"), counter(t, s, "parlance_bootstrap_connections_accepted_total"); n != 1 || all != 2 {
		t.Fatalf("%v of %v connections upgraded on the fast path, want 1 of 2", n, all)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if mode != waitGoroutine {
			if lc, ok := c.fc.Conn.(*loopConn); !ok || c.lane != lc {
				t.Errorf("connection on %T; want the event loop's *loopConn", c.fc.Conn)
			}
			continue
		}
		if _, ok := c.fc.Conn.(*net.TCPConn); !ok || (canPeek && c.raw == nil) {
			t.Errorf("connection on %T, raw %v; want the *net.TCPConn", c.fc.Conn, c.raw)
		}
	}
}

// BenchmarkUpgrade: accept, read and answer one WebSocket upgrade as
// gorilla's Dialer sends it, over net.Pipe (no syscalls), through Serve;
// the client closes the connection once the 101 is read.
func BenchmarkUpgrade(b *testing.B) {
	s, err := NewServer(Config{Rand: mrand.NewChaCha8([32]byte{1}), MaxConnsPerIP: -1})
	if err != nil {
		b.Fatal(err)
	}
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	req := []byte(upgradeHead("/", stdLines...))
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		c, err := ln.dial()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for n := 0; !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")); {
			k, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += k
		}
		c.Close()
	}
}

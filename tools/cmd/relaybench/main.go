// Command relaybench measures what the bootstrap server's relay costs:
// memory per open relayed stream, and the CPU time and throughput of
// bulk transfer through it. It starts the real bootstrap-server binary on
// 127.0.0.1 (a fresh one per measurement), registers pairs of clients
// with the "relay" capability, opens one relayed stream per pair the way
// the client does (relay_connect, relay_incoming, relay_accept,
// relay_ready; see protocol/doc.go, "Relayed streams") and then:
//
//   - with -idle N,...: exchanges one 64-byte frame each way on each of
//     the N streams and holds them idle; it prints the server's RSS per
//     registration and per open stream (VmRSS from /proc/<pid>/status
//     after -hold, minus the RSS before), and the server's CPU time per
//     stream opened (utime+stime from /proc/<pid>/stat);
//   - with -bulk K,...: on each of K streams, the opener sends -frame
//     bytes per binary frame as fast as the server takes them, for
//     -duration after a second of warm-up; it prints the payload bytes per
//     second the receivers got, the server's CPU seconds over the window
//     and per GiB relayed, and the server's RSS at the end of the window.
//
// The server gets default flags plus -server-flags (for -bulk, pass
// "--relay-peer-rate -1 --relay-total-rate -1" to lift the relay's rate
// limits). Clients come from 127.10.0.0/16, 10 pairs per source address,
// so the default per-address limits hold.
//
// The bulk senders write pre-built frames straight to the socket with a
// masking key of zero, so the load generator spends next to no CPU on
// them; the server unmasks them the same as any other frame. The
// receivers read with gorilla/websocket. The load generator's own CPU
// and that of every other process on the machine (/proc/stat) are
// printed beside the server's: the machine has two cores.
//
// With -punch-trace FILE it starts nothing: it reads the netsim trace
// (NETSIM_TRACE) of one cell of e2e/sim's TestNATMatrix and prints, for
// each relayed session, when its Send was and how long after it the TCP
// simultaneous open came and the session went direct (see punch.go).
//
// It talks only to 127.0.0.0/8. Run it inside a private network
// namespace (see BENCHMARKS.md, "Internet mode across NATs (issue 10)"):
//
//	unshare -n sh -c 'ip link set lo up; relaybench -server /tmp/bootstrap-server -idle 100,1000'
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/tools/internal/procstat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

type options struct {
	server, serverFlags string
	port, frame         int
	hold, duration      time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.server, "server", "", "bootstrap-server binary to start on 127.0.0.1 (required)")
	fs.StringVar(&o.serverFlags, "server-flags", "", "extra flags for the server, space-separated (e.g. \"--relay-peer-rate -1 --relay-total-rate -1\")")
	fs.IntVar(&o.port, "port", 18090, "port for the server")
	idle := fs.String("idle", "", "comma-separated stream counts N: RSS per idle relayed stream (N pairs, one stream each)")
	bulk := fs.String("bulk", "", "comma-separated stream counts K: throughput and CPU of bulk transfer through K streams")
	fs.DurationVar(&o.hold, "hold", 10*time.Second, "-idle: idle time before each RSS reading")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "-bulk: measured transfer time (after 1 s of warm-up)")
	fs.IntVar(&o.frame, "frame", protocol.MaxRelayFrameSize, "-bulk: payload bytes per binary frame (at most the server's --relay-max-frame)")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on the whole run")
	punch := fs.String("punch-trace", "", "instead: read a netsim trace (NETSIM_TRACE) of one TestNATMatrix cell and print, per relayed session, when its hole punch made it direct")
	latency := fs.Duration("trace-latency", 10*time.Millisecond, "-punch-trace: the one-way link latency of the traced network")
	serverPort := fs.Int("trace-server-port", 8080, "-punch-trace: the rendezvous server's port in the traced network")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *punch != "" {
		f, err := os.Open(*punch)
		if err != nil {
			return err
		}
		defer f.Close()
		return punchTrace(f, stdout, *latency, *serverPort)
	}
	if o.server == "" {
		return errors.New("-server is required")
	}
	if *idle == "" && *bulk == "" {
		return errors.New("give -idle N,... and/or -bulk K,...")
	}
	if o.frame < 1 || o.frame > protocol.MaxRelayFrameSize {
		return fmt.Errorf("-frame must be 1 to %d", protocol.MaxRelayFrameSize)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ns, err := counts(*idle)
	if err != nil {
		return err
	}
	ks, err := counts(*bulk)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "load average at start: %s\n", loadavg())
	for _, n := range ns {
		if err := runIdle(ctx, o, n, stdout, stderr); err != nil {
			return fmt.Errorf("idle N=%d: %w", n, err)
		}
	}
	for _, k := range ks {
		if err := runBulk(ctx, o, k, stdout, stderr); err != nil {
			return fmt.Errorf("bulk K=%d: %w", k, err)
		}
	}
	fmt.Fprintf(stdout, "load average at end: %s\n", loadavg())
	return nil
}

func counts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// server is a running bootstrap-server.
type server struct {
	cmd  *exec.Cmd
	pid  int
	url  string
	http string
}

func startServer(ctx context.Context, o options, maxPeers int, stderr io.Writer) (*server, error) {
	args := []string{"--host", "127.0.0.1", "--port", strconv.Itoa(o.port), "--log-level", "warn",
		"--max-peers", strconv.Itoa(max(maxPeers, 100))}
	args = append(args, strings.Fields(o.serverFlags)...)
	cmd := exec.CommandContext(ctx, o.server, args...)
	cmd.Stderr = stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	s := &server{cmd: cmd, pid: cmd.Process.Pid,
		url: fmt.Sprintf("ws://127.0.0.1:%d/", o.port), http: fmt.Sprintf("http://127.0.0.1:%d", o.port)}
	if err := procstat.WaitHealthy(ctx, s.http+"/healthz"); err != nil {
		s.stop()
		return nil, err
	}
	time.Sleep(time.Second) // let the fresh server settle before the baseline
	return s, nil
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// metric returns the sum of the server's /metrics samples named name.
func (s *server) metric(ctx context.Context, name string) float64 {
	req, _ := http.NewRequestWithContext(ctx, "GET", s.http+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// client is one registered client's control connection.
type client struct {
	ws       *websocket.Conn
	wmu      sync.Mutex
	ip       net.IP
	id       string
	token    string
	incoming chan *protocol.RelayIncoming
}

func dial(ctx context.Context, url string, ip net.IP, bufSize int) (*websocket.Conn, error) {
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	d := websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 30 * time.Second, ReadBufferSize: bufSize, WriteBufferSize: bufSize}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(protocol.MaxServerFrameSize + protocol.MaxRelayFrameSize)
	return ws, nil
}

func writeMsg(ws *websocket.Conn, m protocol.ClientMessage) error {
	b, err := protocol.EncodeClientMessage(m)
	if err != nil {
		return err
	}
	return ws.WriteMessage(websocket.TextMessage, b)
}

// readMsg reads the next text frame and decodes it.
func readMsg(ws *websocket.Conn) (protocol.ServerMessage, error) {
	typ, b, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.TextMessage {
		return nil, errors.New("binary frame where a message was expected")
	}
	return protocol.DecodeServerMessage(b)
}

// register connects from ip and registers nick with the relay
// capability; a goroutine then reads the control connection (answering
// pings) and hands relay_incoming to c.incoming.
func register(ctx context.Context, url string, ip net.IP, nick string, wg *sync.WaitGroup) (*client, error) {
	ws, err := dial(ctx, url, ip, 1024)
	if err != nil {
		return nil, err
	}
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := writeMsg(ws, &protocol.Register{Nickname: nick, LocalAddr: "0.0.0.0:1", Caps: []string{protocol.CapRelay}}); err != nil {
		ws.Close()
		return nil, err
	}
	m, err := readMsg(ws)
	if err != nil {
		ws.Close()
		return nil, err
	}
	r, ok := m.(*protocol.Registered)
	if !ok || r.RelayToken == "" {
		ws.Close()
		return nil, fmt.Errorf("register %s: got %#v, want registered with a relay token", nick, m)
	}
	ws.SetReadDeadline(time.Time{})
	c := &client{ws: ws, ip: ip, id: r.PeerID, token: r.RelayToken, incoming: make(chan *protocol.RelayIncoming, 8)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := readMsg(ws)
			if err != nil {
				return
			}
			if in, ok := m.(*protocol.RelayIncoming); ok {
				select {
				case c.incoming <- in:
				default:
				}
			}
		}
	}()
	return c, nil
}

func (c *client) heartbeat() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return writeMsg(c.ws, &protocol.Heartbeat{})
}

// pair is two registered clients and, once open, their relayed stream.
type pair struct {
	a, b   *client
	ra, rb *websocket.Conn // relay WebSockets: a's (opener) and b's
	stream string
}

// sourceIP is the address of pair i: 10 pairs per address.
func sourceIP(i int) net.IP {
	j := i/10 + 1
	return net.IPv4(127, 10, byte(j>>8), byte(j))
}

// fleet holds the pairs of one measurement and stops them.
type fleet struct {
	pairs []*pair
	wg    sync.WaitGroup // control readers
	stop  chan struct{}
}

func (f *fleet) close() {
	close(f.stop)
	for _, p := range f.pairs {
		if p == nil {
			continue
		}
		for _, ws := range []*websocket.Conn{p.ra, p.rb} {
			if ws != nil {
				ws.Close()
			}
		}
		for _, c := range []*client{p.a, p.b} {
			if c != nil {
				c.ws.Close()
			}
		}
	}
	f.wg.Wait()
}

// parallel runs fn(i) for i in [0, n) with at most conc at a time and
// returns the first error.
func parallel(n, conc int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		first error
		mu    sync.Mutex
		wg    sync.WaitGroup
	)
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// registerPairs registers n pairs and starts their heartbeats.
func registerPairs(ctx context.Context, url string, n int) (*fleet, error) {
	f := &fleet{pairs: make([]*pair, n), stop: make(chan struct{})}
	err := parallel(n, 32, func(i int) error {
		p := &pair{}
		f.pairs[i] = p
		var err error
		if p.a, err = register(ctx, url, sourceIP(i), "relay-a"+strconv.Itoa(i), &f.wg); err != nil {
			return err
		}
		p.b, err = register(ctx, url, sourceIP(i), "relay-b"+strconv.Itoa(i), &f.wg)
		return err
	})
	if err != nil {
		f.close()
		return nil, fmt.Errorf("register: %w", err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
				for _, p := range f.pairs {
					p.a.heartbeat()
					p.b.heartbeat()
				}
			}
		}
	}()
	return f, nil
}

// open opens p's relayed stream: a's relay_connect, b's relay_accept on
// the relay_incoming it got, relay_ready on both. bufSize is b's read
// buffer (the receiver of bulk transfer).
func (p *pair) open(ctx context.Context, url string, bufSize int) error {
	var err error
	if p.ra, err = dial(ctx, url, p.a.ip, 1024); err != nil {
		return err
	}
	if err := writeMsg(p.ra, &protocol.RelayConnect{Token: p.a.token, PeerID: p.b.id}); err != nil {
		return err
	}
	var in *protocol.RelayIncoming
	select {
	case in = <-p.b.incoming:
	case <-time.After(15 * time.Second):
		return errors.New("no relay_incoming within 15 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.rb, err = dial(ctx, url, p.b.ip, bufSize); err != nil {
		return err
	}
	if err := writeMsg(p.rb, &protocol.RelayAccept{Token: p.b.token, Stream: in.Stream}); err != nil {
		return err
	}
	for _, ws := range []*websocket.Conn{p.ra, p.rb} {
		ws.SetReadDeadline(time.Now().Add(15 * time.Second))
		m, err := readMsg(ws)
		if err != nil {
			return err
		}
		r, ok := m.(*protocol.RelayReady)
		if !ok || r.Stream != in.Stream {
			return fmt.Errorf("got %#v, want relay_ready for %s", m, in.Stream)
		}
		ws.SetReadDeadline(time.Time{})
	}
	p.stream = in.Stream
	return nil
}

// exchange sends one small frame each way and checks it arrives.
func (p *pair) exchange() error {
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for _, d := range [][2]*websocket.Conn{{p.ra, p.rb}, {p.rb, p.ra}} {
		if err := d[0].WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
		d[1].SetReadDeadline(time.Now().Add(15 * time.Second))
		typ, b, err := d[1].ReadMessage()
		if err != nil {
			return err
		}
		if typ != websocket.BinaryMessage || string(b) != string(msg) {
			return errors.New("relayed frame arrived changed")
		}
		d[1].SetReadDeadline(time.Time{})
	}
	return nil
}

func openAll(ctx context.Context, f *fleet, url string, bufSize int, exchange bool) error {
	return parallel(len(f.pairs), 32, func(i int) error {
		p := f.pairs[i]
		if err := p.open(ctx, url, bufSize); err != nil {
			return fmt.Errorf("open stream %d: %w", i, err)
		}
		if exchange {
			if err := p.exchange(); err != nil {
				return fmt.Errorf("exchange on stream %d: %w", i, err)
			}
		}
		return nil
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func runIdle(ctx context.Context, o options, n int, stdout, stderr io.Writer) error {
	s, err := startServer(ctx, o, 2*n+10, stderr)
	if err != nil {
		return err
	}
	defer s.stop()
	rss0, err := procstat.RSSKiB(s.pid)
	if err != nil {
		return err
	}
	cpu0, _ := procstat.CPUSeconds(s.pid)
	t0 := time.Now()
	f, err := registerPairs(ctx, s.url, n)
	if err != nil {
		return err
	}
	defer f.close()
	tReg := time.Since(t0)
	cpu1, _ := procstat.CPUSeconds(s.pid)
	if err := sleep(ctx, o.hold); err != nil {
		return err
	}
	rss1, _ := procstat.RSSKiB(s.pid)
	cpu2, _ := procstat.CPUSeconds(s.pid)
	self0, _ := procstat.CPUSeconds(os.Getpid())
	busy0, _, _ := procstat.MachineBusy()
	t1 := time.Now()
	if err := openAll(ctx, f, s.url, 1024, true); err != nil {
		return err
	}
	tOpen := time.Since(t1)
	cpu3, _ := procstat.CPUSeconds(s.pid)
	self1, _ := procstat.CPUSeconds(os.Getpid())
	busy1, _, _ := procstat.MachineBusy()
	if err := sleep(ctx, o.hold); err != nil {
		return err
	}
	rss2, _ := procstat.RSSKiB(s.pid)
	cpu4, _ := procstat.CPUSeconds(s.pid)
	open := s.metric(ctx, `parlance_bootstrap_relay_streams{state="open"}`)
	fmt.Fprintf(stdout, "idle N=%d streams (%d registrations), server %s\n", n, 2*n, strings.TrimSpace("defaults "+o.serverFlags))
	fmt.Fprintf(stdout, "  server RSS: %d KiB empty, %d KiB with %d registrations (after %v), %d KiB with %d open streams (after %v; relay_streams{open} = %.0f)\n",
		rss0, rss1, 2*n, o.hold, rss2, n, o.hold, open)
	fmt.Fprintf(stdout, "  RSS per registration %.2f KiB; RSS per open relayed stream %.2f KiB (two WebSockets, the stream, two pumps)\n",
		float64(rss1-rss0)/float64(2*n), float64(rss2-rss1)/float64(n))
	fmt.Fprintf(stdout, "  registered %d in %.3f s (server CPU %.2f s); opened %d streams with one 64-byte frame each way in %.3f s: server CPU %.2f s = %.0f us per stream; load generator %.2f s; other processes %.2f CPU s\n",
		2*n, tReg.Seconds(), cpu1-cpu0, n, tOpen.Seconds(), cpu3-cpu2, (cpu3-cpu2)/float64(n)*1e6, self1-self0, (busy1-busy0)-(cpu3-cpu2)-(self1-self0))
	fmt.Fprintf(stdout, "  server CPU while %d streams idle for %v: %.2f s\n", n, o.hold, cpu4-cpu3)
	return nil
}

// frameHeader is the header of a client binary frame of n payload bytes
// with a masking key of zero (the payload goes out as it is).
func frameHeader(n int) []byte {
	h := []byte{0x82}
	switch {
	case n < 126:
		h = append(h, 0x80|byte(n))
	case n < 1<<16:
		h = append(h, 0x80|126, byte(n>>8), byte(n))
	default:
		h = append(h, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(h, 0, 0, 0, 0)
}

func runBulk(ctx context.Context, o options, k int, stdout, stderr io.Writer) error {
	s, err := startServer(ctx, o, 2*k+10, stderr)
	if err != nil {
		return err
	}
	defer s.stop()
	rss0, err := procstat.RSSKiB(s.pid)
	if err != nil {
		return err
	}
	f, err := registerPairs(ctx, s.url, k)
	if err != nil {
		return err
	}
	defer f.close()
	if err := openAll(ctx, f, s.url, 64<<10, false); err != nil {
		return err
	}
	rss1, _ := procstat.RSSKiB(s.pid)

	frame := append(frameHeader(o.frame), make([]byte, o.frame)...)
	for i := range o.frame {
		frame[len(frame)-o.frame+i] = byte(i * 7)
	}
	var (
		stop     atomic.Bool
		received atomic.Int64
		frames   atomic.Int64
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil && !stop.Load() {
			firstErr = err
		}
		errMu.Unlock()
	}
	for _, p := range f.pairs {
		wg.Add(2)
		go func() { // sender: raw frames on a's relay socket
			defer wg.Done()
			nc := p.ra.NetConn()
			for !stop.Load() {
				nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := nc.Write(frame); err != nil {
					fail(fmt.Errorf("send: %w", err))
					return
				}
			}
		}()
		go func() { // receiver: b's relay WebSocket
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				typ, r, err := p.rb.NextReader()
				if err != nil {
					if !stop.Load() {
						fail(fmt.Errorf("receive: %w", err))
					}
					return
				}
				if typ != websocket.BinaryMessage {
					fail(errors.New("text frame on a relayed stream"))
					return
				}
				for {
					m, err := r.Read(buf)
					received.Add(int64(m))
					if err == io.EOF {
						break
					}
					if err != nil {
						fail(fmt.Errorf("receive: %w", err))
						return
					}
				}
				frames.Add(1)
			}
		}()
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	type snap struct {
		t                          time.Time
		bytes, frames              int64
		srv, self, busy, soft, thr float64
	}
	take := func() snap {
		x := snap{t: time.Now(), bytes: received.Load(), frames: frames.Load()}
		x.srv, _ = procstat.CPUSeconds(s.pid)
		x.self, _ = procstat.CPUSeconds(os.Getpid())
		x.busy, x.soft, _ = procstat.MachineBusy()
		return x
	}
	a := take()
	a.thr = s.metric(ctx, "parlance_bootstrap_relay_throttled_seconds_total")
	if err := sleep(ctx, o.duration); err != nil {
		return err
	}
	b := take()
	b.thr = s.metric(ctx, "parlance_bootstrap_relay_throttled_seconds_total")
	rss2, _ := procstat.RSSKiB(s.pid)
	relayed := s.metric(ctx, "parlance_bootstrap_relay_bytes_total")
	stop.Store(true)
	for _, p := range f.pairs {
		p.ra.Close()
		p.rb.Close()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	secs := b.t.Sub(a.t).Seconds()
	bytes := float64(b.bytes - a.bytes)
	srv := b.srv - a.srv
	self := b.self - a.self
	gib := bytes / (1 << 30)
	fmt.Fprintf(stdout, "bulk K=%d streams, frames of %d bytes, %v, server %s\n", k, o.frame, b.t.Sub(a.t).Round(time.Millisecond), strings.TrimSpace("defaults "+o.serverFlags))
	fmt.Fprintf(stdout, "  relayed %.1f MiB/s (%.2f Gbit/s, %.0f frames/s, %.2f MiB/s per stream); server relay_bytes_total %.0f MiB over the run\n",
		bytes/secs/(1<<20), bytes*8/secs/1e9, float64(b.frames-a.frames)/secs, bytes/secs/(1<<20)/float64(k), relayed/(1<<20))
	perGiB := 0.0
	if gib > 0 {
		perGiB = srv / gib
	}
	fmt.Fprintf(stdout, "  server CPU %.2f s (%.0f%% of one core) = %.2f CPU s per GiB relayed; load generator %.2f s; rest of the machine %.2f s, of which softirq %.2f s; throttled %.1f s (summed over frames)\n",
		srv, srv/secs*100, perGiB, self, (b.busy-a.busy)-srv-self, b.soft-a.soft, b.thr-a.thr)
	fmt.Fprintf(stdout, "  server RSS %d KiB empty, %d KiB with %d streams open, %d KiB at the end of the transfer (%.1f KiB per stream over the registered+open baseline)\n",
		rss0, rss1, k, rss2, float64(rss2-rss1)/float64(k))
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/bootstrap-server/internal/cluster"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
)

// Error texts this server sends beyond the original's three
// (protocol.ErrTextNotRegistered, protocol.ErrTextPeerNotRegistered and
// protocol.ErrTextInvalidPrefix). Each is a plain error message, which an
// original client treats like any other error.
const (
	// ErrTextRateLimited precedes closing a connection whose address sent
	// more messages than its rate allows.
	ErrTextRateLimited = "Rate limit exceeded"
	// ErrTextTooManyConns precedes closing a connection beyond the
	// per-address connection limit.
	ErrTextTooManyConns = "Too many connections from your address"
	// ErrTextServerFull answers a register beyond MaxPeers; the
	// connection stays open.
	ErrTextServerFull = "Server full"
	// ErrTextFrameTooLarge follows protocol.ErrTextInvalidPrefix when a
	// frame exceeds MaxFrame; the connection is closed after it.
	ErrTextFrameTooLarge = "frame exceeds the limit of %d bytes"
	// ErrTextBadSignature follows protocol.ErrTextInvalidPrefix when the
	// signature of a register with a key does not verify. The register
	// is refused like a malformed one: nothing is registered, and a
	// registration the connection already had stays.
	ErrTextBadSignature = "register: signature does not verify"
	// ErrTextStaleSignature (a format taking SignatureWindow) follows
	// protocol.ErrTextInvalidPrefix when a register with a key has a ts
	// outside SignatureWindow of the server's clock; refused likewise.
	ErrTextStaleSignature = "register: field `ts` is more than %v away from the server's clock"
)

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("rendezvous: server closed")

// Server is a bootstrap (rendezvous) server. Create it with NewServer,
// mount Handler on an http.Server or call Serve, and stop it with Close or
// Shutdown.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	gatherer prometheus.Gatherer
	upgrader websocket.Upgrader
	handler  http.Handler
	frameErr []byte   // the frame-too-large error, encoded once
	frames   struct { // frames sent as they are, encoded once
		rateLimited, rateLimitedClose    []byte
		notRegistered, peerNotRegistered []byte
	}
	bufs     sync.Pool // *[]byte read buffers of MaxFrame+1 bytes
	upgrades sync.Pool // *fastUpgrade (accept.go)

	waitReads *atomic.Int64 // counts onReadable's reads of sockets, for tests; nil otherwise
	rawWrites *atomic.Int64 // counts direct writes the socket took in part (releaseWrites), for tests; nil otherwise

	ctx     context.Context // cancelled by Shutdown
	readers *pool[*conn]    // read connections with input (conn.go)
	writers *pool[*conn]    // write connections' queues (conn.go)
	shakers *pool[accepted] // answer accepted connections' first request (accept.go)
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine the server starts

	mu         sync.Mutex
	closing    bool
	conns      map[*conn]struct{}
	ips        map[string]*ipState
	namespaces map[string]*namespace
	npeers     int
	https      []*http.Server // servers started by Serve

	// Connections Serve accepted whose handshake goroutine reads or
	// writes them (accept.go), for Shutdown to close.
	hsMu        sync.Mutex
	hsClosed    bool
	handshaking map[net.Conn]struct{}
	hsTimeout   time.Duration // handshakeTimeout; tests shorten it
	loops       []*loop       // Serve's event loops; guarded by mu

	// The relay (relay.go).
	peersByID    map[string]*peer
	relayTokens  map[string]*peer
	relayStreams map[string]*relayStream
	relayLim     *rate.Limiter // RelayTotalRate; nil: none

	// Cluster mode (cluster.go); all nil or zero without Config.Cluster.
	cluster     *cluster.Node
	cm          *clusterMetrics
	remotes     map[string]*remoteServer // by server id
	clusterUp   bool                     // connected to NATS
	clusterDown time.Time                // since when not
	// Cross-server relayed streams (xrelay.go): the other servers'
	// generations, and the streams by id for the NATS handler's data
	// and credits, which take no s.mu (the streams are in relayStreams
	// too).
	xgens    map[string]uint64
	xstreams sync.Map
}

// ipState is what the per-address limits track. Guarded by Server.mu.
type ipState struct {
	conns int
	lim   *rate.Limiter
}

// NewServer returns a server configured by cfg. It starts a goroutine
// (the expiry sweep); Close stops it.
func NewServer(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	reg, gat := cfg.Registerer, cfg.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gat = r, r
	} else if gat == nil {
		gat, _ = reg.(prometheus.Gatherer)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: register metrics: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger,
		metrics:      m,
		gatherer:     gat,
		conns:        make(map[*conn]struct{}),
		handshaking:  make(map[net.Conn]struct{}),
		hsTimeout:    handshakeTimeout,
		ips:          make(map[string]*ipState),
		namespaces:   make(map[string]*namespace),
		peersByID:    make(map[string]*peer),
		relayTokens:  make(map[string]*peer),
		relayStreams: make(map[string]*relayStream),
		frameErr:     encodeServer(&protocol.Error{Message: protocol.ErrTextInvalidPrefix + fmt.Sprintf(ErrTextFrameTooLarge, cfg.MaxFrame)}),
	}
	s.relayLim = s.newRelayLimiter(cfg.RelayTotalRate)
	s.upgrades.New = newFastUpgrade
	s.frames.rateLimited = encodeServer(&protocol.Error{Message: ErrTextRateLimited})
	s.frames.rateLimitedClose = websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "rate limit exceeded")
	s.frames.notRegistered = encodeServer(&protocol.Error{Message: protocol.ErrTextNotRegistered})
	s.frames.peerNotRegistered = encodeServer(&protocol.Error{Message: protocol.ErrTextPeerNotRegistered})
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: handshakeTimeout,
		// A small read buffer and pooled write buffers keep an idle
		// connection cheap: nothing but the reader's stack and this
		// buffer stays allocated between messages.
		ReadBufferSize:  256,
		WriteBufferPool: &sync.Pool{},
		// Clients are programs, not browsers; there is no cookie or
		// session an origin check would protect.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			s.metrics.err(errKindHandshake)
			http.Error(w, "WebSocket handshake failed: "+reason.Error(), status)
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealth)
	if gat != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gat, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}))
	}
	mux.HandleFunc("/", s.serveWebSocket)
	s.handler = mux
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.readers = newPool(s.read)
	s.writers = newPool((*conn).writeLoop)
	s.shakers = newPool(s.handshake)
	if cfg.Cluster != nil {
		if err := s.startCluster(reg); err != nil {
			s.cancel()
			return nil, err
		}
	}
	s.wg.Go(s.sweepLoop)
	return s, nil
}

// Handler returns the server's HTTP handler: GET /healthz, GET /metrics
// (Prometheus), and a WebSocket upgrade on every other path. A request
// that is not a WebSocket upgrade gets a plain-text 426 answer.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln until ctx is done or the server is
// closed, then returns ErrServerClosed. When ctx ends, Serve closes the
// server itself (close frames to every client) and returns only once that
// is done, so a program may exit as soon as Serve returns. When Close or
// Shutdown stops it instead, Serve returns at once and the caller of
// Close or Shutdown waits, as with http.Server. For TLS, pass a
// tls.NewListener.
//
// Serve answers WebSocket upgrades itself (accept.go) and leaves every
// other request to an http.Server running Handler.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.https = append(s.https, hs)
	// The http.Server serves what the fast path declines, until fb is
	// closed: by hs.Close in Shutdown, or below. Added under s.mu while
	// not closing, so Shutdown's Wait sees it.
	fb := newFallbackListener(ln)
	loops, err := s.newLoops(ln, fb)
	if err != nil {
		s.log.Warn("no event loop; a goroutine per connection instead", "err", err)
	}
	s.wg.Go(func() { hs.Serve(fb) })
	s.loops = append(s.loops, loops...)
	for _, l := range loops {
		s.wg.Go(l.run)
	}
	s.mu.Unlock()

	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		s.Close()
	})
	if len(loops) > 0 {
		err = loops[0].wait() // the accepting loop
	} else {
		err = s.acceptLoop(ln, fb)
	}
	fb.Close() // when Accept failed on its own: ends hs.Serve
	if !stop() {
		// ctx ended and the close it started is under way: the accept
		// loop returns as soon as that close has shut the listener,
		// long before the close frames are written. Wait for it, or a
		// program that exits when Serve returns cuts them off.
		<-closed
	}
	if errors.Is(err, ErrServerClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("rendezvous: serve %s: %w", ln.Addr(), err)
}

// Close is Shutdown with a context bounded by Config.ShutdownGrace.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown stops accepting connections, sends every client a close frame
// (1001, going away), waits until they are written or ctx is done, cuts
// what remains and waits for every goroutine the server started. It is
// safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closing
	s.closing = true
	https := s.https
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	if first && s.cluster != nil {
		// Tell the other servers that the cross-server streams end,
		// rather than leave them to find out from the missing beats.
		s.xendServerLocked("", nil, outcomeServerLost)
	}
	s.mu.Unlock()
	if first {
		s.log.Info("shutting down", "connections", len(conns))
		if s.cluster != nil {
			// First, so that the registrations ended below are not
			// published: the others drop them once this server's beats
			// stop, by when their clients have moved on (cluster.go).
			s.cluster.Close()
		}
	}
	var errs []error
	for _, hs := range https {
		// Close, not Shutdown: hijacked conns are ours to close, and
		// idle HTTP keep-alives may simply be cut. Closing its
		// listener closes the one Serve accepts on (fallbackListener).
		if err := hs.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.closeHandshakes()
	s.cancel()
	closeMsg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	for _, c := range conns {
		c.closeWith(outMsg{kind: msgClose, data: closeMsg})
	}
	done := make(chan struct{})
	go func() { // owned here: ends when wg.Wait returns, which the select below waits for.
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		rest := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			rest = append(rest, c)
		}
		s.mu.Unlock()
		for _, c := range rest {
			c.abort()
		}
		<-done
	}
	return errors.Join(errs...)
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	s.mu.Lock()
	closing := s.closing
	degraded := s.cluster != nil && !s.clusterUp
	since := s.clusterDown
	s.mu.Unlock()
	if closing {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	if degraded {
		// 200 all the same: the server does serve its clients, and a
		// load balancer that took every server out while NATS is down
		// would serve no one.
		fmt.Fprintf(w, "degraded: not connected to NATS since %s; serving this server's clients only\n", since.UTC().Format(time.RFC3339))
		return
	}
	fmt.Fprintln(w, "ok")
}

const plainAnswer = "This is a Parlance bootstrap server. Connect with a WebSocket client (ws:// or wss://); GET /healthz and /metrics are plain HTTP.\n"

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusUpgradeRequired)
		fmt.Fprint(w, plainAnswer)
		return
	}
	ip, port := s.remote(r)
	st, overLimit, ok := s.admit(ip)
	if !ok {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	hj := &hijacker{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		// The upgrader has answered the request.
		s.log.Debug("handshake failed", "remote", r.RemoteAddr, "err", err)
		s.releaseIP(ip)
		return
	}
	s.startConn(ws, hj.fc, ip, port, st, overLimit)
}

// admit counts a connection from ip against its address, before the
// upgrade, so that a burst of handshakes cannot overshoot the limit;
// overLimit reports that it is one too many. ok is false, and nothing
// counted, once the server is closing.
func (s *Server) admit(ip string) (st *ipState, overLimit, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, false, false
	}
	st = s.ips[ip]
	if st == nil {
		st = &ipState{}
		if s.cfg.MsgRatePerIP > 0 {
			st.lim = rate.NewLimiter(rate.Limit(s.cfg.MsgRatePerIP), s.cfg.MsgBurstPerIP)
		}
		s.ips[ip] = st
	}
	st.conns++
	return st, s.cfg.MaxConnsPerIP > 0 && st.conns > s.cfg.MaxConnsPerIP, true
}

// startConn serves ws, just upgraded by serveWebSocket or Serve's fast
// path, on fc, for the client at ip and port that admit counted as st.
func (s *Server) startConn(ws *websocket.Conn, fc *frameConn, ip, port string, st *ipState, overLimit bool) {
	c := &conn{s: s, ws: ws, fc: fc, ip: ip, port: port, ipst: st}
	// No read deadline from here on but a lingering close's (lingerClose):
	// the sweep ends a connection silent for ReadTimeout. A deadline
	// would cost a timer update per message and wake every idle
	// connection once per ReadTimeout, which grows its goroutine's stack.
	// The handshake's deadline goes first, before closeWith below can
	// start a lingering close.
	if err := fc.Conn.SetReadDeadline(time.Time{}); err != nil {
		ws.NetConn().Close()
		s.releaseIP(ip)
		return
	}
	if lc, ok := fc.Conn.(*loopConn); ok {
		// Serve's event loop waits for it (loop_linux.go); readers
		// read the loopConn itself.
		c.lane = lc
	} else if tc, ok := fc.Conn.(*net.TCPConn); ok && canPeek {
		c.raw, _ = tc.SyscallConn()
		fc.turn = make(chan int8)
	}
	c.touch()

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ws.NetConn().Close()
		s.releaseIP(ip)
		return
	}
	s.conns[c] = struct{}{}
	if c.lane == nil {
		// Added under s.mu while not closing, so Shutdown's Wait sees
		// it. (A loop's connections are waited for with the loop.)
		s.wg.Add(1)
	}
	s.mu.Unlock()
	s.metrics.connections.Inc()
	s.metrics.connsAccepted.Inc()

	if overLimit {
		s.metrics.err(errKindTooManyConns)
		s.metrics.rateLimited.Inc()
		s.log.Info("connection refused: too many from one address", "ip", ip, "limit", s.cfg.MaxConnsPerIP)
		c.closeWith(
			outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: fmt.Sprintf("%s (limit %d)", ErrTextTooManyConns, s.cfg.MaxConnsPerIP)})},
			outMsg{kind: msgClose, data: websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "too many connections")},
		)
	}
	// The reader runs in its own goroutine so that the handshake's
	// goroutine (net/http's, or the fast path's) ends and drops its
	// buffers: an idle connection then costs one small stack and a
	// 256-byte read buffer.
	ws.SetPongHandler(func(string) error {
		c.touch()
		return nil
	})
	if c.lane != nil {
		c.lane.setHandlers(c.inline, func() { s.dispatch(c) })
		if !c.lane.park() {
			s.dispatch(c)
		}
		return
	}
	go func() {
		defer s.wg.Done()
		c.startReading()
	}()
}

// remote returns the client's IP (the per-address limit key and the host
// of public_addr) and source port.
func (s *Server) remote(r *http.Request) (ip, port string) {
	var xff string
	if vs := r.Header.Values("X-Forwarded-For"); len(vs) > 0 {
		xff = vs[len(vs)-1]
	}
	return s.clientAddr(r.RemoteAddr, xff)
}

// clientAddr is remote for a connection from addr, a net.Addr's String,
// whose request's last X-Forwarded-For value is xff ("" for none).
func (s *Server) clientAddr(addr, xff string) (ip, port string) {
	if s.cfg.TrustForwardedFor && xff != "" {
		last := xff[strings.LastIndexByte(xff, ',')+1:]
		if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
			return a.Unmap().String(), "0"
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, "0"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().WithZone("").String()
	}
	return host, port
}

func (s *Server) releaseIP(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.ips[ip]; st != nil {
		st.conns--
		if st.conns <= 0 {
			delete(s.ips, ip)
		}
	}
}

// sweepLoop expires silent peers and pings quiet connections.
func (s *Server) sweepLoop() {
	t := time.NewTicker(s.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.sweep(now)
		}
	}
}

// sweep expires silent peers, pings quiet connections and ends those
// silent for ReadTimeout (no message, no pong) that neither linger nor
// relay: those two have deadlines of their own.
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		l.expireFresh(now)
	}
	silent := s.sweepLocked(now)
	// Closed without s.mu: Close waits for the connection's waiting
	// goroutine, which may wait for a reader that waits for s.mu.
	for _, c := range silent {
		s.metrics.err(errKindReadTimeout)
		s.log.Debug("read timeout", "ip", c.ip)
		c.abort()
	}
}

func (s *Server) sweepLocked(now time.Time) (silent []*conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.namespaces))
	for name := range s.namespaces {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ns := s.namespaces[name]
		var dead []*peer
		for _, p := range ns.peers {
			if p.remote == nil && now.Sub(p.lastSeen) > s.cfg.Expiry {
				dead = append(dead, p)
			}
		}
		for _, p := range dead {
			s.log.Info("peer expired", "peer", p.info.PeerID, "nickname", p.info.Nickname, "namespace", name)
			s.metrics.expired.Inc()
			s.removePeerLocked(p)
		}
	}
	ping := outMsg{kind: msgPing}
	for c := range s.conns {
		if c.relay != nil || c.lingerUntil.Load() != 0 {
			continue
		}
		switch quiet := now.Sub(c.lastRead()); {
		case quiet >= s.cfg.ReadTimeout:
			silent = append(silent, c)
		case quiet >= s.cfg.PingInterval:
			c.send(ping)
		}
	}
	return silent
}

// handle processes one decoded message from c. Called from c's reader.
func (s *Server) handle(c *conn, m protocol.ClientMessage) {
	now := time.Now()
	var (
		key, kind, why string
		keyOK          bool
	)
	if r, isReg := m.(*protocol.Register); isReg {
		key, keyOK, kind, why = checkRegister(r, now) // before s.mu: it verifies a signature
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !c.used
	c.used = true
	switch m := m.(type) {
	case *protocol.RelayConnect:
		s.metrics.msg("relay_connect")
		s.relayConnectLocked(c, m, first)
	case *protocol.RelayAccept:
		s.metrics.msg("relay_accept")
		s.relayAcceptLocked(c, m, first)
	case *protocol.Register:
		s.metrics.registers.Inc()
		if !keyOK {
			if s.debug() {
				s.log.Debug("register refused", "ip", c.ip, "nickname", m.Nickname, "reason", why)
			}
			s.sendErrorLocked(c, kind, protocol.ErrTextInvalidPrefix+why)
			return
		}
		s.registerLocked(c, m, key, now)
	case *protocol.ListPeers:
		s.metrics.msg("list_peers")
		ns := s.namespaces[""]
		if c.peer != nil {
			ns = c.peer.ns
		}
		if ns == nil {
			c.send(outMsg{kind: msgText, data: emptyList})
			return
		}
		c.send(outMsg{kind: msgText, data: s.listLocked(ns, now)})
	case *protocol.Heartbeat:
		s.heartbeatLocked(c, now)
	case *protocol.Unregister:
		s.metrics.msg("unregister")
		switch {
		case c.peer != nil:
			s.log.Info("peer unregistered", "peer", c.peer.info.PeerID, "nickname", c.peer.info.Nickname)
			s.removePeerLocked(c.peer)
			c.expired = false
		case c.expired:
			// The original answers an unregister after expiry like a
			// heartbeat after expiry.
			s.sendErrorLocked(c, errKindPeerNotRegistered, protocol.ErrTextPeerNotRegistered)
			c.expired = false
		default:
			s.sendErrorLocked(c, errKindNotRegistered, protocol.ErrTextNotRegistered)
		}
	}
}

// heartbeat handles a heartbeat from c. It is shallow (no JSON, no
// logging on the way), as it runs on the stack of c's waiting goroutine
// (fastHeartbeat), which is to stay small.
func (s *Server) heartbeat(c *conn, now time.Time) {
	s.mu.Lock()
	c.used = true
	s.heartbeatLocked(c, now)
	s.mu.Unlock()
}

func (s *Server) heartbeatLocked(c *conn, now time.Time) {
	s.metrics.heartbeats.Inc()
	switch {
	case c.peer == nil && !c.expired:
		s.metrics.err(errKindNotRegistered)
		c.send(outMsg{kind: msgText, data: s.frames.notRegistered})
	case c.peer == nil:
		s.metrics.err(errKindPeerNotRegistered)
		c.send(outMsg{kind: msgText, data: s.frames.peerNotRegistered})
	default:
		p := c.peer
		p.lastSeen = now
		if sec := now.Unix(); sec != p.info.LastSeen {
			p.setLastSeen(sec)
			p.ns.cacheStale = true
		}
	}
}

var emptyList = encodeServer(&protocol.PeerList{})

func (s *Server) listLocked(ns *namespace, now time.Time) []byte {
	valid := ns.cacheValid && (!(ns.cacheStale || ns.remotes > 0) || now.Sub(ns.cacheAt) < s.cfg.ListCacheMaxAge)
	if !valid {
		s.metrics.listRebuilds.Inc()
	}
	return ns.list(now, s.cfg.ListCacheMaxAge)
}

func (s *Server) sendErrorLocked(c *conn, kind, text string) {
	s.metrics.err(kind)
	c.send(outMsg{kind: msgText, data: encodeServer(&protocol.Error{Message: text})})
}

// registerLocked registers c as m describes. key is m's key once
// checkRegister has verified it, "" for an unsigned register: only a
// checked key is ever listed, and room tags only with it (a tag means
// something only against the key that signed it).
func (s *Server) registerLocked(c *conn, m *protocol.Register, key string, now time.Time) {
	if p := c.peer; p != nil {
		if inPlace(p, m, key) {
			s.updateLocked(c, p, m, now)
			return
		}
		// A second register replaces the first: no orphan entry.
		s.removePeerLocked(p)
	}
	c.expired = false
	if s.npeers >= s.cfg.MaxPeers {
		s.log.Warn("register refused: server full", "max_peers", s.cfg.MaxPeers)
		s.sendErrorLocked(c, errKindServerFull, fmt.Sprintf("%s (%d peers)", ErrTextServerFull, s.cfg.MaxPeers))
		return
	}
	id, err := newPeerID(s.cfg.Rand)
	if err != nil {
		s.log.Error("register failed", "err", err)
		s.sendErrorLocked(c, errKindInternal, "Internal error")
		return
	}
	push := protocol.HasCap(m.Caps, protocol.CapPush)
	p := &peer{
		info:     peerInfo(c, m, id, key, now),
		lastSeen: now,
		conn:     c,
		push:     push,
	}
	publicAddr := p.info.PublicAddr
	p.entry, p.lastSeenAt = appendEntry(&p.info)
	if err := s.relayRegisterLocked(p, m.Caps); err != nil {
		s.log.Error("register failed", "err", err)
		s.sendErrorLocked(c, errKindInternal, "Internal error")
		return
	}
	if q := s.peersByID[id]; q != nil && q.remote != nil {
		// A remote peer has this id: 122 random bits make that all but
		// impossible, but an id must name one peer. The remote one goes.
		s.conflictLocked(q)
	}
	ns := s.namespaceLocked(m.Namespace)
	ns.add(p)
	c.peer = p
	s.peersByID[id] = p
	s.npeers++
	ns.gauge.Set(float64(len(ns.peers) - ns.remotes))
	if s.cluster != nil {
		s.cluster.Join(ns.name, slices.Clone(p.entry))
	}

	c.send(outMsg{kind: msgText, data: encodeServer(registered(c, p))})
	if len(ns.subs) > 0 {
		joined := outMsg{kind: msgText, data: encodeServer(&protocol.PeerJoined{Peer: p.info})}
		s.broadcastLocked(ns, joined, c)
	}
	if push {
		// Snapshot first, then every change after it, all queued under
		// s.mu so that nothing falls between them.
		c.send(outMsg{kind: msgText, data: s.listLocked(ns, now)})
		ns.subs[c] = struct{}{}
	}
	if s.debug() {
		s.log.Debug("peer registered", "peer", id, "nickname", m.Nickname, "public_addr", publicAddr, "namespace", ns.name, "push", push, "signed", key != "")
	}
}

// peerInfo is the entry a register from c describes, under peer_id id.
// key is the checked key or "": rooms are listed only with one.
func peerInfo(c *conn, m *protocol.Register, id, key string, now time.Time) protocol.PeerInfo {
	publicAddr := net.JoinHostPort(c.ip, c.port)
	if _, portStr, err := net.SplitHostPort(m.LocalAddr); err == nil {
		if _, err := strconv.ParseUint(portStr, 10, 16); err == nil {
			publicAddr = net.JoinHostPort(c.ip, portStr)
		}
	}
	info := protocol.PeerInfo{
		PeerID:     id,
		Nickname:   m.Nickname,
		PublicAddr: publicAddr,
		LocalAddr:  m.LocalAddr,
		LastSeen:   now.Unix(),
		Instance:   m.Instance,
		Caps:       m.Caps,
		Key:        key,
		Addrs:      m.Addrs,
	}
	if key != "" {
		info.Rooms = m.Rooms
	}
	return info
}

// registered is the answer to a register that made or updated p.
func registered(c *conn, p *peer) *protocol.Registered {
	reg := &protocol.Registered{PeerID: p.info.PeerID, PublicAddr: p.info.PublicAddr}
	// Where the connection came from, so a client can tell whether its
	// NAT keeps ports; unknown behind a proxy (no port).
	if ap, err := netip.ParseAddrPort(net.JoinHostPort(c.ip, c.port)); err == nil && ap.Port() != 0 {
		reg.Observed = ap.String()
	}
	if p.push {
		reg.Caps = []string{protocol.CapPush}
	}
	if p.relay != nil {
		reg.Caps = append(reg.Caps, protocol.CapRelay)
		reg.RelayToken = p.relay.token
	}
	return reg
}

// inPlace reports whether register m, on the connection p is registered
// on, updates p rather than replacing it: it is signed by p's own
// checked key, for p's namespace, and asks for the push and the relay
// as p did (those decide the subscription and the relay token, which an
// update keeps). A client sends one when something it registered changed,
// its room tags most often.
func inPlace(p *peer, m *protocol.Register, key string) bool {
	return key != "" && key == p.info.Key && m.Namespace == p.ns.name &&
		protocol.HasCap(m.Caps, protocol.CapPush) == p.push &&
		protocol.HasCap(m.Caps, protocol.CapRelay) == protocol.HasCap(p.info.Caps, protocol.CapRelay)
}

// updateLocked applies register m to c's registration p in place: the
// same peer_id, relay token and subscription, the new fields, answered
// with registered as a first register is, and pushed to the namespace's
// other subscribers as a peer_joined with the new entry (no peer_left:
// the peer never left). A pushed client gets no new snapshot; its
// pushes simply go on.
func (s *Server) updateLocked(c *conn, p *peer, m *protocol.Register, now time.Time) {
	p.info = peerInfo(c, m, p.info.PeerID, p.info.Key, now)
	p.lastSeen = now
	p.entry, p.lastSeenAt = appendEntry(&p.info)
	ns := p.ns
	ns.cacheValid = false
	if s.cluster != nil {
		s.cluster.Join(ns.name, slices.Clone(p.entry))
	}
	c.send(outMsg{kind: msgText, data: encodeServer(registered(c, p))})
	if len(ns.subs) > 0 {
		joined := outMsg{kind: msgText, data: encodeServer(&protocol.PeerJoined{Peer: p.info})}
		s.broadcastLocked(ns, joined, c)
	}
	if s.debug() {
		s.log.Debug("peer updated", "peer", p.info.PeerID, "nickname", m.Nickname, "public_addr", p.info.PublicAddr, "namespace", ns.name, "rooms", len(p.info.Rooms))
	}
}

// namespaceLocked returns namespace name, made if need be.
func (s *Server) namespaceLocked(name string) *namespace {
	ns := s.namespaces[name]
	if ns == nil {
		ns = &namespace{name: name, subs: make(map[*conn]struct{}), gauge: s.metrics.peers.WithLabelValues(name)}
		s.namespaces[name] = ns
	}
	return ns
}

// removePeerLocked removes p, local or remote, from the registry and
// tells subscribers.
func (s *Server) removePeerLocked(p *peer) {
	ns := p.ns
	ns.remove(p)
	if s.peersByID[p.info.PeerID] == p {
		delete(s.peersByID, p.info.PeerID)
	}
	if r := p.remote; r != nil {
		ns.remotes--
		delete(r.peers, p.info.PeerID)
		s.cm.remotePeers.Dec()
	} else {
		delete(ns.subs, p.conn)
		s.relayUnregisterLocked(p)
		s.npeers--
		if p.conn.peer == p {
			p.conn.peer = nil
			p.conn.expired = true
		}
		if s.cluster != nil {
			s.cluster.Leave(ns.name, p.info.PeerID)
		}
	}
	if len(ns.subs) > 0 {
		left := outMsg{kind: msgText, data: encodeServer(&protocol.PeerLeft{PeerID: p.info.PeerID})}
		s.broadcastLocked(ns, left, nil)
	}
	if len(ns.peers) == 0 {
		delete(s.namespaces, ns.name)
		if ns.name != "" {
			s.metrics.peers.DeleteLabelValues(ns.name)
		} else {
			s.metrics.peers.WithLabelValues("").Set(0)
		}
		return
	}
	ns.gauge.Set(float64(len(ns.peers) - ns.remotes))
}

// debug reports whether debug logs are written: the arguments of one
// cost allocations even when it is not.
func (s *Server) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }

func (s *Server) broadcastLocked(ns *namespace, m outMsg, except *conn) {
	n := 0
	for sub := range ns.subs {
		if sub != except {
			sub.send(m)
			n++
		}
	}
	s.metrics.pushed.Add(float64(n))
}

// dropConn forgets c once its reader has ended.
func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	if c.peer != nil {
		if s.debug() {
			s.log.Debug("peer disconnected", "peer", c.peer.info.PeerID, "nickname", c.peer.info.Nickname)
		}
		s.removePeerLocked(c.peer)
	}
	delete(s.conns, c)
	s.mu.Unlock()
	s.releaseIP(c.ip)
	s.metrics.connections.Dec()
}

// allow applies the per-address message rate.
func (s *Server) allow(c *conn) bool {
	if c.ipst.lim == nil {
		return true
	}
	// rate.Limiter has its own lock; Server.mu is not needed.
	return c.ipst.lim.Allow()
}

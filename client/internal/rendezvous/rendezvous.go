// Package rendezvous is the client side of internet mode: it keeps a
// registration with a bootstrap server alive and reports the peers the
// server knows.
//
// Run connects to a server of Config.URLs (ws:// or wss://), registers
// with local_addr "0.0.0.0:<TCPPort>" like the original client, and then:
//
//   - against a server that pushes (ours: its registered answer lists the
//     "push" capability), receives a peer_list snapshot and then one
//     peer_joined / peer_left per change;
//   - against a server that does not (the original), sends list_peers at
//     once and every PollInterval (5 s); each answer is a Snapshot.
//
// It heartbeats every HeartbeatInterval (10 s), registers again when the
// server says it expired us, and reconnects with jittered exponential
// backoff (MinBackoff 1 s doubling up to MaxBackoff 30 s) after any
// failure, including a server restart. Everything it learns reaches the
// caller through OnUpdate, in order, from Run's goroutine; every update
// names the server it is about (Update.Server). Peers the server no
// longer lists disappear from the next Snapshot, which replaces the
// caller's whole set of bootstrap peers. Internet mode never touches
// multicast: the only socket is the one Config.Dial returns.
//
// # Several servers
//
// Run uses one server at a time. The first attempt goes to URLs[0], and
// every later one to the server after the one the attempt before it
// used, wrapping from the last to the first: a connection that cannot be
// made and one that is lost, however long it was registered, both move
// the client one server on. With one URL that is the same server every
// time. Between attempts Run waits as above, whichever server is next:
// the backoff doubles after each attempt that did not register and starts
// over at MinBackoff after one that did. So when the server a client is
// registered with dies, the client starts connecting to the next server
// within FailoverWithin (the backoff's first wait, 0.5-1 s by default) of
// noticing, and is registered there one connection and one register round
// trip later if that server is up. A reset or a close is noticed at once;
// a server that just goes silent, after three heartbeat intervals without
// an answer (30 s). If the next server is down too, the attempt to it may
// take the 10 s handshake timeout, and the backoff grows. Run never moves
// back to an earlier server while the current one holds. Nothing carries
// over from one server to the next: each registration is new (a new
// peer_id, relay token and first list), and the caller keeps its own state
// across the switch.
//
// With Config.Identity, every register is signed at the moment it is
// sent, so a reconnect or a re-register after expiry carries a fresh ts,
// and our server lists the key with our entry once it has checked the
// signature. Register is the only message that carries a signature;
// list_peers, heartbeat and unregister act on the connection's
// registration.
//
// With Config.Rooms, every register carries the room membership tags it
// returns at that moment (protocol.Register.Rooms; signed with the rest).
// A receive on Config.Reregister while registered sends a fresh register
// on the same connection at once, so that a join or leave reaches the
// others without waiting for a reconnect; one that comes while a
// register is still unanswered is sent once the answer arrives. Our
// server updates the registration in place and answers registered again
// with the same peer_id and relay token: that answer is no new session,
// and Run reports no second Registered for it. A server that replaces the
// registration instead (a new peer_id) is reported as registering anew,
// followed by its new list.
//
// With Config.Relay, the register lists protocol.CapRelay: a server that
// relays answers with a relay token (Update.RelayToken), tells us of
// streams other peers open to us (Config.OnRelayIncoming), and relays
// streams we open. DialRelay and AcceptRelay (relay.go) open them, each
// on a WebSocket of its own to the server we are registered with, and
// return a net.Conn. A token is good only at the server that gave it, so
// both take that server's URL with it.
package rendezvous

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

// Config configures Run.
type Config struct {
	// URLs are the bootstrap servers, ws:// or wss://, at least one. Run
	// uses one at a time, in this order (see the package doc).
	URLs      []string
	Nickname  string   // checked with protocol.ValidateNickname
	TCPPort   uint16   // registered as local_addr "0.0.0.0:<port>"
	Instance  string   // our instance id (extension field)
	Caps      []string // our capabilities to advertise (e.g. "ack"); rendezvous adds protocol.CapPush itself
	Namespace string   // optional; "" is the default namespace original clients share
	// Addrs are this client's own addresses (ip:port of its message
	// listener per local interface), registered so that peers behind the
	// same NAT can reach it without the NAT. At most protocol.MaxAddrs.
	Addrs []string
	// Identity signs every register (protocol.Register.Sign) when it is
	// sent. Nil registers unsigned, as the original client does.
	Identity ed25519.PrivateKey
	// Rooms, when set, returns our room membership tags (at most
	// protocol.MaxRoomTags, each protocol.RoomTagLen lowercase hex
	// characters, none twice). Run calls it from its goroutine each time
	// it builds a register, so it must be safe for use concurrently with
	// whoever changes the tags, and must not block. Nil: no rooms. Our
	// server lists the tags only with a signed register (Identity).
	Rooms func() []string
	// Reregister, when set, asks for a fresh register on the current
	// connection: each receive while registered sends one (with Rooms
	// called again). Optional; the caller sends without blocking, e.g. on
	// a channel with a buffer of 1. A signal that arrives while no
	// connection is up is dropped: the next connection registers afresh
	// anyway.
	Reregister <-chan struct{}
	// Dial opens the TCP connection to the server: a netsim host's
	// DialContext or a net.Dialer's. Required.
	Dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	TLSConfig *tls.Config  // optional, for wss
	Rand      *rand.Rand   // backoff jitter; required
	Logger    *slog.Logger // nil = discard
	// OnUpdate receives every update, in order, from Run's goroutine. It
	// must not block.
	OnUpdate func(Update)
	// Relay lists protocol.CapRelay in register: we accept relayed
	// streams. OnRelayIncoming is then called, from Run's goroutine,
	// for each stream a peer opens to us; it must not block: hand it to
	// a goroutine that calls AcceptRelay.
	Relay           bool
	OnRelayIncoming func(Incoming)

	PollInterval      time.Duration // default 5 s (only against servers that do not push)
	HeartbeatInterval time.Duration // default 10 s
	MinBackoff        time.Duration // default 1 s
	MaxBackoff        time.Duration // default 30 s
}

// UpdateKind says what an Update reports.
type UpdateKind int

// Kinds of Update.
const (
	Registered   UpdateKind = iota + 1 // we are registered: SelfID, PublicAddr, Pushed, RelayToken
	Snapshot                           // Peers is the server's whole list without us
	Joined                             // Peers[0] registered
	Left                               // PeerID left or expired
	Disconnected                       // the connection failed (Err); reconnecting in RetryIn
)

func (k UpdateKind) String() string {
	switch k {
	case Registered:
		return "registered"
	case Snapshot:
		return "snapshot"
	case Joined:
		return "joined"
	case Left:
		return "left"
	case Disconnected:
		return "disconnected"
	}
	return "UpdateKind(" + strconv.Itoa(int(k)) + ")"
}

// Update is one event of a registration.
type Update struct {
	Kind UpdateKind
	// Server is the URL of the server the update is about: the one we
	// are registered with, or for Disconnected the one we lost or could
	// not reach.
	Server     string
	SelfID     string // Registered: our peer_id
	PublicAddr string // Registered
	Pushed     bool   // Registered: the server will push changes
	// RelayToken (Registered) authenticates DialRelay and AcceptRelay
	// for as long as this registration lasts; "" when we did not ask
	// for the relay or the server does not relay.
	RelayToken string
	// Observed (Registered) is the ip:port the server saw the connection
	// come from, and Local the connection's own local address: a NAT
	// that kept the port keeps Observed's port equal to Local's. Empty
	// when the server does not say (original servers).
	Observed, Local string
	Peers           []protocol.PeerInfo // Snapshot: the full list without ourselves (replace all bootstrap peers with it); Joined: one peer
	PeerID          string              // Left
	Err             error               // Disconnected: why; RetryIn tells when
	RetryIn         time.Duration
	Next            string // Disconnected: the server the next attempt goes to (Server when it is the only one)
}

// Incoming is a relayed stream a peer opened to us. It waits at Server,
// the server we are registered with, which told us of it; accept it there
// with our relay token from that registration, which it carries because
// the update that brought the token may not have been handled yet.
type Incoming struct {
	Server, Token string
	Stream        string
	From          string // the peer_id of the peer that opened it
}

// Defaults for Config.
const (
	DefaultPollInterval      = 5 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultMinBackoff        = time.Second
	DefaultMaxBackoff        = 30 * time.Second
)

// Bounds on the connection itself.
const (
	handshakeTimeout = 10 * time.Second
	writeTimeout     = 10 * time.Second
	closeTimeout     = time.Second // for unregister + close frame at the end
)

// ReconnectWithin bounds, with the default backoff and one server, how
// long after a lost server is reachable again Run connects to it again:
// an attempt already under way may hang for the handshake timeout, and
// the wait before the next one is at most DefaultMaxBackoff. Registering
// takes one more round trip. With n servers all failing, the one that
// comes back is tried within n times this.
const ReconnectWithin = handshakeTimeout + DefaultMaxBackoff

// FailoverWithin bounds, with the default backoff, how long after the
// connection to the server it was registered with is lost Run starts
// connecting to the next server: the registration started the backoff
// over, so the first wait is at most DefaultMinBackoff. Registering there
// takes the connection's and the register's round trips more.
const FailoverWithin = DefaultMinBackoff

// errServerRefused reports an error message from the server that ends the
// session (anything but the expiry errors, which re-register).
var errServerRefused = errors.New("rendezvous: server refused")

// Run connects, registers, keeps the registration alive and reconnects
// with jittered exponential backoff, each time to the next server of
// URLs, until ctx is done; then it sends unregister and a close frame
// (bounded by a short timeout) and returns nil. It returns an error only
// for an invalid Config.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	backoff := cfg.MinBackoff
	for i := 0; ; i = (i + 1) % len(cfg.URLs) {
		server := cfg.URLs[i]
		registered, err := session(ctx, &cfg, server)
		if ctx.Err() != nil {
			return nil
		}
		if registered {
			backoff = cfg.MinBackoff
		}
		// Equal jitter: wait between half and all of the backoff, so
		// clients cut off together do not return together.
		wait := backoff/2 + time.Duration(cfg.Rand.Int64N(int64(backoff/2)+1))
		next := cfg.URLs[(i+1)%len(cfg.URLs)]
		cfg.Logger.Info("bootstrap server connection lost", "url", server, "err", err, "retry_in", wait, "next", next)
		cfg.OnUpdate(Update{Kind: Disconnected, Server: server, Err: err, RetryIn: wait, Next: next})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}

func (cfg *Config) check() error {
	switch {
	case cfg.Dial == nil:
		return errors.New("rendezvous: Config.Dial is required")
	case cfg.Rand == nil:
		return errors.New("rendezvous: Config.Rand is required")
	case cfg.Identity != nil && len(cfg.Identity) != ed25519.PrivateKeySize:
		return fmt.Errorf("rendezvous: Config.Identity has %d bytes, want an Ed25519 private key of %d", len(cfg.Identity), ed25519.PrivateKeySize)
	}
	if len(cfg.URLs) == 0 {
		return errors.New("rendezvous: Config.URLs lists no bootstrap server")
	}
	for _, u := range cfg.URLs {
		if err := checkURL(u); err != nil {
			return err
		}
	}
	// Run reads the list for as long as it runs; the caller's slice is
	// its own.
	cfg.URLs = slices.Clone(cfg.URLs)
	if err := protocol.ValidateNickname(cfg.Nickname); err != nil {
		return fmt.Errorf("rendezvous: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnUpdate == nil {
		cfg.OnUpdate = func(Update) {}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PollInterval, DefaultPollInterval)
	def(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	caps := slices.Clone(cfg.Caps)
	if !protocol.HasCap(caps, protocol.CapPush) {
		caps = append(caps, protocol.CapPush)
	}
	if cfg.Relay && !protocol.HasCap(caps, protocol.CapRelay) {
		caps = append(caps, protocol.CapRelay)
	}
	cfg.Caps = caps
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("rendezvous: bootstrap server URL %q: %w", s, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" || u.Host == "" {
		return fmt.Errorf("rendezvous: bootstrap server URL %q must start with ws:// or wss:// and name a host", s)
	}
	return nil
}

// inbound is what the reader goroutine hands to the session loop.
type inbound struct {
	msg protocol.ServerMessage
	err error
}

// session runs one connection, to server. registered reports whether the
// server accepted our register (so the backoff starts over).
func session(ctx context.Context, cfg *Config, server string) (registered bool, err error) {
	d := websocket.Dialer{
		NetDialContext:   cfg.Dial,
		TLSClientConfig:  cfg.TLSConfig,
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  1024,
	}
	ws, resp, err := d.DialContext(ctx, server, nil)
	if err != nil {
		if resp != nil {
			return false, fmt.Errorf("connect to %s: %w (HTTP %s)", server, err, resp.Status)
		}
		return false, fmt.Errorf("connect to %s: %w", server, err)
	}
	ws.SetReadLimit(protocol.MaxServerFrameSize)
	// A server that answers neither messages nor pings for this long is
	// gone; we ping it with every heartbeat.
	readTimeout := 3 * cfg.HeartbeatInterval
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(readTimeout)) })

	in := make(chan inbound)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() { // owned by session: ends when ws is closed below, which session waits for.
		defer close(readerDone)
		for {
			ws.SetReadDeadline(time.Now().Add(readTimeout))
			_, b, err := ws.ReadMessage()
			var m protocol.ServerMessage
			if err == nil {
				m, err = protocol.DecodeServerMessage(b)
				if err != nil {
					cfg.Logger.Warn("ignoring a bad message from the bootstrap server", "err", err)
					continue
				}
			}
			select {
			case in <- inbound{m, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		ws.Close()
		<-readerDone
	}()

	s := &sess{cfg: cfg, url: server, ws: ws}
	// The register below reads the current rooms: a signal left from
	// before this connection asks for nothing more.
	select {
	case <-cfg.Reregister:
	default:
	}
	if err := s.register(); err != nil {
		return false, err
	}
	timer := time.NewTimer(cfg.HeartbeatInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.goodbye()
			return s.registered, ctx.Err()
		case ev := <-in:
			if ev.err != nil {
				return s.registered, fmt.Errorf("read from %s: %w", server, ev.err)
			}
			if err := s.handle(ev.msg); err != nil {
				return s.registered, err
			}
		case now := <-timer.C:
			if err := s.tick(now); err != nil {
				return s.registered, err
			}
		case <-cfg.Reregister: // nil: never
			if err := s.reregister(); err != nil {
				return s.registered, err
			}
		}
		// One timer for both duties, so that a heartbeat and a poll due
		// at the same instant happen in a fixed order.
		timer.Reset(s.nextDue(time.Now()))
	}
}

// sess is one connection's state, owned by session's goroutine.
type sess struct {
	cfg        *Config
	url        string // the server
	ws         *websocket.Conn
	registered bool
	pushed     bool
	selfID     string
	relayToken string
	publicAddr string
	nextBeat   time.Time
	nextPoll   time.Time // zero: not polling
	// pending: a re-register was asked for while a register was
	// unanswered; it is sent when the answer comes.
	pending bool
}

func (s *sess) write(m protocol.ClientMessage) error {
	b, err := protocol.EncodeClientMessage(m)
	if err != nil {
		return err
	}
	s.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := s.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write to %s: %w", s.url, err)
	}
	return nil
}

// register sends a register, signed now when there is an identity: the
// server refuses a ts too far from its clock, so a register signed once
// and sent again on a later connection could be refused.
func (s *sess) register() error {
	m := &protocol.Register{
		Nickname:  s.cfg.Nickname,
		LocalAddr: "0.0.0.0:" + strconv.Itoa(int(s.cfg.TCPPort)),
		Instance:  s.cfg.Instance,
		Caps:      s.cfg.Caps,
		Namespace: s.cfg.Namespace,
		Addrs:     s.cfg.Addrs,
	}
	if s.cfg.Rooms != nil {
		m.Rooms = s.cfg.Rooms()
	}
	if s.cfg.Identity != nil {
		m.Sign(s.cfg.Identity, time.Now())
	}
	return s.write(m)
}

// reregister sends a fresh register when registered, or has one sent
// when the register under way is answered.
func (s *sess) reregister() error {
	if !s.registered {
		s.pending = true
		return nil
	}
	s.cfg.Logger.Debug("registering again with what changed", "url", s.url)
	return s.register()
}

// updatedInPlace reports whether m answers a register we sent while
// registered by keeping the registration as it was: the same peer_id,
// relay token, public address and push. Our server does that for a
// re-register signed by the same key; it is no new session.
func (s *sess) updatedInPlace(m *protocol.Registered) bool {
	return s.registered && m.PeerID == s.selfID && m.RelayToken == s.relayToken &&
		m.PublicAddr == s.publicAddr && protocol.HasCap(m.Caps, protocol.CapPush) == s.pushed
}

func (s *sess) handle(m protocol.ServerMessage) error {
	switch m := m.(type) {
	case *protocol.Registered:
		if s.updatedInPlace(m) {
			s.cfg.Logger.Debug("registration updated in place", "url", s.url, "peer_id", m.PeerID)
			return s.sendPending()
		}
		now := time.Now()
		s.registered, s.selfID, s.relayToken, s.publicAddr = true, m.PeerID, m.RelayToken, m.PublicAddr
		s.pushed = protocol.HasCap(m.Caps, protocol.CapPush)
		s.nextBeat = now.Add(s.cfg.HeartbeatInterval)
		s.cfg.Logger.Info("registered with bootstrap server", "url", s.url, "peer_id", m.PeerID, "public_addr", m.PublicAddr, "pushed", s.pushed)
		s.cfg.OnUpdate(Update{Kind: Registered, Server: s.url, SelfID: m.PeerID, PublicAddr: m.PublicAddr, Pushed: s.pushed, RelayToken: m.RelayToken,
			Observed: m.Observed, Local: s.ws.LocalAddr().String()})
		if !s.pushed {
			// The original server: list at once, then poll.
			s.nextPoll = now.Add(s.cfg.PollInterval)
			if err := s.write(&protocol.ListPeers{}); err != nil {
				return err
			}
			return s.sendPending()
		}
		s.nextPoll = time.Time{}
		return s.sendPending()
	case *protocol.PeerList:
		peers := make([]protocol.PeerInfo, 0, len(m.Peers))
		for _, p := range m.Peers {
			if p.PeerID != s.selfID {
				peers = append(peers, p)
			}
		}
		s.cfg.OnUpdate(Update{Kind: Snapshot, Server: s.url, Peers: peers})
	case *protocol.PeerJoined:
		if m.Peer.PeerID != s.selfID {
			s.cfg.OnUpdate(Update{Kind: Joined, Server: s.url, Peers: []protocol.PeerInfo{m.Peer}})
		}
	case *protocol.PeerLeft:
		if m.PeerID != s.selfID {
			s.cfg.OnUpdate(Update{Kind: Left, Server: s.url, PeerID: m.PeerID})
		}
	case *protocol.RelayIncoming:
		if s.cfg.Relay && s.cfg.OnRelayIncoming != nil {
			s.cfg.OnRelayIncoming(Incoming{Server: s.url, Token: s.relayToken, Stream: m.Stream, From: m.PeerID})
		}
	case *protocol.Error:
		switch m.Message {
		case protocol.ErrTextNotRegistered, protocol.ErrTextPeerNotRegistered:
			// The server forgot us (expiry after a pause, for
			// example): register again on this connection.
			s.cfg.Logger.Info("bootstrap server lost our registration; registering again", "reason", m.Message)
			s.registered = false
			return s.register()
		}
		return fmt.Errorf("%w: %q", errServerRefused, m.Message)
	}
	return nil
}

// sendPending sends the re-register asked for while the last register
// was unanswered.
func (s *sess) sendPending() error {
	if !s.pending {
		return nil
	}
	s.pending = false
	return s.register()
}

func (s *sess) tick(now time.Time) error {
	if s.registered && !now.Before(s.nextBeat) {
		s.nextBeat = now.Add(s.cfg.HeartbeatInterval)
		if err := s.write(&protocol.Heartbeat{}); err != nil {
			return err
		}
		// A ping, answered by any WebSocket server, proves the server
		// alive even when it has nothing to push.
		if err := s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
			return fmt.Errorf("ping %s: %w", s.url, err)
		}
	}
	if !s.nextPoll.IsZero() && !now.Before(s.nextPoll) {
		s.nextPoll = now.Add(s.cfg.PollInterval)
		return s.write(&protocol.ListPeers{})
	}
	return nil
}

func (s *sess) nextDue(now time.Time) time.Duration {
	next := now.Add(s.cfg.HeartbeatInterval)
	if s.registered {
		next = s.nextBeat
	}
	if !s.nextPoll.IsZero() && s.nextPoll.Before(next) {
		next = s.nextPoll
	}
	return max(next.Sub(now), 0)
}

// goodbye unregisters and closes cleanly, bounded by closeTimeout.
func (s *sess) goodbye() {
	deadline := time.Now().Add(closeTimeout)
	if s.registered {
		if b, err := protocol.EncodeClientMessage(&protocol.Unregister{}); err == nil {
			s.ws.SetWriteDeadline(deadline)
			s.ws.WriteMessage(websocket.TextMessage, b)
		}
	}
	s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), deadline)
}

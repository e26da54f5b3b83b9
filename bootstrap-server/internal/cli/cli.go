// Package cli is the bootstrap-server command line: flags with
// environment-variable fallbacks, logging, TLS, and running the server
// until its context ends.
package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"

	"github.com/parlance-chat/parlance/bootstrap-server/rendezvous"
)

// EnvPrefix starts the environment variable that backs each flag:
// --max-peers falls back to PARLANCE_BOOTSTRAP_MAX_PEERS.
const EnvPrefix = "PARLANCE_BOOTSTRAP_"

// Run parses args (without the program name), starts the server and serves
// until ctx is done; then it closes every connection with a close frame and
// returns nil. getenv supplies the environment (os.Getenv in main).
// Ready, if not nil, is called with the listening address.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(net.Addr)) error {
	fs := flag.NewFlagSet("bootstrap-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		host      = fs.String("host", "0.0.0.0", "address to listen on")
		port      = fs.Uint("port", 8080, "TCP port to listen on")
		cert      = fs.String("cert", "", "TLS certificate file (PEM); with --key, serve wss://")
		key       = fs.String("key", "", "TLS private key file (PEM)")
		logFormat = fs.String("log-format", "text", "log format: text or json (logs go to stderr)")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		maxPeers  = fs.Int("max-peers", rendezvous.DefaultMaxPeers, "maximum registered peers")
		maxConns  = fs.Int("max-conns-per-ip", rendezvous.DefaultMaxConnsPerIP, "maximum simultaneous connections from one IP address (-1: no limit)")
		msgRate   = fs.Float64("msg-rate", rendezvous.DefaultMsgRatePerIP, "messages per second allowed from one IP address (-1: no limit)")
		msgBurst  = fs.Int("msg-burst", rendezvous.DefaultMsgBurstPerIP, "message burst allowed from one IP address")
		maxFrame  = fs.Int("max-frame", rendezvous.DefaultMaxFrame, "maximum size in bytes of a frame from a client")
		trustXFF  = fs.Bool("trust-forwarded-for", false, "take client addresses from X-Forwarded-For (only behind a proxy that sets it)")
		evLoop    = fs.Bool("event-loop", true, "Linux, without TLS: idle connections wait in the server's own epoll loops, not on a goroutine each (--event-loop=false: a goroutine each)")
		evLoops   = fs.Int("event-loops", 0, "how many event loops share the connections (0: one per four CPUs, at least one)")
		relay     = fs.Bool("relay", true, "relay byte streams between registered peers that both ask for it (--relay=false: off)")
		relayN    = fs.Int("relay-streams-per-peer", rendezvous.DefaultRelayStreamsPerPeer, "relayed streams one peer may take part in at a time (-1: no limit)")
		relayRate = fs.Int("relay-peer-rate", rendezvous.DefaultRelayPeerRate, "bytes per second one peer may send and receive through the relay (-1: no limit)")
		relayAll  = fs.Int("relay-total-rate", rendezvous.DefaultRelayTotalRate, "bytes per second the relay forwards in total (-1: no limit)")
		relayIdle = fs.Duration("relay-idle-timeout", rendezvous.DefaultRelayIdleTimeout, "close a relayed stream that forwarded nothing for this long")
		relayAcc  = fs.Duration("relay-accept-timeout", rendezvous.DefaultRelayAcceptTimeout, "time a peer has to accept a relayed stream")
		relayMax  = fs.Int("relay-max-frame", rendezvous.DefaultRelayMaxFrame, "maximum size in bytes of a binary frame on a relayed stream")
		relayWin  = fs.Int("relay-window", rendezvous.DefaultRelayWindow, "cluster mode: bytes this server holds per direction of a stream with a peer on another server (at least twice --relay-max-frame)")
		debugAddr = fs.String("debug-addr", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; keep it private (default: off)")
		natsURLs  = fs.String("nats", "", "cluster mode: NATS server URLs, comma-separated (nats://host:4222,...); default: none, a server on its own")
		natsName  = fs.String("nats-name", "", "cluster mode: name of this server's NATS connection, for operators (default: parlance-bootstrap-<server id>)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bootstrap-server [flags]\n\nA Parlance bootstrap (rendezvous) server. Every flag falls back to the\nenvironment variable %s<FLAG NAME>, e.g. %sPORT=8080.\n\n", EnvPrefix, EnvPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bootstrap-server: unexpected argument %q", fs.Arg(0))
	}
	// Environment fallbacks for every flag not given on the command line.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("bootstrap-server: environment %s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if *port > 65535 {
		return fmt.Errorf("bootstrap-server: --port must be at most 65535, got %d", *port)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("bootstrap-server: --log-level must be debug, info, warn or error, got %q", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		return fmt.Errorf("bootstrap-server: --log-format must be text or json, got %q", *logFormat)
	}

	var tlsConfig *tls.Config
	switch {
	case *cert != "" && *key != "":
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return fmt.Errorf("bootstrap-server: load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	case *cert != "" || *key != "":
		return errors.New("bootstrap-server: --cert and --key must be given together")
	}

	var clusterCfg *rendezvous.ClusterConfig
	if *natsURLs != "" {
		var urls []string
		for u := range strings.SplitSeq(*natsURLs, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
		if len(urls) == 0 {
			return fmt.Errorf("bootstrap-server: --nats has no URL in %q", *natsURLs)
		}
		clusterCfg = &rendezvous.ClusterConfig{NATS: urls, Name: *natsName}
	} else if *natsName != "" {
		return errors.New("bootstrap-server: --nats-name needs --nats")
	}

	srv, err := rendezvous.NewServer(rendezvous.Config{
		Logger:            log,
		MaxPeers:          *maxPeers,
		MaxConnsPerIP:     *maxConns,
		MsgRatePerIP:      *msgRate,
		MsgBurstPerIP:     *msgBurst,
		MaxFrame:          *maxFrame,
		TrustForwardedFor: *trustXFF,
		GoroutinePerConn:  !*evLoop,
		EventLoops:        *evLoops,

		NoRelay:             !*relay,
		RelayStreamsPerPeer: *relayN,
		RelayPeerRate:       *relayRate,
		RelayTotalRate:      *relayAll,
		RelayIdleTimeout:    *relayIdle,
		RelayAcceptTimeout:  *relayAcc,
		RelayMaxFrame:       *relayMax,
		RelayWindow:         *relayWin,

		Cluster: clusterCfg,
	})
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(*host, strconv.FormatUint(uint64(*port), 10))
	// No TCP keep-alive on accepted connections: turning it on costs
	// several setsockopt calls per accept, and the server finds dead
	// clients without it (its pings, the clients' heartbeats and
	// ReadTimeout). A negative KeepAlive, with KeepAliveConfig.Enable
	// false (its zero value), turns it off.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("bootstrap-server: %w", err)
	}
	scheme := "ws"
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
		scheme = "wss"
	}
	log.Info("listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String())
	if *debugAddr != "" {
		dln, err := lc.Listen(ctx, "tcp", *debugAddr)
		if err != nil {
			ln.Close()
			srv.Close()
			return fmt.Errorf("bootstrap-server: --debug-addr: %w", err)
		}
		defer dln.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		log.Info("serving profiles", "addr", dln.Addr().String())
		go http.Serve(dln, mux) // ends when dln is closed on return.
	}
	if ready != nil {
		ready(ln.Addr())
	}
	err = srv.Serve(ctx, ln)
	if errors.Is(err, rendezvous.ErrServerClosed) {
		log.Info("stopped")
		return nil
	}
	srv.Close()
	return err
}

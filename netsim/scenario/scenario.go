// Package scenario holds ready-made workloads for netsim: simulated peers
// with their own simple logic, used by the benchmark (tools/cmd/netsimbench)
// and the simulator (tools/cmd/simulate) until real client nodes run on
// netsim.
package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// Group is the LAN discovery group of the Parlance protocol.
var Group = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 6789}

// announce is the discovery datagram, as the protocol defines it.
type announce struct {
	Type     string `json:"type"`
	Nickname string `json:"nickname"`
	TCPPort  int    `json:"tcp_port"`
}

// Config describes an announce workload.
type Config struct {
	Peers       int           // number of peers, each on its own host
	MinInterval time.Duration // shortest gap between two announces of a peer (default 1 s)
	MaxInterval time.Duration // longest gap (default 5 s)
	Expiry      time.Duration // a peer forgets another not heard from for this long; 0: never
	NoDecode    bool          // count datagrams without decoding them (to time the network alone)
	// Decode, if set, decodes a datagram instead of encoding/json (for
	// example with protocol.DecodeDatagram): it returns the sender's
	// nickname, and ok false for anything but a valid announce.
	Decode func(b []byte) (nickname string, ok bool)
}

// Result sums what the peers observed.
type Result struct {
	Announces int   // datagrams sent
	Decoded   int   // datagrams received and decoded
	Invalid   int   // datagrams received that did not decode
	Known     []int // per peer: how many other peers it knows at the end
}

// Peer is one simulated discovery peer: it multicasts an announce at random
// intervals and decodes everything it receives (Config.Decode, else
// encoding/json), in one event loop.
type Peer struct {
	Name string
	Host *netsim.Host
	cfg  Config
	rng  *rand.Rand
	mu   sync.Mutex // guards res.known, read by Known
	res  peerResult
}

type peerResult struct {
	sent, decoded, invalid int
	known                  map[string]time.Time
}

// StartAnnouncers adds cfg.Peers hosts named peer0, peer1, ... to seg and
// starts a Peer on each. Each peer's randomness derives from the network's
// seed and its index.
func StartAnnouncers(n *netsim.Network, seg *netsim.Segment, cfg Config) []*Peer {
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = time.Second
	}
	if cfg.MaxInterval < cfg.MinInterval {
		cfg.MaxInterval = max(5*time.Second, cfg.MinInterval)
	}
	peers := make([]*Peer, cfg.Peers)
	for i := range peers {
		name := fmt.Sprintf("peer%d", i)
		p := &Peer{Name: name, Host: n.AddHost(name, seg), cfg: cfg,
			rng: rand.New(rand.NewPCG(n.Seed(), uint64(i)))}
		peers[i] = p
	}
	for _, p := range peers {
		p.Start()
	}
	return peers
}

// Start runs the peer on its host's context (again after a restart: what
// it knew is forgotten, its counters keep counting).
func (p *Peer) Start() {
	h := p.Host
	pc, err := h.ListenMulticastUDP(h.Context(), "udp4", nil, Group)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.res.known = make(map[string]time.Time)
	p.mu.Unlock()
	msg, _ := json.Marshal(announce{Type: "announce", Nickname: p.Name, TCPPort: 40000})
	h.Go(func(ctx context.Context) {
		defer pc.Close()
		stop := context.AfterFunc(ctx, func() { pc.Close() })
		defer stop()
		p.loop(pc, msg)
	})
}

// loop is the peer's only event loop: it reads until the next announce is
// due (a read deadline), announces, expires, and starts over.
func (p *Peer) loop(pc net.PacketConn, msg []byte) {
	buf := make([]byte, 1500)
	var a announce
	next := time.Now()
	for {
		if !time.Now().Before(next) {
			if _, err := pc.WriteTo(msg, Group); err != nil {
				return
			}
			p.res.sent++
			gap := p.cfg.MinInterval + time.Duration(p.rng.Int64N(int64(p.cfg.MaxInterval-p.cfg.MinInterval)+1))
			next = time.Now().Add(gap)
			pc.SetReadDeadline(next)
			p.expire()
		}
		k, _, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return
		}
		if p.cfg.NoDecode {
			p.res.decoded++
			continue
		}
		var nick string
		if p.cfg.Decode != nil {
			var ok bool
			if nick, ok = p.cfg.Decode(buf[:k]); !ok {
				p.res.invalid++
				continue
			}
		} else {
			a = announce{}
			if err := json.Unmarshal(buf[:k], &a); err != nil || a.Type != "announce" {
				p.res.invalid++
				continue
			}
			nick = a.Nickname
		}
		p.res.decoded++
		if p.cfg.Expiry > 0 && nick != p.Name {
			p.mu.Lock()
			p.res.known[nick] = time.Now()
			p.mu.Unlock()
		}
	}
}

func (p *Peer) expire() {
	if p.cfg.Expiry <= 0 {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(p.res.known)) {
		if now.Sub(p.res.known[name]) > p.cfg.Expiry {
			delete(p.res.known, name)
		}
	}
}

// Known returns how many other peers each peer knows now (with an Expiry
// set).
func Known(peers []*Peer) []int {
	out := make([]int, len(peers))
	for i, p := range peers {
		p.mu.Lock()
		out[i] = len(p.res.known)
		p.mu.Unlock()
	}
	return out
}

// Summarize sums the peers' observations. Call it after the network is closed
// (or the peers' hosts have crashed).
func Summarize(peers []*Peer) Result {
	var r Result
	for _, p := range peers {
		r.Announces += p.res.sent
		r.Decoded += p.res.decoded
		r.Invalid += p.res.invalid
		r.Known = append(r.Known, len(p.res.known))
	}
	return r
}

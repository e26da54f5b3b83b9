package original

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// Timing of the original LAN client.
const (
	AnnounceInterval = 5 * time.Second
	PeerTimeout      = 15 * time.Second
	SweepInterval    = 5 * time.Second
)

// Peer is an original LAN client.
type Peer struct {
	nick string
	nw   Network
	pc   net.PacketConn
	ln   net.Listener
	port uint16

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	peers    map[string]peerEntry // by nickname, as the original
	received []protocol.ChatMessage
	unknown  int // datagrams with a type the original does not know
}

type peerEntry struct {
	addr     netip.AddrPort
	lastSeen time.Time
}

// StartPeer starts an original LAN client called nick on nw. It runs until
// Close or until ctx is done.
func StartPeer(ctx context.Context, nw Network, nick string) (*Peer, error) {
	ln, err := nw.Listen(ctx, "tcp", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("original: listen: %w", err)
	}
	pc, err := nw.ListenMulticastUDP(ctx, "udp4", nil, Group)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("original: join group: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Peer{
		nick: nick, nw: nw, pc: pc, ln: ln,
		port:   uint16(ln.Addr().(*net.TCPAddr).Port),
		cancel: cancel,
		peers:  make(map[string]peerEntry),
	}
	p.wg.Add(4)
	go p.announceLoop(ctx)
	go p.receiveLoop()
	go p.acceptLoop(ctx)
	go func() {
		defer p.wg.Done()
		<-ctx.Done()
		pc.Close()
		ln.Close()
	}()
	return p, nil
}

// Close stops the peer without a goodbye, as the original exits.
func (p *Peer) Close() {
	p.cancel()
	p.wg.Wait()
}

// Port returns the TCP port the peer announces.
func (p *Peer) Port() uint16 { return p.port }

// Peers returns the nicknames the peer knows, sorted.
func (p *Peer) Peers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for n := range p.peers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Received returns the messages received so far.
func (p *Peer) Received() []protocol.ChatMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.received)
}

// UnknownTypes returns how many datagrams had a type the original does not
// know (it logs a warning and drops them).
func (p *Peer) UnknownTypes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unknown
}

// Send sends one message to the peer called nick the original's way: a new
// connection, one line, close.
func (p *Peer) Send(ctx context.Context, nick, text string) error {
	p.mu.Lock()
	e, ok := p.peers[nick]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("original: unknown peer %s", nick)
	}
	return SendLine(ctx, p.nw, e.addr.String(), &protocol.ChatMessage{From: p.nick, Content: text, Timestamp: time.Now().Unix()})
}

// SendLine dials addr, writes m as one line and closes, as the original
// sender does.
func SendLine(ctx context.Context, nw Network, addr string, m *protocol.ChatMessage) error {
	line, err := protocol.EncodeChatLine(m)
	if err != nil {
		return err
	}
	c, err := nw.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(line)
	return err
}

func (p *Peer) announceLoop(ctx context.Context) {
	defer p.wg.Done()
	announce, _ := protocol.EncodeDatagram(&protocol.Announce{Nickname: p.nick, TCPPort: p.port})
	announceT := time.NewTicker(AnnounceInterval)
	defer announceT.Stop()
	sweepT := time.NewTicker(SweepInterval)
	defer sweepT.Stop()
	p.pc.WriteTo(announce, Group)
	for {
		select {
		case <-ctx.Done():
			return
		case <-announceT.C:
			p.pc.WriteTo(announce, Group)
		case now := <-sweepT.C:
			p.mu.Lock()
			for n, e := range p.peers {
				if now.Sub(e.lastSeen) > PeerTimeout {
					delete(p.peers, n)
				}
			}
			p.mu.Unlock()
		}
	}
}

func (p *Peer) receiveLoop() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		d, err := protocol.DecodeDatagram(buf[:n])
		if err != nil {
			if errors.Is(err, protocol.ErrUnknownType) {
				p.mu.Lock()
				p.unknown++
				p.mu.Unlock()
			}
			continue
		}
		var a *protocol.Announce
		switch m := d.(type) {
		case *protocol.Announce:
			a = m
		case *protocol.Goodbye:
			continue // defined by the original, only logged
		default:
			// Our protocol package knows more types (query) than the
			// original, which warns about them and drops them.
			p.mu.Lock()
			p.unknown++
			p.mu.Unlock()
			continue
		}
		if a.Nickname == p.nick { // the original filters itself by nickname
			continue
		}
		src, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(src.IP.To4())
		p.mu.Lock()
		p.peers[a.Nickname] = peerEntry{addr: netip.AddrPortFrom(ip, a.TCPPort), lastSeen: time.Now()}
		p.mu.Unlock()
	}
}

func (p *Peer) acceptLoop(ctx context.Context) {
	defer p.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			defer c.Close()
			lr := protocol.NewLineReader(c)
			for {
				line, err := lr.ReadLine()
				if err != nil {
					return
				}
				m, err := protocol.DecodeChatLine(line)
				if err != nil {
					continue // the original logs and skips an invalid line
				}
				p.mu.Lock()
				p.received = append(p.received, *m)
				p.mu.Unlock()
			}
		}()
	}
}

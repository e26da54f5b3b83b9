//go:build unix

package chat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// OSNetwork is the operating system's network: real sockets.
type OSNetwork struct{}

var _ Network = OSNetwork{}

// DialContext dials with net.Dialer.
func (OSNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Addrs returns the addresses of the machine's interfaces that are up.
func (OSNetwork) Addrs() []netip.Addr {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, p.Addr())
			}
		}
	}
	return out
}

// Listen listens with net.ListenConfig. TCP listeners get SO_REUSEADDR
// and SO_REUSEPORT, so that DialFrom can dial from their port (hole
// punching); only processes of the same user can share such a port.
func (OSNetwork) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	return lc.Listen(ctx, network, addr)
}

// DialFrom dials raddr from laddr (":port" of a listener of ours) with
// SO_REUSEADDR and SO_REUSEPORT: a TCP simultaneous open through NATs
// needs the SYN to leave from the port the peer dials.
func (OSNetwork) DialFrom(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	la, err := net.ResolveTCPAddr(network, laddr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{LocalAddr: la, Control: reusePort}
	return d.DialContext(ctx, network, raddr)
}

// reusePort sets SO_REUSEADDR and SO_REUSEPORT on a socket.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
		}
	})
	return errors.Join(err, serr)
}

// ListenPacket listens with net.ListenConfig.
func (OSNetwork) ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error) {
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, addr)
}

// ListenMulticastUDP binds 0.0.0.0:<group port> with SO_REUSEADDR and
// SO_REUSEPORT, so that several processes on one machine each receive
// every datagram, joins the group on ifi (nil: the interface the routing
// table picks), and sets TTL 1 and multicast loopback on. Only IPv4
// ("udp4" or "udp") is supported, as in the original.
func (OSNetwork) ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error) {
	if network != "udp4" && network != "udp" {
		return nil, fmt.Errorf("listen multicast: network %q not supported, want udp4", network)
	}
	if gaddr == nil || gaddr.IP.To4() == nil || !gaddr.IP.IsMulticast() {
		return nil, fmt.Errorf("listen multicast: %v is not an IPv4 multicast address", gaddr)
	}
	lc := net.ListenConfig{Control: reusePort}
	c, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(gaddr.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen multicast: %w", err)
	}
	p := ipv4.NewPacketConn(c)
	fail := func(what string, err error) (net.PacketConn, error) {
		c.Close()
		return nil, fmt.Errorf("listen multicast: %s: %w", what, err)
	}
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: gaddr.IP}); err != nil {
		return fail("join group "+gaddr.IP.String()+onIface(ifi), err)
	}
	if ifi != nil {
		if err := p.SetMulticastInterface(ifi); err != nil {
			return fail("set multicast interface"+onIface(ifi), err)
		}
	}
	if err := p.SetMulticastTTL(1); err != nil {
		return fail("set multicast TTL", err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		return fail("set multicast loopback", err)
	}
	return c, nil
}

func onIface(ifi *net.Interface) string {
	if ifi == nil {
		return ""
	}
	return " on " + ifi.Name
}

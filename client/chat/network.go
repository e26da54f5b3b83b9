package chat

import (
	"context"
	"net"
)

// Network is how a node reaches other machines. *netsim.Host implements it
// for simulations and OSNetwork for real sockets. Listen's listener
// addresses are *net.TCPAddr and packet addresses *net.UDPAddr.
type Network interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Listen(ctx context.Context, network, addr string) (net.Listener, error)
	ListenPacket(ctx context.Context, network, addr string) (net.PacketConn, error)
	// ListenMulticastUDP binds gaddr's port on every address with address
	// and port reuse, joins the group gaddr on ifi (nil: the system's
	// choice), sets TTL 1 and multicast loopback on.
	ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (net.PacketConn, error)
}

// GroupAddr returns the LAN discovery group, 239.255.255.250:6789.
func GroupAddr() *net.UDPAddr {
	return &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 6789}
}

package proc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/parlance-chat/parlance/client/chat"
)

// NS is a network namespace of its own for one scenario, created inside
// the test's private namespace: only a loopback interface, up, with
// multicast routed on it. Scenarios in separate namespaces cannot hear
// each other's multicast or reach each other's ports, so they run in
// parallel, and alongside the other packages' real-socket tests, without
// seeing foreign peers.
//
// A holder process (unshare -n ... cat) keeps the namespace alive until
// the end of the test; programs join it with nsenter, and the test's own
// sockets are created in it by Do.
type NS struct {
	t    testing.TB
	path string // /proc/<holder>/ns/net
}

// RequireNSTools skips t, saying why, when sub-namespaces cannot be made:
// not root, or unshare, nsenter or ip missing.
func RequireNSTools(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED real-process test: not root, cannot create network namespaces (run scripts/test as root)")
	}
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED real-process test: %s is missing (util-linux and iproute2 are needed)", tool)
		}
	}
}

// NewNS creates a namespace for the rest of the test. The caller must have
// called netns.Require and RequireNSTools.
func NewNS(t testing.TB) *NS {
	t.Helper()
	const script = `set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo src 127.0.0.1
echo ready
exec cat`
	h := Start(t, "netns holder", "unshare", []string{"--net", "--", "sh", "-c", script})
	h.WaitLine(0, regexp.MustCompile(`^ready$`), 10*time.Second)
	return &NS{t: t, path: "/proc/" + strconv.Itoa(h.Pid()) + "/ns/net"}
}

// Start starts bin in the namespace (nsenter execs it: the process id is
// the program's own).
func (ns *NS) Start(t testing.TB, name, bin string, args []string, env ...string) *Process {
	t.Helper()
	return Start(t, name, "nsenter", append([]string{"--net=" + ns.path, "--", bin}, args...), env...)
}

// Do runs f on an OS thread that has entered the namespace, so that the
// sockets f creates belong to it (a socket keeps its namespace for life,
// whatever thread uses it later). The thread is thrown away if it cannot
// return to the test's namespace.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked on failure: the thread then exits with the goroutine
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(ns.path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Net returns the namespace's real sockets: chat.OSNetwork with every
// socket created inside the namespace. It satisfies chat.Network and
// original.Network.
func (ns *NS) Net() *Net { return &Net{ns: ns} }

// Net is a namespace's network; see NS.Net.
type Net struct {
	ns *NS
	// LocalIP, when set, is the source address of dialled connections
	// (another 127.0.0.0/8 address, to look like a different host).
	LocalIP net.IP
}

// From returns the network dialling from ip.
func (n *Net) From(ip string) *Net { return &Net{ns: n.ns, LocalIP: net.ParseIP(ip)} }

// DialContext dials from inside the namespace.
func (n *Net) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.ns.Do(func() error {
		d := net.Dialer{}
		if n.LocalIP != nil {
			d.LocalAddr = &net.TCPAddr{IP: n.LocalIP}
		}
		var derr error
		c, derr = d.DialContext(ctx, network, addr)
		return derr
	})
	return c, err
}

// Listen listens inside the namespace.
func (n *Net) Listen(ctx context.Context, network, addr string) (l net.Listener, err error) {
	err = n.ns.Do(func() error {
		var lerr error
		l, lerr = chat.OSNetwork{}.Listen(ctx, network, addr)
		return lerr
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *Net) ListenPacket(ctx context.Context, network, addr string) (c net.PacketConn, err error) {
	err = n.ns.Do(func() error {
		var lerr error
		c, lerr = chat.OSNetwork{}.ListenPacket(ctx, network, addr)
		return lerr
	})
	return c, err
}

// ListenMulticastUDP joins a group inside the namespace, as the client
// does.
func (n *Net) ListenMulticastUDP(ctx context.Context, network string, ifi *net.Interface, gaddr *net.UDPAddr) (c net.PacketConn, err error) {
	err = n.ns.Do(func() error {
		var lerr error
		c, lerr = chat.OSNetwork{}.ListenMulticastUDP(ctx, network, ifi, gaddr)
		return lerr
	})
	return c, err
}

var _ chat.Network = (*Net)(nil)

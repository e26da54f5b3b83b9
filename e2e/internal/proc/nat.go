package proc

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// Real NATs for real processes, built as /work/shared/NAT.md describes:
// an "internet" namespace whose bridge joins the bootstrap server (on the
// bridge itself), public hosts and the WAN side of routers; each router
// is a namespace that forwards between its WAN and a LAN bridge and does
// NAT with nftables (masquerade for a cone NAT, masquerade random for a
// symmetric one) and drops unsolicited inbound connections, as home
// routers do; each host behind it is a namespace on that LAN.
//
// Every namespace is an NS made by NewNS inside the test's private one,
// and every veth pair is created inside a scenario's namespace with its
// other end put straight into another: nothing appears in the test's own
// namespace, so netns.Check stays true and parallel scenarios cannot
// clash on interface names. Addresses: the internet is 203.0.113.0/24
// (TEST-NET-3), the server 203.0.113.1, public hosts from .11, router
// WANs from .101; router n's LAN is 192.168.n.0/24, the router .1, its
// hosts from .11.

// NATKind is how a router translates.
type NATKind int

const (
	// Cone: endpoint-independent mapping, port preserved when free
	// (nftables masquerade).
	Cone NATKind = iota + 1
	// Symmetric: a new public port per destination (masquerade random).
	Symmetric
)

func (k NATKind) String() string {
	switch k {
	case Cone:
		return "cone"
	case Symmetric:
		return "symmetric"
	}
	return "public"
}

// RequireNFT skips t, saying why, when nft (nftables) is missing. It
// cannot be installed from inside the private namespace (no network):
// scripts/test installs it before entering it.
func RequireNFT(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIPPED NAT test: nft is missing (apt-get install nftables; scripts/test installs it when it runs as root)")
	}
}

// Internet is the namespace every public address lives in.
type Internet struct {
	t        testing.TB
	NS       *NS
	hosts    int
	routers  int
	serverIP string
}

// NewInternet makes the internet namespace with its bridge, addressed
// 203.0.113.1 (ServerIP: programs started in NS listen there).
func NewInternet(t testing.TB) *Internet {
	t.Helper()
	in := &Internet{t: t, NS: NewNS(t), serverIP: "203.0.113.1"}
	in.NS.Shell(t, `ip link add inet type bridge
ip addr add 203.0.113.1/24 dev inet
ip link set inet up`)
	return in
}

// ServerIP is the internet namespace's own address, for the server.
func (in *Internet) ServerIP() string { return in.serverIP }

// PublicHost makes a host with a public address on the bridge and
// returns its namespace and address.
func (in *Internet) PublicHost(t testing.TB) (*NS, string) {
	t.Helper()
	in.hosts++
	ns := NewNS(t)
	ip := fmt.Sprintf("203.0.113.%d", 10+in.hosts)
	link(t, in.NS, fmt.Sprintf("h%d", in.hosts), "inet", ns, "eth0", ip+"/24")
	return ns, ip
}

// Router is a NAT between the internet and a LAN of its own.
type Router struct {
	NS    *NS
	Kind  NATKind
	WANIP string // its public address
	n     int    // its LAN is 192.168.n.0/24
	hosts int
}

// Router makes a router of kind on the internet, with an empty LAN.
func (in *Internet) Router(t testing.TB, kind NATKind) *Router {
	t.Helper()
	in.routers++
	r := &Router{NS: NewNS(t), Kind: kind, WANIP: fmt.Sprintf("203.0.113.%d", 100+in.routers), n: in.routers}
	link(t, in.NS, fmt.Sprintf("r%d", r.n), "inet", r.NS, "wan", r.WANIP+"/24")
	masquerade := "masquerade"
	if kind == Symmetric {
		masquerade = "masquerade random"
	}
	r.NS.Shell(t, fmt.Sprintf(`ip link add lan type bridge
ip addr add 192.168.%d.1/24 dev lan
ip link set lan up
echo 1 > /proc/sys/net/ipv4/ip_forward
nft -f - <<'EOF'
table ip nat {
	chain post {
		type nat hook postrouting priority 100;
		oifname "wan" %s
	}
}
table ip filter {
	chain input {
		type filter hook input priority 0;
		iifname "wan" ct state new drop
	}
}
EOF`, r.n, masquerade))
	return r
}

// Host makes a host on the router's LAN, its default route through the
// router, and returns its namespace and (private) address.
func (r *Router) Host(t testing.TB) (*NS, string) {
	t.Helper()
	r.hosts++
	ns := NewNS(t)
	ip := fmt.Sprintf("192.168.%d.%d", r.n, 10+r.hosts)
	link(t, r.NS, fmt.Sprintf("l%d", r.hosts), "lan", ns, "eth0", ip+"/24")
	ns.Shell(t, fmt.Sprintf("ip route add default via 192.168.%d.1", r.n))
	return ns, ip
}

// link joins bridge br in a (through a port named aName) to b, where the
// other end is named bName and gets address cidr.
func link(t testing.TB, a *NS, aName, br string, b *NS, bName, cidr string) {
	t.Helper()
	a.Shell(t, fmt.Sprintf(`ip link add %s type veth peer name %s netns %d
ip link set %s master %s
ip link set %s up`, aName, bName, b.pid(), aName, br, aName))
	b.Shell(t, fmt.Sprintf(`ip addr add %s dev %s
ip link set %s up`, cidr, bName, bName))
}

// pid is the holder's process id, from the namespace's path.
func (ns *NS) pid() int {
	var pid int
	if _, err := fmt.Sscanf(ns.path, "/proc/%d/ns/net", &pid); err != nil {
		ns.t.Fatalf("namespace path %q: %v", ns.path, err)
	}
	return pid
}

// Shell runs a sh script in the namespace and fails t, with the script
// and its output, if it fails.
func (ns *NS) Shell(t testing.TB, script string) {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+ns.path, "--", "sh", "-ec", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in %s: %v\n%s\n%s", ns.path, err, script, strings.TrimSpace(string(out)))
	}
}

// Output runs a command in the namespace and returns its output (for
// logs on failure: conntrack tables, nft counters).
func (ns *NS) Output(args ...string) string {
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns.path, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// LAN is a private network of hosts on one bridge, with no router: a
// datacenter network such as the one the deploy examples assume
// (10.0.0.0/24, hosts at addresses of their own).
type LAN struct {
	NS    *NS
	hosts int
}

// NewLAN makes the namespace of a bridge for the /24 prefix (written as
// "10.0.0"), addressed prefix.1.
func NewLAN(t testing.TB, prefix string) *LAN {
	t.Helper()
	l := &LAN{NS: NewNS(t)}
	l.NS.Shell(t, fmt.Sprintf(`ip link add lan type bridge
ip addr add %s.1/24 dev lan
ip link set lan up`, prefix))
	return l
}

// Host makes a host on the LAN at ip (in the LAN's /24) and returns its
// namespace.
func (l *LAN) Host(t testing.TB, ip string) *NS {
	t.Helper()
	l.hosts++
	ns := NewNS(t)
	link(t, l.NS, fmt.Sprintf("p%d", l.hosts), "lan", ns, "eth0", ip+"/24")
	return ns
}

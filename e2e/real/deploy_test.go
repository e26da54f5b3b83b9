package real

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/e2e/internal/proc"
	"github.com/parlance-chat/parlance/netsim/netns"
)

// The shipped files of the three-node example, bootstrap-server/deploy.
const (
	deployDir           = "../../bootstrap-server/deploy/"
	deployNATSConf      = deployDir + "cluster/nats.conf"
	deployNATSUnit      = deployDir + "cluster/nats-server.service"
	deployServerUnit    = deployDir + "bootstrap-server.service"
	deployClusterDropIn = deployDir + "cluster/bootstrap-server-cluster.conf"
)

// unitEnv returns the Environment= settings of the systemd unit files,
// in order, with the specifier %H (the host name) replaced by host.
func unitEnv(t *testing.T, host string, files ...string) []string {
	t.Helper()
	var env []string
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Environment="); ok {
				env = append(env, strings.ReplaceAll(v, "%H", host))
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if len(env) == 0 {
		t.Fatalf("no Environment= in %v", files)
	}
	return env
}

// clusterServers reads parlance_bootstrap_cluster_servers from the
// server at addr, over the network of the namespace ns; -1 if it cannot.
func clusterServers(ns *proc.NS, addr string) int {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: ns.Net().DialContext}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`(?m)^parlance_bootstrap_cluster_servers (\d+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// The three-node example of bootstrap-server/deploy/cluster, run as
// shipped: three hosts at 10.0.0.11-13 on one private network, each
// running nats-server with nats.conf unchanged (and the environment of
// nats-server.service) and bootstrap-server with the environment of
// bootstrap-server.service and the cluster drop-in. The NATS routes
// form, each bootstrap server counts the two others, clients registered
// with different servers see each other and chat, and when host 1 dies
// (both programs, SIGKILL) its client fails over to another host, the
// two left drop it from their count, and the clients chat again.
func TestRealDeployCluster(t *testing.T) {
	netns.Require(t)
	proc.RequireNSTools(t)
	t.Parallel()
	parlance, serverBin := proc.Binaries(t)
	natsBin := proc.NATSServer(t)

	natsConf, err := filepath.Abs(deployNATSConf) // the programs run elsewhere
	if err != nil {
		t.Fatal(err)
	}
	lan := proc.NewLAN(t, "10.0.0")
	type host struct {
		ns     *proc.NS
		ip     string
		nats   *proc.Process
		server *proc.Process
	}
	hosts := make([]*host, 3)
	for i := range hosts {
		h := &host{ip: fmt.Sprintf("10.0.0.%d", 11+i)}
		h.ns = lan.Host(t, h.ip)
		name := fmt.Sprintf("host%d", i+1)
		h.nats = h.ns.Start(t, "nats-"+name, natsBin, []string{"--config", natsConf}, unitEnv(t, name, deployNATSUnit)...)
		h.nats.WaitErrLine(0, regexp.MustCompile(`Server is ready`), wait)
		h.server = h.ns.Start(t, "bootstrap-"+name, serverBin, nil, unitEnv(t, name, deployServerUnit, deployClusterDropIn)...)
		h.server.WaitErrLine(0, regexp.MustCompile(`cluster: connected to NATS`), wait)
		hosts[i] = h
	}
	clients := lan.Host(t, "10.0.0.21")
	for _, h := range hosts {
		eventually(t, wait, h.ip+" counting the two other servers", func() bool {
			return clusterServers(clients, h.ip+":8080") == 2
		})
	}

	urls := func(first int) string {
		var us []string
		for i := range hosts {
			us = append(us, "ws://"+hosts[(first+i)%len(hosts)].ip+":8080")
		}
		return strings.Join(us, ",")
	}
	start := func(nick string, first int) *peer {
		args := []string{"--nickname", nick, "--log-level", "debug", "--mode", "internet", "--bootstrap-server", urls(first)}
		p := &peer{Process: clients.Start(t, nick, parlance, args), t: t, nick: nick}
		_, line := p.WaitLine(0, bannerRE, wait)
		p.port, _ = strconv.Atoi(bannerRE.FindStringSubmatch(line)[2])
		p.WaitLine(0, re(`\* registered with ws://%s:8080 as 10\.0\.0\.21:%d$`, q(hosts[first].ip), p.port), wait)
		return p
	}
	alice := start("alice", 0)
	bob := start("bob", 1)
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	chat(alice, bob, "alice on host 1 to bob on host 2")
	chat(bob, alice, "bob on host 2 to alice on host 1")

	// Host 1 dies: its NATS node and its bootstrap server.
	m := alice.Mark()
	hosts[0].server.Signal(syscall.SIGKILL)
	hosts[0].nats.Signal(syscall.SIGKILL)
	hosts[0].server.Wait(wait)
	hosts[0].nats.Wait(wait)
	alice.WaitLine(m, re(`\* registered with ws://10\.0\.0\.1[23]:8080 as 10\.0\.0\.21:%d$`, alice.port), wait)
	for _, h := range hosts[1:] {
		eventually(t, wait, h.ip+" dropping the dead server", func() bool {
			return clusterServers(clients, h.ip+":8080") == 1
		})
	}
	chat(alice, bob, "alice, failed over, to bob")
	chat(bob, alice, "bob to alice, failed over")
	alive(t, alice.Process, bob.Process, hosts[1].nats, hosts[1].server, hosts[2].nats, hosts[2].server)
}

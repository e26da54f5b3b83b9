// Command loadgen measures a bootstrap server under N registered WebSocket
// clients. It starts the server (or targets a running one), spreads the
// clients over worker processes (each below -max-per-worker open files)
// and over source addresses in 127.0.0.0/8, registers them, heartbeats
// them, and prints:
//
//   - the time to register all N,
//   - the server's RSS per connection (VmRSS after an idle hold, minus
//     the RSS before the clients came, over N),
//   - the server's CPU seconds during the hold (heartbeats only),
//   - list_peers round trip (median, p90) and the snapshot's size,
//   - join-to-seen latency with pushed updates: the time from a new
//     client's register until every push subscriber has its peer_joined.
//     With -join-url the joins are made on another server of a cluster
//     (cross-server push latency: subscribers on -url, joiners on
//     -join-url, both timed in this process).
//
// It talks only to 127.0.0.0/8. Run it inside a private network
// namespace (see BENCHMARKS.md for the exact command):
//
//	unshare -n sh -c 'ip link set lo up; loadgen -server ./bootstrap-server -n 10000'
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/tools/internal/procstat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type options struct {
	n, perWorker, perIP, conc, subs, samples, joins int
	server, url, joinURL, serverFlags, pprofDir     string
	pid                                             int
	hold, timeout, pprofSeconds                     time.Duration
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 1000, "registered clients to hold")
	fs.StringVar(&o.server, "server", "", "bootstrap-server binary to start on 127.0.0.1 (or use -url and -pid)")
	fs.StringVar(&o.serverFlags, "server-flags", "", "extra flags for the -server binary, space-separated (e.g. \"--gc-percent 50\")")
	fs.StringVar(&o.pprofDir, "pprof", "", "directory: with -server, save the server's CPU profiles of the register burst and of the hold, and heap/goroutine profiles after the hold")
	fs.DurationVar(&o.pprofSeconds, "pprof-seconds", 3*time.Second, "length of the register-burst CPU profile")
	fs.StringVar(&o.url, "url", "", "URL of a running server (ws://127.x.y.z:port/)")
	fs.StringVar(&o.joinURL, "join-url", "", "cluster: make the timed joins on this server (ws://...) while the push subscribers stay on -url (default: -url)")
	fs.IntVar(&o.pid, "pid", 0, "process id of the running server, for RSS and CPU")
	fs.IntVar(&o.perWorker, "max-per-worker", 15000, "clients per worker process (each needs that many open files)")
	fs.IntVar(&o.perIP, "per-ip", 50, "clients per source address in 127.0.0.0/8")
	fs.IntVar(&o.conc, "concurrency", 256, "handshakes in flight per worker")
	fs.IntVar(&o.subs, "subscribers", 100, "push subscribers for the join-to-seen measure")
	fs.IntVar(&o.samples, "samples", 50, "list_peers round trips to time (0: none)")
	fs.IntVar(&o.joins, "joins", 20, "joins to time")
	fs.DurationVar(&o.hold, "hold", 20*time.Second, "idle hold before RSS is read and over which CPU is measured")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	worker := fs.Bool("worker", false, "internal: run as a worker process")
	first := fs.Int("first", 0, "internal: worker's first client index")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if *worker {
		return runWorker(ctx, o.url, *first, o.n, o.perIP, o.conc, stdin, stdout)
	}
	return coordinate(ctx, o, stdout, stderr)
}

func coordinate(ctx context.Context, o options, stdout, stderr io.Writer) error {
	if (o.server == "") == (o.url == "") {
		return errors.New("give either -server BINARY or -url URL with -pid PID")
	}
	if o.server != "" {
		port := 18080
		args := []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--log-level", "warn",
			"--max-peers", strconv.Itoa(o.n + o.subs + o.joins + 10)}
		if o.pprofDir != "" {
			args = append(args, "--debug-addr", debugAddr)
		}
		args = append(args, strings.Fields(o.serverFlags)...)
		cmd := exec.CommandContext(ctx, o.server, args...)
		cmd.Stderr = stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start server: %w", err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}()
		o.pid = cmd.Process.Pid
		o.url = fmt.Sprintf("ws://127.0.0.1:%d/", port)
		if err := procstat.WaitHealthy(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err != nil {
			return err
		}
	}
	if o.pid == 0 {
		return errors.New("-pid is required with -url")
	}
	time.Sleep(time.Second) // let the fresh server settle before the baseline
	rssBase, err := procstat.RSSKiB(o.pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "server pid %d, baseline RSS %d KiB, N = %d\n", o.pid, rssBase, o.n)

	// Workers.
	nw := (o.n + o.perWorker - 1) / o.perWorker
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type worker struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	var workers []*worker
	defer func() {
		for _, w := range workers {
			w.stdin.Close()
			w.cmd.Wait()
		}
	}()
	for i := range nw {
		first := i * o.perWorker
		count := min(o.perWorker, o.n-first)
		cmd := exec.CommandContext(ctx, self, "-worker", "-url", o.url, "-first", strconv.Itoa(first), "-n", strconv.Itoa(count),
			"-per-ip", strconv.Itoa(o.perIP), "-concurrency", strconv.Itoa(o.conc), "-timeout", o.timeout.String())
		cmd.Stderr = stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		outp, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start worker: %w", err)
		}
		w := &worker{cmd: cmd, stdin: in, out: bufio.NewScanner(outp)}
		workers = append(workers, w)
		if !w.out.Scan() || w.out.Text() != "ready" {
			return fmt.Errorf("worker %d did not start", i)
		}
	}
	var profDone chan error
	if o.pprofDir != "" && o.server != "" {
		profDone = make(chan error, 1)
		go func() {
			profDone <- fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, int(o.pprofSeconds.Seconds())),
				filepath.Join(o.pprofDir, "cpu-register.pb.gz"))
		}()
		time.Sleep(200 * time.Millisecond) // let the profile start
	}
	cpuReg0, err := procstat.CPUSeconds(o.pid)
	if err != nil {
		return err
	}
	busy0, _, _ := procstat.MachineBusy()
	workCPU0 := 0.0
	for _, w := range workers {
		c, _ := procstat.CPUSeconds(w.cmd.Process.Pid)
		workCPU0 += c
	}
	start := time.Now()
	for _, w := range workers {
		fmt.Fprintln(w.stdin, "go")
	}
	total := 0
	for i, w := range workers {
		if !w.out.Scan() {
			return fmt.Errorf("worker %d ended early", i)
		}
		f := strings.Fields(w.out.Text())
		if len(f) < 3 || f[0] != "registered" {
			return fmt.Errorf("worker %d: %q", i, w.out.Text())
		}
		okN, _ := strconv.Atoi(f[1])
		if f[2] != "0" {
			return fmt.Errorf("worker %d: %s clients failed to register (%s)", i, f[2], strings.Join(f[3:], " "))
		}
		total += okN
	}
	regTime := time.Since(start)
	cpuReg1, _ := procstat.CPUSeconds(o.pid)
	workCPU1 := 0.0
	for _, w := range workers {
		c, _ := procstat.CPUSeconds(w.cmd.Process.Pid)
		workCPU1 += c
	}
	busy1, _, _ := procstat.MachineBusy()
	srvCPU, genCPU := cpuReg1-cpuReg0, workCPU1-workCPU0
	fmt.Fprintf(stdout, "registered %d clients in %d worker process(es) in %.3f s (%.0f registrations/s); server CPU %.2f s (%.0f us per connect+register); load generator CPU %.2f s; other processes %.2f CPU s\n",
		total, nw, regTime.Seconds(), float64(total)/regTime.Seconds(), srvCPU, 1e6*srvCPU/float64(total), genCPU, max(0, busy1-busy0-srvCPU-genCPU))
	if profDone != nil {
		if err := <-profDone; err != nil {
			return err
		}
	}

	// Idle hold: heartbeats only.
	cpu0, err := procstat.CPUSeconds(o.pid)
	if err != nil {
		return err
	}
	var holdProf chan error
	if o.pprofDir != "" && o.server != "" && o.hold >= 2*time.Second {
		// A CPU profile of the hold: heartbeats only.
		holdProf = make(chan error, 1)
		go func() {
			holdProf <- fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, int(o.hold.Seconds())-1),
				filepath.Join(o.pprofDir, "cpu-hold.pb.gz"))
		}()
	}
	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, _ := procstat.CPUSeconds(o.pid)
	if holdProf != nil {
		if err := <-holdProf; err != nil {
			return err
		}
	}
	rss, _ := procstat.RSSKiB(o.pid)
	if o.pprofDir != "" && o.server != "" {
		for name, u := range map[string]string{"heap-hold.pb.gz": "heap", "heap-hold.txt": "heap?debug=1", "goroutine-hold.txt": "goroutine?debug=1"} {
			if err := fetch(ctx, "http://"+debugAddr+"/debug/pprof/"+u, filepath.Join(o.pprofDir, name)); err != nil {
				return err
			}
		}
	}
	perConn := float64(rss-rssBase) / float64(total)
	fmt.Fprintf(stdout, "hold %v: server RSS %d KiB (+%d KiB) = %.2f KiB per registered connection; CPU %.2f s (%.1f%% of one core; %.1f us per heartbeat)\n",
		o.hold, rss, rss-rssBase, perConn, cpu1-cpu0, 100*(cpu1-cpu0)/o.hold.Seconds(),
		1e6*(cpu1-cpu0)/(float64(total)*o.hold.Seconds()/10))

	// list_peers round trip.
	if o.samples > 0 {
		if err := measureList(ctx, o, total, stdout); err != nil {
			return err
		}
	}

	// Push: subscribers, then timed joins.
	if o.subs > 0 && o.joins > 0 {
		if err := measurePush(ctx, o, total, stdout); err != nil {
			return err
		}
	}
	rssEnd, _ := procstat.RSSKiB(o.pid)
	fmt.Fprintf(stdout, "server RSS at the end %d KiB\n", rssEnd)
	return nil
}

func measureList(ctx context.Context, o options, total int, stdout io.Writer) error {
	lc, err := dialClient(ctx, o.url, net.IPv4(127, 200, 0, 1))
	if err != nil {
		return err
	}
	defer lc.Close()
	var rtts []time.Duration
	size := 0
	for range o.samples {
		t0 := time.Now()
		if err := writeMsg(lc, &protocol.ListPeers{}); err != nil {
			return err
		}
		_, b, err := lc.ReadMessage()
		if err != nil {
			return err
		}
		rtts = append(rtts, time.Since(t0))
		size = len(b)
	}
	slices.Sort(rtts)
	fmt.Fprintf(stdout, "list_peers at %d peers: median %.2f ms, p90 %.2f ms, max %.2f ms; snapshot %d bytes (%.0f bytes/peer)\n",
		total, ms(rtts[len(rtts)/2]), ms(rtts[len(rtts)*9/10]), ms(rtts[len(rtts)-1]), size, float64(size)/float64(max(total, 1)))
	return nil
}

type subscriber struct {
	ws   *websocket.Conn
	seen chan string // nicknames of peer_joined
}

func measurePush(ctx context.Context, o options, total int, stdout io.Writer) error {
	// Joiner nicknames are unique to this process: in a cluster the
	// subscribers also see other load generators' joins.
	prefix := "joiner" + strconv.Itoa(os.Getpid()) + "-"
	joinURL := o.url
	if o.joinURL != "" {
		joinURL = o.joinURL
	}
	subs := make([]*subscriber, o.subs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range subs {
		ws, err := dialClient(ctx, o.url, net.IPv4(127, 201, byte(i>>8), byte(i)))
		if err != nil {
			return err
		}
		defer ws.Close()
		if err := writeMsg(ws, &protocol.Register{Nickname: "sub" + strconv.Itoa(i), LocalAddr: "0.0.0.0:1", Caps: []string{protocol.CapPush}}); err != nil {
			return err
		}
		// registered, then the snapshot.
		for range 2 {
			if _, _, err := ws.ReadMessage(); err != nil {
				return err
			}
		}
		s := &subscriber{ws: ws, seen: make(chan string, 4*o.joins+4*o.subs)}
		subs[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := ws.ReadMessage()
				if err != nil {
					close(s.seen)
					return
				}
				if m, err := protocol.DecodeServerMessage(b); err == nil {
					if j, ok := m.(*protocol.PeerJoined); ok && strings.HasPrefix(j.Peer.Nickname, prefix) {
						s.seen <- j.Peer.Nickname
					}
				}
			}
		}()
	}
	var worst, median, all []time.Duration
	for j := range o.joins {
		nick := prefix + strconv.Itoa(j)
		jc, err := dialClient(ctx, joinURL, net.IPv4(127, 202, byte((j+1)>>8), byte(j+1)))
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := writeMsg(jc, &protocol.Register{Nickname: nick, LocalAddr: "0.0.0.0:2"}); err != nil {
			return err
		}
		var lat []time.Duration
		for _, s := range subs {
			for got := range s.seen {
				if got == nick {
					lat = append(lat, time.Since(t0))
					break
				}
			}
		}
		if len(lat) != len(subs) {
			return fmt.Errorf("join %d: %d of %d subscribers saw it", j, len(lat), len(subs))
		}
		all = append(all, lat...)
		slices.Sort(lat)
		worst = append(worst, lat[len(lat)-1])
		median = append(median, lat[len(lat)/2])
		jc.Close()
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(worst)
	slices.Sort(median)
	fmt.Fprintf(stdout, "push join-to-seen at %d peers, %d subscribers, %d joins: last subscriber median %.2f ms (max %.2f ms); median subscriber %.2f ms\n",
		total+o.subs, o.subs, o.joins, ms(worst[len(worst)/2]), ms(worst[len(worst)-1]), ms(median[len(median)/2]))
	slices.Sort(all)
	where := "same server"
	if joinURL != o.url {
		where = "joins on " + joinURL + ", subscribers on " + o.url
	}
	fmt.Fprintf(stdout, "push join-to-seen, all %d samples (%s): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		len(all), where, ms(all[len(all)/2]), ms(all[len(all)*99/100]), ms(all[len(all)-1]))
	for _, s := range subs {
		s.ws.Close()
	}
	return nil
}

// debugAddr is where a -server started with -pprof serves its profiles.
const debugAddr = "127.0.0.1:18081"

// fetch saves the body of a GET to file.
func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("profile %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	return os.WriteFile(file, b, 0o644)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

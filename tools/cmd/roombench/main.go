// Command roombench measures rooms (issue 12) on real sockets: how long a
// room message takes to reach every member, how many bytes the wire
// carries for it, what a room costs while nobody writes, and how long a
// member that missed messages takes to catch up after a restart.
//
// It starts -members chat nodes (chat.OSNetwork: multicast discovery on
// lo, TCP room links, Noise sessions), each with its own file store
// (client/store, as the parlance program opens it) and identity, all in
// room #bench, and waits until every node lists the other members and
// every room link is up. By default each node's store holds the room
// before the node starts (as after a /join in an earlier run), so its
// first announce carries the room; -join live calls JoinRoom right after
// Start instead, while the nodes are still discovering each other. Then,
// in phases:
//
//  1. Post: -messages messages, from the members in turn, one every
//     -interval whatever happened to the previous ones (by default 10 ms
//     per member: every member runs on this machine, so a room of N
//     members at one message every N*10ms costs it about 100 deliveries
//     a second whatever N). For each message: the time from just before
//     PostRoom (which stores the message, then sends it) until the last
//     other member showed it (its EventRoomMessage read from Events),
//     p50, p99 and max over the messages; and the bytes on the wire per
//     message per member.
//  2. Idle: -idle with nobody writing (by default one RoomSyncInterval,
//     so that each member's periodic summaries go out once): what the
//     room costs at rest.
//  3. Catch-up: the last member closes (node and store), the others post
//     -catchup messages (in turn, at most -window not yet shown by all),
//     then it starts again with the same store and identity, and the tool
//     measures the time from its start until it has shown all of them,
//     and how its summaries and the arrivals went (in bursts). -offline
//     keeps it closed longer, so that the others' links to its old
//     instance idle out before it comes back.
//
// Bytes are counted at the network: the Network each node is given wraps
// chat.OSNetwork and counts what its dialled and accepted TCP connections
// read and write (the Noise frames: handshakes, room lines, their 18-byte
// framing), and what its multicast socket sends and receives (discovery
// datagrams), separately. In this run the room links are the only TCP
// connections, so TCP bytes are room traffic. The namespace's own IP
// counters (/proc/net/netstat, IpExt), which include TCP/IP headers and
// bare ACKs, are printed beside them.
//
// Each member's live messages are rate-limited (chat.Config.RoomRate and
// RoomBurst, 10/s with bursts of 30 by default); the tool raises both to
// -rate and -burst (default 100,000: no limit in effect) and says so, so
// that the catch-up measures anti-entropy, not the limiter.
//
// A process holds -members listeners and multicast sockets, a store's
// files each, and two descriptors per room link (both ends are ours):
// 2·N·(N-1) for N members. When that does not fit in 90% of the open-file
// limit (RLIMIT_NOFILE), the nodes are spread over -workers child
// processes (this binary again, with an internal -role flag) that the tool
// drives by lines on their stdin and stdout; with one worker the nodes
// run in this process. It prints how many descriptors each worker used.
//
// It multicasts, so it runs only inside a private network namespace, and
// refuses otherwise:
//
//	cd tools && go build -o /tmp/roombench ./cmd/roombench
//	unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
//	  ip route add 224.0.0.0/4 dev lo src 127.0.0.1; /tmp/roombench -members 20'
//
// -cpuprofile PREFIX writes each worker's CPU profile of the post phase
// to PREFIX.post.wK.pprof and of the catch-up (restart to caught up) to
// PREFIX.catchup.wK.pprof (go tool pprof -top /tmp/roombench
// PREFIX.post.w*.pprof merges them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/tools/internal/privns"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	privns.Exit("roombench", err)
}

type options struct {
	members  int
	messages int
	catchup  int
	seed     uint64
	interval time.Duration
	idle     time.Duration
	window   int
	authors  int
	offline  time.Duration
	join     string
	workers  int
	rate     int
	burst    int
	history  int
	linkIdle time.Duration
	timeout  time.Duration
	profile  string
	keep     bool

	// Set by the coordinator for its worker processes.
	role  string
	data  string
	first int // the worker's nodes are first..last-1
	last  int
	wid   int
}

// internalFlags are the coordinator's flags for its workers, left out
// of the usage text.
var internalFlags = map[string]bool{"role": true, "data": true, "first": true, "last": true, "wid": true}

const roleWorker = "worker"

// The ways of -join.
const (
	joinStored = "stored"
	joinLive   = "live"
)

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("roombench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.members, "members", 20, "members of the room, each a chat node")
	fs.IntVar(&o.messages, "messages", 200, "messages of the post phase, from the members in turn")
	fs.IntVar(&o.catchup, "catchup", 1000, "messages the restarted member missed (0 skips the catch-up)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the identities and the nodes' random sources")
	fs.DurationVar(&o.interval, "interval", 0, "time between two posts of the post phase (0: 10ms per member, so that this machine, which runs every member, delivers about 100 room messages a second in all)")
	fs.DurationVar(&o.idle, "idle", chat.RoomSyncInterval, "idle time measured after the post phase (0 skips it)")
	fs.IntVar(&o.window, "window", 20, "catch-up phase: messages posted and not yet shown by every member, at most")
	fs.IntVar(&o.authors, "catchup-authors", 0, "catch-up phase: how many members post the messages, in turn (0: all the others); fewer authors make shorter lines (fewer deps)")
	fs.DurationVar(&o.offline, "offline", 0, "catch-up phase: the member stays closed at least this long")
	fs.StringVar(&o.join, "join", joinStored, `how the nodes join the room: "stored" (in each store before its node starts, as a room /joined in an earlier run) or "live" (JoinRoom right after Start, while the nodes discover each other)`)
	fs.IntVar(&o.workers, "workers", 0, "processes the nodes are spread over (0: as few as the open-file limit allows)")
	fs.IntVar(&o.rate, "rate", 100000, "chat.Config.RoomRate of every node (chat's default is 10)")
	fs.IntVar(&o.burst, "burst", 100000, "chat.Config.RoomBurst of every node (chat's default is 30)")
	fs.IntVar(&o.history, "history", 0, "chat.Config.RoomHistoryMessages of every node (0: chat's default)")
	fs.DurationVar(&o.linkIdle, "linkidle", 0, "chat.Config.IdleTimeout of every node, the idle time of its one-to-one connections (0: chat's default); room links close after 10 minutes unused whatever it is")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "bound on the whole run")
	fs.StringVar(&o.profile, "cpuprofile", "", "write the workers' CPU profiles of the post phase and the catch-up to `PREFIX`.post.wK.pprof and PREFIX.catchup.wK.pprof")
	fs.BoolVar(&o.keep, "keep", false, "keep the stores' directory")
	fs.StringVar(&o.role, "role", "", "internal: run as a worker")
	fs.StringVar(&o.data, "data", "", "internal: the stores' directory")
	fs.IntVar(&o.first, "first", 0, "internal: the worker's first node")
	fs.IntVar(&o.last, "last", 0, "internal: the worker's last node + 1")
	fs.IntVar(&o.wid, "wid", 0, "internal: the worker's number")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: roombench [flags]\n\nMeasures room message latency, bytes on the wire and catch-up after a restart, inside a private network namespace.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			if internalFlags[f.Name] {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			if name != "" {
				name = " " + name
			}
			fmt.Fprintf(stderr, "  -%s%s\n    \t%s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := privns.Check(); err != nil {
		return err
	}
	switch {
	case o.members < 2 || o.members > protocol.MaxRoomMembers:
		return fmt.Errorf("-members must be 2 to %d, got %d", protocol.MaxRoomMembers, o.members)
	case o.messages < 1 || o.catchup < 0 || o.window < 1 || o.workers < 0 || o.authors < 0:
		return errors.New("-messages and -window must be positive, -catchup, -catchup-authors and -workers not negative")
	case o.interval < 0 || o.idle < 0 || o.offline < 0 || o.linkIdle < 0 || o.timeout <= 0:
		return errors.New("-interval, -idle, -offline and -linkidle must not be negative, -timeout must be positive")
	case o.rate < 1 || o.burst < 1 || o.history < 0:
		return errors.New("-rate and -burst must be positive, -history not negative")
	case o.join != joinStored && o.join != joinLive:
		return fmt.Errorf("-join must be %q or %q, got %q", joinStored, joinLive, o.join)
	}
	if o.authors == 0 || o.authors > o.members-1 {
		o.authors = o.members - 1
	}
	if o.interval == 0 {
		o.interval = time.Duration(o.members) * 10 * time.Millisecond
	}
	switch o.role {
	case "":
		return coordinate(ctx, o, stdout, stderr)
	case roleWorker:
		return runWorker(ctx, o, stdin, stdout, stderr)
	}
	return fmt.Errorf("-role must be %q, got %q", roleWorker, o.role)
}

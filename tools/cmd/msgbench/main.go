// Command msgbench measures messages per second from one sender to one
// receiver on real sockets, against the original Rust Parlance 0.1.0's
// behaviour, and whether memory stays bounded while messages stream.
//
// It runs two measurements in one run:
//
//  1. The original baseline: an e2e/original Peer sends -original-messages
//     messages, one after the other as a script piping lines into it would,
//     to another e2e/original Peer: per message a new TCP connection, one
//     JSON line, close; plaintext, no ack, nothing stored. The pair runs
//     in this process. The receiver is an original Peer too, not one of
//     our nodes: the original's receiver only reads a line per connection,
//     so original to original is the fairest baseline, with none of our
//     costs (session sniffing, storing, acking) counted against it. It
//     reports messages/s from the first send to the moment the receiver
//     holds all of them, and how many were lost or duplicated.
//  2. Ours: a sender and a receiver, each a chat node in its own process
//     (this binary re-executed with a hidden -role flag), so that each has
//     its own RSS and CPU time. Each uses chat.OSNetwork, finds the other
//     by multicast, and keeps a file store (client/store: SQLite WAL,
//     synchronous=FULL unless -nosync) in a temporary directory. Once each
//     lists the other, the sender Posts -messages messages of 40 bytes,
//     each with a sequence number, as fast as Post allows, and waits for
//     their outcomes in order in a second goroutine; every message is
//     encrypted (Noise session), pipelined, stored by both sides and
//     acknowledged. The receiver checks the sequence numbers: received,
//     duplicated, out of order.
//
// It prints messages/s for ours (from the first Post to the last
// Delivered at the sender; from the first to the last message received at
// the receiver), lost, duplicated and out-of-order messages, the ratio to
// the original's rate, and for each process the RSS after discovery, its
// maximum (sampled every 250 ms) and at the end, the CPU seconds it used,
// its store's counts and file sizes, and the RSS of both at each 10% of
// the stream (with -messages 1000000, the memory-flatness run).
//
// The parent talks to its children by lines on their stdin and stdout;
// it waits for what they report, bounded by -timeout.
//
// It multicasts, so it runs only inside a private network namespace:
//
//	cd tools && go build -o /tmp/msgbench ./cmd/msgbench
//	unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
//	  ip route add 224.0.0.0/4 dev lo src 127.0.0.1; /tmp/msgbench -messages 200000'
//
// -cpuprofile PREFIX writes the children's CPU profiles, taken from the
// first Post to the end of the stream, to PREFIX.sender.pprof and
// PREFIX.receiver.pprof, and this process's profile of the original
// baseline to PREFIX.original.pprof (read them with
// go tool pprof -top -nodecount=25 /tmp/msgbench PREFIX.sender.pprof).
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

	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/tools/internal/privns"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	privns.Exit("msgbench", err)
}

type options struct {
	messages         int
	originalMessages int
	timeout          time.Duration
	keep             bool
	cpuprofile       string
	nosync           bool
	foldWait         time.Duration

	// Set by the parent for its children.
	role string
	data string
}

// internalFlags are the parent's flags for its children, left out of the
// usage text.
var internalFlags = map[string]bool{"role": true, "data": true}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("msgbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.messages, "messages", 200000, "messages our sender posts to our receiver")
	fs.IntVar(&o.originalMessages, "original-messages", 20000, "messages of the original baseline (0 skips it)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	fs.BoolVar(&o.keep, "keep", false, "keep the stores' directory")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write the sender's and receiver's CPU profiles to `PREFIX`.sender.pprof and PREFIX.receiver.pprof, the original baseline's to PREFIX.original.pprof")
	fs.BoolVar(&o.nosync, "nosync", false, "open the stores with synchronous=NORMAL (store.Options{NoSync: true}) instead of FULL")
	fs.DurationVar(&o.foldWait, "foldwait", store.DefaultFoldWait, "the stores' FoldWait (store.Options), as parlance opens them; 0: none")
	fs.StringVar(&o.role, "role", "", "internal: run as the sender or the receiver")
	fs.StringVar(&o.data, "data", "", "internal: the child's store directory")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: msgbench [flags]\n\nMeasures messages/s from one sender to one receiver against the original's, inside a private network namespace.\n\n")
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
	if o.messages <= 0 || o.originalMessages < 0 {
		return errors.New("-messages must be positive and -original-messages not negative")
	}
	switch o.role {
	case "":
		return coordinate(ctx, o, stdout, stderr)
	case roleSender, roleReceiver:
		return runChild(ctx, o, stdin, stdout, stderr)
	}
	return fmt.Errorf("-role must be %q or %q, got %q", roleSender, roleReceiver, o.role)
}

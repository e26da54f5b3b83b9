// Command parlance is a decentralized peer-to-peer chat. See client/README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/parlance-chat/parlance/client/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

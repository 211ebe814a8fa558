// Command omsctl is the OMS command-line client, for people and scripts. It
// sends commands to ingest and reads orders, their history and the
// commands' operations from query, over gRPC.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// An interrupt ends a watch or a wait cleanly instead of killing the
	// process halfway through a line.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := newApp(os.Stdin, os.Stdout, os.Stderr, os.Getenv).execute(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

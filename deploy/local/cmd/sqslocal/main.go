// Command sqslocal runs goaws, the SQS emulator, for the local stack and
// the end-to-end tests. It listens on 127.0.0.1 only.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/omsdev/oms/pkg/sqslocal"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4100", "listen address")
	tick := flag.Duration("tick", 250*time.Millisecond, "how often visibility timeouts and redrive are processed")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := sqslocal.Start(*addr, *tick)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sqslocal:", err)
		os.Exit(1)
	}
	fmt.Printf("sqslocal: SQS emulator (goaws) listening on %s\n", e.URL)
	<-ctx.Done()
	e.Close()
}

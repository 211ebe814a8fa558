// Command sqslocal runs goaws, the SQS emulator, for the local stack and
// the end-to-end tests, with FIFO queues that keep SQS's per-group order
// for any number of consumers (see pkg/sqslocal). It listens on 127.0.0.1
// unless told otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/omsdev/oms/pkg/sqslocal"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4100", "listen address")
	tick := flag.Duration("tick", 250*time.Millisecond, "how often lapsed visibility timeouts, redrive and memory are swept; FIFO receives do not wait for it")
	maxRetention := flag.Duration("max-retention", 0, "drop messages older than this from every queue (0: each queue's own MessageRetentionPeriod); bounds queues nobody consumes, such as the local notification queue")
	debugAddr := flag.String("debug-addr", "", "serve CPU and heap profiles under /debug/pprof/ on this address (off when empty)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := sqslocal.StartWith(*addr, sqslocal.Options{Tick: *tick, MaxRetention: *maxRetention})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sqslocal:", err)
		os.Exit(1)
	}
	fmt.Printf("sqslocal: SQS emulator (goaws) listening on %s\n", e.URL)
	if *debugAddr != "" {
		// Profiles, for the emulator's share of a benchmark's CPU.
		mux := http.NewServeMux()
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		go func() {
			if err := http.ListenAndServe(*debugAddr, mux); err != nil {
				fmt.Fprintln(os.Stderr, "sqslocal: -debug-addr:", err)
			}
		}()
	}
	<-ctx.Done()
	e.Close()
}

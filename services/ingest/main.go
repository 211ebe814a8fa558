// Command ingest is one of the OMS services; it is filled in by the pipeline work.
package main

import (
	"log/slog"
	"os"

	"github.com/omsdev/oms/pkg/config"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	env := config.FromOS()
	env.Addr("HTTP_ADDR", "127.0.0.1:8080")
	if err := env.Err(); err != nil {
		log.Error("ingest failed", "err", err)
		os.Exit(1)
	}
	log.Info("ingest: configuration loaded; the service is not built yet")
}

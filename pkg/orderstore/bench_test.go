package orderstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/pgbench"
)

var (
	ceilingOnce sync.Once
	ceiling     float64
	ceilingErr  error
)

// BenchmarkApplyCreate measures creates through the store, 8 at a time,
// and reports them as a fraction of pgbench running the same statements
// with 8 clients in the same run, on the same server.
//
//	make bench
func BenchmarkApplyCreate(b *testing.B) {
	const clients = 8
	db, schema := dbtest.NewUnmigrated(b)
	if _, err := orderstore.Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	// The benchmark function runs several times with growing b.N; measure
	// the ceiling once, on the first run's schema.
	ceilingOnce.Do(func() {
		ceiling, ceilingErr = pgbench.Run(context.Background(), pgbench.Options{
			URL: dbtest.URL(), Schema: schema, Script: pgbench.CreateOrder, Clients: clients, Duration: 5 * time.Second,
		})
	})
	if ceilingErr != nil {
		b.Fatal(ceilingErr)
	}
	s := newApp(db)
	db.SetMaxOpenConns(clients)
	b.SetParallelism((clients + 1) / 2) // 8 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Apply(context.Background(), createCmd(uuid.NewString())); err != nil {
				b.Error(err)
				return
			}
		}
	})
	tps := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(tps, "orders/s")
	b.ReportMetric(ceiling, "pgbench_tps")
	b.ReportMetric(tps/ceiling, "x_pgbench")
}

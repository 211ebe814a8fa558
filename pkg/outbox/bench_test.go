package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
)

// nopSender acknowledges every message at once: the benchmark measures the
// relay's statements, not a queue.
type nopSender struct{ sent atomic.Int64 }

func (s *nopSender) Publish(string, ...*message.Message) error { s.sent.Add(1); return nil }
func (s *nopSender) Close() error                              { return nil }
func (s *nopSender) SendBatch(_ context.Context, _ string, msgs []*message.Message) []error {
	s.sent.Add(int64(len(msgs)))
	return make([]error, len(msgs))
}

// BenchmarkRelayDrain relays b.N notifications while eight writers insert
// them, one autocommitted row each as the processor's commands do: the
// outbox churns as in `make bench`'s drain, with no vacuum in between (the
// bench's server runs with autovacuum off). Besides the wall time per
// row it reports the server's CPU per row, when the server is on this
// machine: run it against a server nothing else uses
// (OMS_TEST_DATABASE_URL).
func BenchmarkRelayDrain(b *testing.B) {
	db := dbtest.New(b)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	ctx := context.Background()
	body := []byte(`{"eventId":"` + strings.Repeat("x", 600) + `"}`)
	out := &nopSender{}
	relay, err := outbox.NewRelay(db.DB, out, outbox.RelayConfig{PollInterval: 5 * time.Millisecond}, nil)
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := serverCPU(b, db.DB)
	b.ResetTimer()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				id := uuid.NewString()
				meta := `{"oms_group_id":"` + id + `","oms_dedup_id":"` + uuid.NewString() + `","event_type":"order.created"}`
				if _, err := db.ExecContext(ctx, `INSERT INTO watermill_outbox (uuid, destination, group_id, body, metadata) VALUES (?, 'oms-notifications.fifo', ?, ?, ?)`,
					uuid.NewString(), id, body, meta); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for out.sent.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	for {
		if n, _, err := outbox.Backlog(ctx, db.DB); err != nil || n == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	relay.Close()
	<-done
	if cpu0 >= 0 {
		b.ReportMetric(float64(serverCPU(b, db.DB)-cpu0)/float64(b.N), "server-µs/row")
	}
}

// serverCPU is the CPU time, in µs, the PostgreSQL server's processes have
// used so far (the postmaster's children, from /proc), or -1 when the
// server is not on this machine.
func serverCPU(b *testing.B, db *sql.DB) int64 {
	var pid int
	if err := db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	stat := func(pid int) []string {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		_, rest, _ := strings.Cut(string(s), ") ")
		return strings.Fields(rest) // from field 3, state
	}
	f := stat(pid)
	if f == nil {
		return -1
	}
	postmaster := f[1]
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if f := stat(p); len(f) > 12 && f[1] == postmaster {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return ticks * 10000 // USER_HZ is 100 on Linux
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// The soak (-soak N): N creates through ingest → processor → query, sent
// open loop at a fixed rate below saturation, while every process's
// resident memory is sampled, so that growth over the run shows, not only
// the peak.

// memProcs are the processes the soak samples, in report order.
var memProcs = []string{nameProcessor, nameIngest, nameQuery, nameSQS}

// memSample is every process's memory at one moment of the soak.
type memSample struct {
	At      time.Duration // since the soak's start
	Sent    int64         // creates due by then on the open loop's schedule
	Applied int64         // orders PostgreSQL counts as inserted since the start
	Mem     map[string]mem
}

// soakResult is one soak run.
type soakResult struct {
	Commands int
	Rate     float64
	Sample   time.Duration
	Load     loadReport
	CPU      cpu
	Samples  []memSample
	Err      error
}

// soak sends cfg.Soak creates at rate per second and samples memory every
// cfg.SoakSample.
func (s *stack) soak(ctx context.Context, cfg config, rate float64) (r soakResult) {
	r.Commands, r.Rate, r.Sample = cfg.Soak, rate, cfg.SoakSample
	if r.Err = s.quiesce(ctx, 60*time.Second); r.Err != nil {
		return r
	}
	// Orders inserted, from the statistics collector: a counter PostgreSQL
	// keeps anyway, so following progress costs no scan (it lags the
	// commits by about a second).
	const inserted = `SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'orders'`
	base, err := s.count(ctx, inserted)
	if err != nil {
		r.Err = err
		return r
	}
	expected := time.Duration(float64(cfg.Soak) / rate * float64(time.Second))
	limit := expected + expected/3 + time.Minute

	m := s.startMeter(ctx)
	start := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	take := func() {
		smp := memSample{At: time.Since(start), Mem: map[string]mem{}}
		smp.Sent = min(int64(cfg.Soak), int64(smp.At.Seconds()*rate))
		if n, err := s.count(ctx, inserted); err == nil {
			smp.Applied = n - base
		}
		for _, name := range memProcs {
			if pid := s.pid(name); pid != 0 {
				if v, err := memory(pid); err == nil {
					smp.Mem[name] = v
				}
			}
		}
		mu.Lock()
		r.Samples = append(r.Samples, smp)
		mu.Unlock()
	}
	wg.Go(func() {
		t := time.NewTicker(cfg.SoakSample)
		defer t.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
				take()
			}
		}
	})
	r.Load, r.Err = s.omsload(ctx, "-rate", strconv.FormatFloat(rate, 'f', 1, 64), "-n", strconv.Itoa(cfg.Soak),
		"-timeout", limit.String())
	stopSampling()
	wg.Wait()
	take() // the end, after the last order was seen
	r.CPU = m.finish(ctx)
	if r.Err == nil && r.Load.Visible < int64(cfg.Soak) {
		r.Err = fmt.Errorf("%d of %d orders visible (accepted %d): %v %v", r.Load.Visible, cfg.Soak, r.Load.Accepted, r.Load.ErrorsByKind, r.Load.ErrorBodies)
	}
	if p := s.exited(); p != "" && r.Err == nil {
		r.Err = fmt.Errorf("%s exited during the soak; its log: %s", p, s.logPath(p))
	}
	return r
}

// soakRow is the soak's memory over one tenth of its commands.
type soakRow struct {
	Upto    int64 // commands sent by its end
	Applied int64
	At      time.Duration
	// End is each process's memory at the tenth's last sample; Max its
	// largest VmRSS within the tenth.
	End map[string]mem
	Max map[string]int64
}

// deciles groups the samples by tenths of the commands sent.
func (r soakResult) deciles() []soakRow {
	if r.Commands <= 0 || len(r.Samples) == 0 {
		return nil
	}
	rows := make([]soakRow, 10)
	for i := range rows {
		rows[i] = soakRow{Upto: int64(r.Commands) * int64(i+1) / 10, Max: map[string]int64{}}
	}
	for _, smp := range r.Samples {
		// The tenth being sent; the samples after the last send (the
		// tail, seeing the last orders) belong to the last.
		i := 0
		for i < 9 && smp.Sent > rows[i].Upto {
			i++
		}
		row := &rows[i]
		row.End, row.Applied, row.At = smp.Mem, smp.Applied, smp.At
		for name, v := range smp.Mem {
			row.Max[name] = max(row.Max[name], v.RSS)
		}
	}
	out := rows[:0]
	for _, row := range rows {
		if row.End != nil {
			out = append(out, row)
		}
	}
	return out
}

var errNoSaturation = errors.New("no saturation rate to soak below: pass -soak-rate")

// writeSoak writes the -soak section.
func (r *results) writeSoak(b io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("%s\n\n", sections[11])
	sk := r.Soak
	if sk == nil {
		p("Not run: `-soak 1000000` sends that many creates at half the saturation rate and samples every process's memory.\n\n")
		return
	}
	if sk.Err != nil {
		p("**Failed:** %s\n\n", oneLine(sk.Err.Error()))
	}
	ld := sk.Load
	p("`omsload -rate %s -n %s` (open loop, through ingest → processor → query, omsload watching for each order by listing). Every %s the bench reads each process's VmRSS and VmHWM from /proc; below, VmRSS at the end of each tenth of the creates sent, and in parentheses the largest VmRSS seen within that tenth. Orders applied is PostgreSQL's count of rows inserted into orders (its statistics, about a second behind).\n\n",
		dec(sk.Rate), num(float64(sk.Commands)), sk.Sample)
	p("| Creates sent | Orders applied | Time |")
	for _, name := range memProcs {
		p(" %s |", name)
	}
	p("\n|---|---|---|---|---|---|---|\n")
	rows := sk.deciles()
	for i, row := range rows {
		p("| %d%%: %s | %s | %s |", (i+1)*100/len(rows), whole(row.Upto), whole(row.Applied), row.At.Round(time.Second))
		for _, name := range memProcs {
			m, ok := row.End[name]
			p(" %s |", fig(ok, mib(m.RSS)+" ("+mib(row.Max[name])+")"))
		}
		p("\n")
	}
	if len(rows) > 0 {
		first, last := rows[0], rows[len(rows)-1]
		p("| VmHWM at the end | | |")
		for _, name := range memProcs {
			m, ok := last.End[name]
			p(" %s |", fig(ok, mib(m.HWM)))
		}
		p("\n| VmRSS, last tenth − first | | |")
		for _, name := range memProcs {
			a, oka := first.End[name]
			z, okz := last.End[name]
			p(" %s |", fig(oka && okz, signedMiB(z.RSS-a.RSS)))
		}
		p("\n")
	}
	p("\n")
	ok := sk.Err == nil
	p("The soak: %s accepted/s, %s visible/s, POST→visible p99 %s, %d errors; CPU per order visible: processor %s, ingest %s, query %s, SQS endpoint %s, PostgreSQL %s.\n\n",
		fig(ok, num(ld.AcceptedPerSec)), fig(ok, num(ld.VisiblePerSec)), fig(ok, latMs(ld.VisibleLatency, 99)), ld.Errors,
		fig(ok, msec(sk.CPU.per(nameProcessor, float64(ld.Visible)))), fig(ok, msec(sk.CPU.per(nameIngest, float64(ld.Visible)))),
		fig(ok, msec(sk.CPU.per(nameQuery, float64(ld.Visible)))), fig(ok, msec(sk.CPU.per(nameSQS, float64(ld.Visible)))),
		fig(ok, msec(sk.CPU.per(namePostgres, float64(ld.Visible)))))
}

func signedMiB(b int64) string {
	if b >= 0 {
		return "+" + mib(b)
	}
	return "−" + mib(-b)
}

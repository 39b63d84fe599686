package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/sirupsen/logrus"
)

// sealingRounds is how many off/on pairs sealingBench measures; on a
// shared machine one pair says little (pairs of one run have spread from
// 86% to 103%), the median of several more.
const sealingRounds = 6

// sealingBench measures durable PUTs at the highest concurrency with the
// seal writer off and on, alternately, in the same service (issue 11:
// sealing costs at most 5% of the throughput). Chaining itself is always
// on: it is measured against the code before it by BenchmarkSetFieldDurable64
// (docs/PERFORMANCE.md).
func (b *bench) sealingBench(ctx context.Context, a *App, srv *pshttp.Server, tokens []string) (string, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	clients := maxOf(b.conc)
	var off, on []benchResult
	type sealingRun struct {
		benchResult
		sealing string
	}
	var runs []sealingRun
	var sealsWritten uint64
	var profiled profileCPU
	// A first run after start is faster than any later one (small log and
	// view store): run one and discard it.
	b.progress("HTTP %s, %d clients, warm-up (loader process)…", rowPutOwn, clients)
	if _, err := b.remoteLoad(ctx, loadSpec{Name: rowPutOwn, Scenario: scenarioPutOwn, URL: srv.URL(), Tokens: tokens, Clients: clients}); err != nil {
		return "", err
	}
	// Off, on, on, off, off, on, ...: each pair's order alternates, so a
	// drift over the run (the log and the view store grow) does not count
	// as the cost of sealing.
	for round := 0; round < sealingRounds; round++ {
		order := []bool{false, true}
		if round%2 == 1 {
			order = []bool{true, false}
		}
		for _, sealing := range order {
			wctx, cancel := context.WithCancel(ctx)
			// The default schedule (1000 events or 10 s), with the interval
			// shortened for short runs so that time-based seals happen too.
			w := integrity.NewWriter(a.Store, integrity.WriterOptions{Key: key, Logger: b.log, Interval: min(10*time.Second, max(b.duration/4, 10*time.Millisecond))})
			done := make(chan struct{})
			// With sealing on, a CPU profile of the run tells the writer's
			// own goroutines (labelled) from the rest of the server: a share
			// of one process's samples over the same seconds, which what
			// else runs on the machine moves far less than a throughput.
			var prof *bytes.Buffer
			if sealing && b.cpuProfile == "" {
				prof = new(bytes.Buffer)
				if err := pprof.StartCPUProfile(prof); err != nil {
					prof = nil
				}
			}
			if sealing {
				go pprof.Do(wctx, pprof.Labels(sealWriterLabel, "1"), func(ctx context.Context) { defer close(done); _ = w.Run(ctx) })
			} else {
				close(done)
			}
			b.progress("HTTP %s, %d clients, sealing %v (loader process)…", rowPutOwn, clients, sealing)
			r, err := b.remoteLoad(ctx, loadSpec{Name: rowPutOwn, Scenario: scenarioPutOwn, URL: srv.URL(), Tokens: tokens, Clients: clients})
			cancel()
			<-done
			if prof != nil {
				pprof.StopCPUProfile()
				pc, perr := readProfileCPU(prof, sealWriterLabel, chainFunc)
				if perr != nil {
					return "", fmt.Errorf("the sealing run's CPU profile: %w", perr)
				}
				profiled.all, profiled.labelled, profiled.inFunc = profiled.all+pc.all, profiled.labelled+pc.labelled, profiled.inFunc+pc.inFunc
			}
			if err != nil {
				return "", err
			}
			if sealing {
				if l := w.Latest(); l != nil {
					sealsWritten = l.Seq
				}
				on = append(on, r)
				runs = append(runs, sealingRun{r, "on"})
			} else {
				off = append(off, r)
				runs = append(runs, sealingRun{r, "off"})
			}
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\n### Sealing on and off, %d clients\n\n", clients)
	fmt.Fprintf(&s, "Durable PUTs (a user per client), after a discarded warm-up run, in pairs off/on, on/off, ... in one service; the seal writer seals every 1000 events or %s, whichever first (%d seals in all). CPU per PUT as in the table above: the server's (the bench process, seal writer included) and the loader's.\n\n", min(10*time.Second, max(b.duration/4, 10*time.Millisecond)), sealsWritten)
	s.WriteString("| sealing | PUT/s | p50 | p99 | CPU per PUT, server / loader |\n|---|---:|---:|---:|---:|\n")
	for _, r := range runs {
		fmt.Fprintf(&s, "| %s | %.0f | %s | %s | %s |\n", r.sealing, r.perSecond(), fmtDur(r.P50), fmtDur(r.P99), r.cpuPerOp())
	}
	c := compareSealing(on, off)
	fmt.Fprintf(&s, "\nSealing on / off over the %d pairs: %.1f%% of the throughput (the pairs' own ratios %.1f–%.1f%%, median %.1f%%).", len(on), c.throughput, c.pairLow, c.pairHigh, c.pairMedian)
	if c.serverCPU > 0 {
		fmt.Fprintf(&s, " The server's CPU per PUT, on / off: %.1f%%.", c.serverCPU)
	}
	if profiled.all > 0 {
		part := func(d time.Duration) string {
			share := float64(d) / float64(profiled.all)
			out := fmt.Sprintf("%.2f%% of the server's CPU", 100*share)
			if c.onCPUPerPUT > 0 {
				out += fmt.Sprintf(", %.1f µs per PUT", share*float64(c.onCPUPerPUT)/1e3)
			}
			return out
		}
		fmt.Fprintf(&s, "\n\nIn a CPU profile of the runs with sealing on, the seal writer's own goroutines (labelled) took %s, and chaining the appends (`integrity.Chain`, always on) %s.", part(profiled.labelled), part(profiled.inFunc))
	}
	s.WriteString("\n")
	return s.String(), nil
}

// sealWriterLabel is the pprof label of the seal writer's goroutines in
// sealingBench's profiles.
const sealWriterLabel = "profilestore_seal_writer"

// chainFunc is the function that chains the events of every append, on
// the command side (integrity.Chain); its samples are chaining's cost.
const chainFunc = "github.com/profilestore/profilestore/eventstore/integrity.Chain"

// profileCPU is what a CPU profile says of integrity's costs.
type profileCPU struct {
	// all is the CPU time of every sample, labelled that of the samples
	// carrying the label, inFunc that of the samples with the function on
	// their stack.
	all, labelled, inFunc time.Duration
}

// readProfileCPU reads a CPU profile and sums its samples' CPU time: all,
// those carrying the label key, those with the function fn on their stack.
func readProfileCPU(r io.Reader, key, fn string) (profileCPU, error) {
	var c profileCPU
	p, err := profile.Parse(r)
	if err != nil {
		return c, err
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		return c, errors.New("no cpu samples in the profile")
	}
	for _, smp := range p.Sample {
		d := time.Duration(smp.Value[idx])
		c.all += d
		if len(smp.Label[key]) > 0 {
			c.labelled += d
		}
	stack:
		for _, loc := range smp.Location {
			for _, line := range loc.Line {
				if line.Function != nil && line.Function.Name == fn {
					c.inFunc += d
					break stack
				}
			}
		}
	}
	return c, nil
}

// sealingComparison sums up sealingBench's pairs, in percent of off.
type sealingComparison struct {
	// throughput is on's rate over off's, each summed over its runs.
	throughput float64
	// pairLow, pairHigh and pairMedian are of each pair's own ratio.
	pairLow, pairHigh, pairMedian float64
	// serverCPU is on's server CPU per PUT over off's (0 when the runs
	// have no CPU figures), onCPUPerPUT on's server CPU per PUT.
	serverCPU   float64
	onCPUPerPUT time.Duration
}

// compareSealing compares runs with the seal writer on to the runs off:
// on[i] and off[i] are one pair.
func compareSealing(on, off []benchResult) sealingComparison {
	var c sealingComparison
	var onOps, offOps int64
	var onTime, offTime, onCPU, offCPU time.Duration
	pairs := make([]float64, 0, len(on))
	for i := range on {
		onOps, onTime, onCPU = onOps+on[i].Ops, onTime+on[i].Elapsed, onCPU+on[i].ServerCPU
		offOps, offTime, offCPU = offOps+off[i].Ops, offTime+off[i].Elapsed, offCPU+off[i].ServerCPU
		if off[i].Ops > 0 {
			pairs = append(pairs, 100*on[i].perSecond()/off[i].perSecond())
		}
	}
	if offOps == 0 || onTime <= 0 {
		return c
	}
	c.throughput = 100 * (float64(onOps) / onTime.Seconds()) / (float64(offOps) / offTime.Seconds())
	if len(pairs) > 0 {
		slices.Sort(pairs)
		c.pairLow, c.pairHigh = pairs[0], pairs[len(pairs)-1]
		if n := len(pairs); n%2 == 1 {
			c.pairMedian = pairs[n/2]
		} else {
			c.pairMedian = (pairs[n/2-1] + pairs[n/2]) / 2
		}
	}
	if onOps > 0 && onCPU > 0 {
		c.onCPUPerPUT = onCPU / time.Duration(onOps)
		if offCPU > 0 {
			c.serverCPU = 100 * (float64(onCPU) / float64(onOps)) / (float64(offCPU) / float64(offOps))
		}
	}
	return c
}

// benchSeals runs a seal writer as serve does (a seal every 1000 events or
// 10 s) over the bench's log while it is written, so that verify later
// checks seals of the size production writes.
type benchSeals struct {
	key    ed25519.PrivateKey
	cancel context.CancelFunc
	done   chan struct{}
}

func startSeals(ctx context.Context, store eventstore.Store, log logrus.FieldLogger) (*benchSeals, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &benchSeals{key: key, cancel: cancel, done: make(chan struct{})}
	w := integrity.NewWriter(store, integrity.WriterOptions{Key: key, Logger: log})
	go func() { defer close(s.done); _ = w.Run(ctx) }()
	return s, nil
}

func (s *benchSeals) stop() {
	s.cancel()
	<-s.done
}

// verifyRounds is how many scans and verifies verifyRow alternates.
const verifyRounds = 5

// verifyRow seals the rest of the bench's log and times `verify` over it,
// next to the raw scan (issue 11: verify runs at ≥ 50% of the raw scan
// rate): scans and verifies, alternating, and the medians, so that the
// other load of a shared machine moves both alike. The CPU time of each
// (all of the process's threads) is given too: it moves less with that
// load than the time does. Each starts after a collection: the bench's
// process holds the data of the measurements before (a collection of it
// costs more CPU than a scan), and without one, whichever of the two a
// collection fell into carried it (the scan at 50 ms of CPU and verify at
// 300, or the scan at 200 and verify at 215, from one run to the next).
func verifyRow(ctx context.Context, store eventstore.Store, key ed25519.PrivateKey) (string, float64, error) {
	if _, err := integrity.NewWriter(store, integrity.WriterOptions{Key: key}).SealNow(ctx); err != nil {
		return "", 0, err
	}
	var scans, verifies, scanCPU, verifyCPU []time.Duration
	var r integrity.Report
	for range verifyRounds {
		runtime.GC()
		t0, c0 := time.Now(), processCPU()
		if _, err := scanLog(ctx, store); err != nil {
			return "", 0, err
		}
		scans, scanCPU = append(scans, time.Since(t0)), append(scanCPU, processCPU()-c0)
		runtime.GC()
		t0, c0 = time.Now(), processCPU()
		var err error
		if r, err = integrity.VerifyStore(ctx, store, []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, 0, nil, nil); err != nil {
			return "", 0, err
		}
		verifies, verifyCPU = append(verifies, time.Since(t0)), append(verifyCPU, processCPU()-c0)
		if !r.OK() || r.LastSeal == nil {
			return "", 0, fmt.Errorf("bench: verify found %d breaks in the bench's log", len(r.Breaks))
		}
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	scan, d := median(scans), median(verifies)
	rate := float64(r.Events) / d.Seconds()
	return fmt.Sprintf("| `verify`: every hash and link, and the %d seals written as serve writes them (median of %d, alternating with %d raw scans: median %s; CPU time, medians: scan %s, verify %s) | %s | %.0f |\n",
			r.Seals, verifyRounds, verifyRounds, scan.Round(time.Millisecond), median(scanCPU).Round(time.Millisecond), median(verifyCPU).Round(time.Millisecond), d.Round(time.Millisecond), rate),
		scan.Seconds() / d.Seconds(), nil
}

// scanLog reads the whole log in pages of 4096, as the raw scan row does,
// and returns how many events it read.
func scanLog(ctx context.Context, store eventstore.Store) (int, error) {
	var n int
	for after := eventstore.Start; ; {
		recs, err := store.ReadAll(ctx, after, 4096)
		if err != nil {
			return n, err
		}
		if len(recs) == 0 {
			return n, nil
		}
		n += len(recs)
		after = recs[len(recs)-1].Position
	}
}

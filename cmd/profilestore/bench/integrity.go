package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
)

// sealingRounds is how many off/on pairs sealingBench measures; on a
// shared machine one pair says little, the median of several more.
const sealingRounds = 3

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
	var sealsWritten uint64
	for round := 0; round < sealingRounds; round++ {
		for _, sealing := range []bool{false, true} {
			wctx, cancel := context.WithCancel(ctx)
			// The default schedule (1000 events or 10 s), with the interval
			// shortened for short runs so that time-based seals happen too.
			w := integrity.NewWriter(a.Store, integrity.WriterOptions{Key: key, Logger: b.log, Interval: min(10*time.Second, max(b.duration/4, 10*time.Millisecond))})
			done := make(chan struct{})
			if sealing {
				go func() { defer close(done); _ = w.Run(wctx) }()
			} else {
				close(done)
			}
			b.progress("HTTP %s, %d clients, sealing %v (loader process)…", rowPutOwn, clients, sealing)
			r, err := b.remoteLoad(ctx, loadSpec{Name: rowPutOwn, Scenario: scenarioPutOwn, URL: srv.URL(), Tokens: tokens, Clients: clients})
			cancel()
			<-done
			if err != nil {
				return "", err
			}
			if sealing {
				if l := w.Latest(); l != nil {
					sealsWritten = l.Seq
				}
				on = append(on, r)
			} else {
				off = append(off, r)
			}
		}
	}
	ratios := make([]float64, len(on))
	for i := range on {
		ratios[i] = on[i].perSecond() / off[i].perSecond()
	}
	sort.Float64s(ratios)
	var s strings.Builder
	fmt.Fprintf(&s, "\n### Sealing on and off, %d clients\n\n", clients)
	fmt.Fprintf(&s, "Durable PUTs (a user per client), alternating off and on in one service; the seal writer seals every 1000 events or %s, whichever first (%d seals in all).\n\n", min(10*time.Second, max(b.duration/4, 10*time.Millisecond)), sealsWritten)
	s.WriteString("| sealing | PUT/s | p50 | p99 |\n|---|---:|---:|---:|\n")
	for i := range off {
		fmt.Fprintf(&s, "| off | %.0f | %s | %s |\n| on | %.0f | %s | %s |\n", off[i].perSecond(), fmtDur(off[i].P50), fmtDur(off[i].P99), on[i].perSecond(), fmtDur(on[i].P50), fmtDur(on[i].P99))
	}
	fmt.Fprintf(&s, "\nSealing on / off, median of the %d pairs: %.1f%% of the throughput.\n", len(ratios), 100*ratios[len(ratios)/2])
	return s.String(), nil
}

// verifyRow seals the bench's log and times `verify` over it, to put next
// to the raw scan (issue 11: verify runs at ≥ 50% of the raw scan rate).
func verifyRow(ctx context.Context, store eventstore.Store, scanned int, scan time.Duration) (string, float64, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", 0, err
	}
	if _, err := integrity.NewWriter(store, integrity.WriterOptions{Key: key}).SealNow(ctx); err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	r, err := integrity.VerifyStore(ctx, store, []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, 0, nil, nil)
	if err != nil {
		return "", 0, err
	}
	d := time.Since(t0)
	if !r.OK() || r.LastSeal == nil {
		return "", 0, fmt.Errorf("bench: verify found %d breaks in the bench's log", len(r.Breaks))
	}
	rate := float64(r.Events) / d.Seconds()
	return fmt.Sprintf("| `verify`: every hash, link and the seal over the log | %s | %.0f |\n", d.Round(time.Millisecond), rate),
		rate / (float64(scanned) / scan.Seconds()), nil
}

package bench

import (
	"bytes"
	"context"
	"math"
	"reflect"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/eventstore/integrity"
)

func TestCompareSealing(t *testing.T) {
	run := func(ops int64, secs float64, cpu time.Duration) benchResult {
		return benchResult{Ops: ops, Elapsed: time.Duration(secs * float64(time.Second)), ServerCPU: cpu}
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	for _, tc := range []struct {
		name                                   string
		on, off                                []benchResult
		throughput, low, high, median, serverC float64
		onPerPUT                               time.Duration
	}{
		{
			name: "one pair",
			on:   []benchResult{run(900, 1, 90*time.Millisecond)}, off: []benchResult{run(1000, 1, 80*time.Millisecond)},
			throughput: 90, low: 90, high: 90, median: 90, serverC: 125, onPerPUT: 100 * time.Microsecond,
		},
		{
			// Sums weigh the longer pair more; the pairs' median does not.
			name:       "pairs of different lengths",
			on:         []benchResult{run(1000, 1, time.Second), run(3000, 3, 3*time.Second), run(1200, 1, time.Second)},
			off:        []benchResult{run(1000, 1, time.Second), run(4000, 2, 2*time.Second), run(1000, 1, time.Second)},
			throughput: 100 * (5200.0 / 5) / (6000.0 / 4), low: 50, high: 120, median: 100, serverC: 100 * (5.0 / 5200) / (4.0 / 6000),
			onPerPUT: 5 * time.Second / 5200,
		},
		{
			name:       "even count: the median is between the middle two",
			on:         []benchResult{run(800, 1, 0), run(1000, 1, 0)},
			off:        []benchResult{run(1000, 1, 0), run(1000, 1, 0)},
			throughput: 90, low: 80, high: 100, median: 90, serverC: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := compareSealing(tc.on, tc.off)
			if !near(c.throughput, tc.throughput) || !near(c.pairLow, tc.low) || !near(c.pairHigh, tc.high) ||
				!near(c.pairMedian, tc.median) || !near(c.serverCPU, tc.serverC) || c.onCPUPerPUT != tc.onPerPUT {
				t.Errorf("got %+v, want throughput %v, pairs %v–%v median %v, server CPU %v, on's CPU per PUT %v", c, tc.throughput, tc.low, tc.high, tc.median, tc.serverC, tc.onPerPUT)
			}
		})
	}
	if c := compareSealing(nil, nil); c != (sealingComparison{}) {
		t.Errorf("no pairs: %+v, want zeros", c)
	}
}

// spun keeps spin's work from being optimised away.
var spun atomic.Uint64

// spin keeps a core busy for d.
func spin(d time.Duration) {
	var n uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 1000; i++ {
			n += uint64(i) * n
		}
	}
	spun.Add(n)
}

// chainLike stands in for integrity.Chain: a function found by its name
// on the samples' stacks.
//
//go:noinline
func chainLike(d time.Duration) { spin(d) }

func TestReadProfileCPU(t *testing.T) {
	var prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		t.Skipf("a CPU profile is running already: %v", err)
	}
	done := make(chan struct{})
	// The label is inherited by the goroutines the labelled one starts,
	// as the seal writer's subscription goroutine is.
	go pprof.Do(context.Background(), pprof.Labels(sealWriterLabel, "1"), func(context.Context) {
		inner := make(chan struct{})
		go func() { defer close(inner); spin(300 * time.Millisecond) }()
		<-inner
		close(done)
	})
	spin(200 * time.Millisecond)
	chainLike(200 * time.Millisecond)
	<-done
	pprof.StopCPUProfile()
	c, err := readProfileCPU(&prof, sealWriterLabel, "github.com/profilestore/profilestore/cmd/profilestore/bench.chainLike")
	if err != nil {
		t.Fatal(err)
	}
	if c.labelled <= 0 || c.inFunc <= 0 || c.labelled+c.inFunc >= c.all {
		t.Errorf("labelled %v and in the function %v of %v: want some of each, not all", c.labelled, c.inFunc, c.all)
	}
	if _, err := readProfileCPU(strings.NewReader("not a profile"), sealWriterLabel, chainFunc); err == nil {
		t.Error("a file that is no profile parsed")
	}
}

// TestChainFuncName keeps chainFunc the name integrity.Chain has in a
// profile: renamed, the bench would report chaining at 0%.
func TestChainFuncName(t *testing.T) {
	if got := runtime.FuncForPC(reflect.ValueOf(integrity.Chain).Pointer()).Name(); got != chainFunc {
		t.Errorf("integrity.Chain is %q in a profile, chainFunc says %q", got, chainFunc)
	}
}

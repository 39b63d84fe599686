package bench

import (
	"bytes"
	"context"
	"math"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
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
	}{
		{
			name: "one pair",
			on:   []benchResult{run(900, 1, 90*time.Millisecond)}, off: []benchResult{run(1000, 1, 80*time.Millisecond)},
			throughput: 90, low: 90, high: 90, median: 90, serverC: 125,
		},
		{
			// Sums weigh the longer pair more; the pairs' median does not.
			name:       "pairs of different lengths",
			on:         []benchResult{run(1000, 1, time.Second), run(3000, 3, 3*time.Second), run(1200, 1, time.Second)},
			off:        []benchResult{run(1000, 1, time.Second), run(4000, 2, 2*time.Second), run(1000, 1, time.Second)},
			throughput: 100 * (5200.0 / 5) / (6000.0 / 4), low: 50, high: 120, median: 100, serverC: 100 * (5.0 / 5200) / (4.0 / 6000),
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
				!near(c.pairMedian, tc.median) || !near(c.serverCPU, tc.serverC) {
				t.Errorf("got %+v, want throughput %v, pairs %v–%v median %v, server CPU %v", c, tc.throughput, tc.low, tc.high, tc.median, tc.serverC)
			}
		})
	}
	if c := compareSealing(nil, nil); c != (sealingComparison{}) {
		t.Errorf("no pairs: %+v, want zeros", c)
	}
}

// spin keeps a core busy for d.
func spin(d time.Duration) (n uint64) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 1000; i++ {
			n += uint64(i) * n
		}
	}
	return n
}

func TestLabelledCPU(t *testing.T) {
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
	spin(300 * time.Millisecond)
	<-done
	pprof.StopCPUProfile()
	labelled, all, err := labelledCPU(&prof, sealWriterLabel)
	if err != nil {
		t.Fatal(err)
	}
	if labelled <= 0 || labelled >= all {
		t.Errorf("labelled %v of %v: want some, not all", labelled, all)
	}
	if _, _, err := labelledCPU(strings.NewReader("not a profile"), sealWriterLabel); err == nil {
		t.Error("a file that is no profile parsed")
	}
}

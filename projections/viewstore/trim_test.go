package viewstore

import (
	"sync/atomic"
	"testing"
	"time"
)

// The loop trims on its interval while the store is open, and Close ends
// it: nothing trims after Close returns.
func TestTrimLoopRunsUntilClose(t *testing.T) {
	defer func(d time.Duration) { trimInterval = d }(trimInterval)
	trimInterval = time.Millisecond
	p, err := OpenPebble(t.TempDir(), PebbleOptions{CacheBytes: 1 << 20, MemTableBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Stop the loop OpenPebble started and run one that counts.
	close(p.stopTrim)
	<-p.trimDone
	p.stopTrim, p.trimDone = make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	go p.trimLoop(func() bool { calls.Add(1); return true })
	for deadline := time.Now().Add(10 * time.Second); calls.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the trim loop ran %d times in 10 s at an interval of 1 ms", calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	after := calls.Load()
	time.Sleep(20 * time.Millisecond)
	if n := calls.Load(); n != after {
		t.Errorf("the trim loop ran %d more times after Close", n-after)
	}
}

// A C library that cannot trim ends the loop at its first tick.
func TestTrimLoopStopsWhenTheLibraryCannot(t *testing.T) {
	defer func(d time.Duration) { trimInterval = d }(trimInterval)
	trimInterval = time.Millisecond
	p := &Pebble{stopTrim: make(chan struct{}), trimDone: make(chan struct{})}
	var calls atomic.Int64
	go p.trimLoop(func() bool { calls.Add(1); return false })
	select {
	case <-p.trimDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the trim loop kept running although the C library cannot trim")
	}
	if calls.Load() != 1 {
		t.Errorf("trim called %d times, want 1", calls.Load())
	}
}

package bolt

import (
	"fmt"
	"os"
	"time"
)

// MeasureFsync returns how many 4 KiB write-and-flush cycles per second the
// disk under dir completes in about d: the ceiling for one durable commit at a
// time, against which group commit is measured. It leaves no file behind.
func MeasureFsync(dir string, d time.Duration) (perSecond float64, err error) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return 0, fmt.Errorf("bolt: measure fsync: %w", err)
	}
	defer func() {
		f.Close()
		if rerr := os.Remove(f.Name()); err == nil && rerr != nil {
			err = fmt.Errorf("bolt: measure fsync: %w", rerr)
		}
	}()
	block := make([]byte, 4096)
	// The first cycle allocates the block; it is not what commits pay.
	if _, err := f.WriteAt(block, 0); err != nil {
		return 0, fmt.Errorf("bolt: measure fsync: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("bolt: measure fsync: %w", err)
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d || n == 0 {
		block[0] = byte(n)
		if _, err := f.WriteAt(block, 0); err != nil {
			return 0, fmt.Errorf("bolt: measure fsync: %w", err)
		}
		if err := fdatasync(f); err != nil {
			return 0, fmt.Errorf("bolt: measure fsync: %w", err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

//go:build !linux

package bolt

import "os"

// fdatasync flushes f; elsewhere bbolt uses fsync too.
func fdatasync(f *os.File) error { return f.Sync() }

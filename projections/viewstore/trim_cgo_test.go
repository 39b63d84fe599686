//go:build cgo && linux

package viewstore

import "testing"

// With cgo on Linux (glibc), the C allocator's free pages can be returned:
// the loop the view store runs is not a no-op.
func TestCMemoryCanBeTrimmed(t *testing.T) {
	if !trimCMemory() {
		t.Fatal("malloc_trim is missing: the view store cannot return the block cache's freed memory")
	}
}

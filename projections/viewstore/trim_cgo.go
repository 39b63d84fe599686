//go:build cgo && linux

package viewstore

/*
#include <stdlib.h>
#include <stddef.h>

// glibc's; declared weak so that a C library without them still links
// (they are then null, and nothing is tuned or trimmed).
extern int malloc_trim(size_t pad) __attribute__((weak));
extern int mallopt(int param, int value) __attribute__((weak));

static int trim_free_memory(void) { return malloc_trim ? malloc_trim(0) : -1; }

// One malloc arena for the process unless MALLOC_ARENA_MAX says otherwise:
// glibc gives each thread that allocates its own arena (up to eight per
// core), and pebble's block cache, freed and allocated from whatever
// thread a read ran on, left memory stranded in all of them. Run before
// the Go runtime starts its threads.
__attribute__((constructor)) static void one_malloc_arena(void) {
	if (mallopt && getenv("MALLOC_ARENA_MAX") == NULL) {
		mallopt(-8, 1); // -8: glibc's M_ARENA_MAX
	}
}
*/
import "C"

// trimCMemory hands the pages the C allocator holds free back to the
// system, and reports whether the C library can.
func trimCMemory() bool { return C.trim_free_memory() >= 0 }

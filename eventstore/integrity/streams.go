package integrity

import (
	"fmt"
	"hash/maphash"
	"math"
)

// streamTable is the verifier's state of every stream it has seen, found
// by a 64-bit hash of the stream's name (computed with the event's hash,
// on every core). The entries are kept in the order streams first appear,
// names back to back in one byte array, and found through an
// open-addressed index of 8 bytes a slot; a name is compared in full
// whenever its hash matches, so two streams whose hashes collide are still
// told apart. Nothing in it is a pointer (the collector never scans it),
// and a stream first seen is appended, not written at a random place.
type streamTable struct {
	seed maphash.Seed
	// keyOf is the key of a name, as streamKey computes it (a test's
	// keys collide on purpose).
	keyOf func(name []byte) uint64
	// index holds, per slot, the high 32 bits of a key and 1 + the
	// entry's number (0: an empty slot).
	index   []uint64
	entries []streamEntry
	names   []byte
	// touched keeps touch's reads from being optimised away.
	touched uint64
}

// streamEntry is a stream's state and where its name is: 64 bytes.
type streamEntry struct {
	state streamState
	// name is the name's offset in names << nameLenBits | its length.
	name uint64
}

// nameLenBits bounds a stream name to 16 MiB and the names to 1 TiB.
const nameLenBits = 24

func newStreamTable(size uint64) streamTable {
	// Room for names of 32 bytes ("profile-@someone:example.org"): what
	// is not used of it is never touched.
	t := streamTable{seed: maphash.MakeSeed(), entries: make([]streamEntry, 0, size), names: make([]byte, 0, 32*size)}
	t.keyOf = func(name []byte) uint64 { return maphash.Bytes(t.seed, name) }
	t.index = make([]uint64, indexSize(size))
	return t
}

// indexSize is the number of index slots for n entries: a power of two, at
// most half full.
func indexSize(n uint64) int {
	size := 16
	for uint64(size) < 2*n {
		size *= 2
	}
	return size
}

// streamKey is the hash a stream is found by in a table of that seed
// (maphash.Bytes of the name is the same).
func streamKey(seed maphash.Seed, stream string) uint64 {
	return maphash.String(seed, stream)
}

// find returns the number of stream's entry and true, or the index slot
// where add puts it and false.
func (t *streamTable) find(stream string, key uint64) (int, bool) {
	mask := uint64(len(t.index) - 1)
	tag := key >> 32 << 32
	for i := key & mask; ; i = (i + 1) & mask {
		s := t.index[i]
		if s == 0 {
			return int(i), false
		}
		if s&^math.MaxUint32 == tag {
			n := int(s&math.MaxUint32) - 1
			if string(t.name(n)) == stream {
				return n, true
			}
		}
	}
}

// touch reads the index slot of each prepared event's stream, so that the
// cache misses of a page's look-ups overlap (the reads depend on nothing)
// instead of stalling the checks one at a time.
func (t *streamTable) touch(page []Prepared) {
	mask := uint64(len(t.index) - 1)
	var sum uint64
	for i := range page {
		sum += t.index[page[i].key&mask]
	}
	t.touched = sum
}

// add adds stream at the index slot find returned for it.
func (t *streamTable) add(slot int, stream string, key uint64, st streamState) error {
	if len(t.entries) == math.MaxUint32-1 || len(stream) >= 1<<nameLenBits || len(t.names) >= 1<<(64-nameLenBits) {
		return fmt.Errorf("integrity: verify keeps at most %d streams of names up to %d bytes (at %q)", math.MaxUint32-1, 1<<nameLenBits-1, stream[:min(len(stream), 64)])
	}
	t.entries = append(t.entries, streamEntry{state: st, name: uint64(len(t.names))<<nameLenBits | uint64(len(stream))})
	t.names = append(t.names, stream...)
	t.index[slot] = key>>32<<32 | uint64(len(t.entries))
	if 2*len(t.entries) > len(t.index) {
		t.grow()
	}
	return nil
}

// name is entry n's name, aliasing names.
func (t *streamTable) name(n int) []byte {
	name := t.entries[n].name
	at := name >> nameLenBits
	return t.names[at : at+name&(1<<nameLenBits-1)]
}

// grow doubles the index and places every entry again (a log of more
// streams than VerifyStore sized the table for).
func (t *streamTable) grow() {
	t.index = make([]uint64, 2*len(t.index))
	mask := uint64(len(t.index) - 1)
	for n := range t.entries {
		key := t.keyOf(t.name(n))
		i := key & mask
		for t.index[i] != 0 {
			i = (i + 1) & mask
		}
		t.index[i] = key>>32<<32 | uint64(n+1)
	}
}

package viewstore

import (
	"encoding/binary"
	"errors"
	"io"
)

// Counters are values that Txn.Add sums without reading them first: a
// sequence of unsigned varints, added element by element (a shorter
// sequence reads as zeros past its end). The views count activity with
// them; in an LSM tree a read before every increment is what a rebuild
// cannot afford.

// SumCounters adds two counter values.
func SumCounters(a, b []byte) ([]byte, error) {
	var out []byte
	for len(a) > 0 || len(b) > 0 {
		var x, y uint64
		var n int
		if len(a) > 0 {
			if x, n = binary.Uvarint(a); n <= 0 {
				return nil, errCorruptCounter
			}
			a = a[n:]
		}
		if len(b) > 0 {
			if y, n = binary.Uvarint(b); n <= 0 {
				return nil, errCorruptCounter
			}
			b = b[n:]
		}
		out = binary.AppendUvarint(out, x+y)
	}
	return out, nil
}

// Counter builds a counter value.
func Counter(xs ...uint64) []byte {
	var out []byte
	for _, x := range xs {
		out = binary.AppendUvarint(out, x)
	}
	return out
}

var errCorruptCounter = errors.New("viewstore: corrupt counter")

// counterMerger sums the operands of one key for pebble.
type counterMerger struct{ sum []byte }

func (m *counterMerger) MergeNewer(v []byte) (err error) {
	m.sum, err = SumCounters(m.sum, v)
	return err
}

func (m *counterMerger) MergeOlder(v []byte) (err error) {
	m.sum, err = SumCounters(m.sum, v)
	return err
}

func (m *counterMerger) Finish(bool) ([]byte, io.Closer, error) { return m.sum, nil, nil }

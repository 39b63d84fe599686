package projections

import (
	"encoding/binary"
	"errors"

	"github.com/profilestore/profilestore/eventstore"
)

// enc writes the views' values: varints and length-prefixed strings, far
// cheaper to fold a rebuild through than JSON or gob.
type enc struct{ b []byte }

func (e *enc) uint(x uint64) { e.b = binary.AppendUvarint(e.b, x) }
func (e *enc) int(x int64)   { e.b = binary.AppendVarint(e.b, x) }
func (e *enc) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) raw(s []byte)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }

// opt writes an optional string: nil and "" differ.
func (e *enc) opt(s *string) {
	if s == nil {
		e.uint(0)
		return
	}
	e.uint(uint64(len(*s)) + 1)
	e.b = append(e.b, *s...)
}

func (e *enc) pos(p eventstore.Position) {
	e.uint(p.Commit)
	e.uint(p.Prepare - p.Commit) // equal on bolt: one byte
}

func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

var errCorrupt = errors.New("projections: corrupt value in the view store")

// dec reads what enc wrote; the first failure sticks in err.
type dec struct {
	b   []byte
	err error
}

func (d *dec) uint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *dec) int() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *dec) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *dec) str() string { return string(d.take(d.uint())) }
func (d *dec) raw() []byte { return append([]byte(nil), d.take(d.uint())...) }

func (d *dec) opt() *string {
	n := d.uint()
	if n == 0 || d.err != nil {
		return nil
	}
	s := string(d.take(n - 1))
	return &s
}

func (d *dec) pos() eventstore.Position {
	c := d.uint()
	return eventstore.Position{Commit: c, Prepare: c + d.uint()}
}

func (d *dec) bool() bool {
	b := d.take(1)
	return len(b) == 1 && b[0] == 1
}

package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// recordVersion is the first byte of every log record; a reader refuses
// records of other versions instead of misreading them.
const recordVersion = 1

// recordHeaderSize is the fixed part of a record: version, recorded time, id.
const recordHeaderSize = 1 + 8 + 16

// Limits checked before an append is queued, so that a Put inside the group
// commit cannot fail on size and take the other appends of the batch with it.
const (
	maxStreamLen = 4096
	maxTypeLen   = 4096
	// maxEventSize bounds Data plus Metadata of one event.
	maxEventSize = 16 << 20
)

// errCorruptRecord is wrapped by every decoding failure.
var errCorruptRecord = errors.New("bolt: corrupt log record")

// encodeRecord encodes one log record (see the package doc for the layout).
// The position is the record's key and is not repeated in the value.
func encodeRecord(e *eventstore.RecordedEvent) []byte {
	n := recordHeaderSize + 5*binary.MaxVarintLen64 + len(e.Stream) + len(e.Type) + len(e.Data) + len(e.Metadata)
	b := make([]byte, recordHeaderSize, n)
	b[0] = recordVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(e.Recorded.UnixNano()))
	copy(b[9:25], e.ID[:])
	b = binary.AppendUvarint(b, e.Revision)
	for _, field := range [][]byte{[]byte(e.Stream), []byte(e.Type), e.Data, e.Metadata} {
		b = binary.AppendUvarint(b, uint64(len(field)))
		b = append(b, field...)
	}
	return b
}

// recordReader walks the variable part of a record without trusting it.
type recordReader struct {
	b   []byte
	err error
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad varint", errCorruptRecord)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a length-prefixed field, aliasing the input, capped at its
// length.
func (r *recordReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: field of %d bytes, %d left", errCorruptRecord, n, len(r.b))
		return nil
	}
	f := r.b[:n:n]
	r.b = r.b[n:]
	return f
}

// recordStream returns the stream name of a record without decoding the rest,
// aliasing b; subscriptions use it to skip filtered-out events cheaply.
func recordStream(b []byte) ([]byte, error) {
	if len(b) < recordHeaderSize || b[0] != recordVersion {
		return nil, fmt.Errorf("%w: bad header", errCorruptRecord)
	}
	r := recordReader{b: b[recordHeaderSize:]}
	r.uvarint()
	s := r.bytes()
	return s, r.err
}

// decodeRecord decodes the record stored at position pos. It never panics
// and never aliases b, which may be memory of a finished bbolt transaction.
func decodeRecord(pos uint64, b []byte) (eventstore.RecordedEvent, error) {
	e, stream, typ, err := readRecord(pos, b)
	if err != nil {
		return eventstore.RecordedEvent{}, err
	}
	e.Stream, e.Type = string(stream), string(typ)
	// One allocation for both payloads; nil stays nil so that an event
	// without metadata reads back as appended.
	data, meta := e.Data, e.Metadata
	buf := make([]byte, len(data)+len(meta))
	if len(data) > 0 {
		e.Data = buf[:len(data):len(data)]
		copy(e.Data, data)
	}
	if len(meta) > 0 {
		e.Metadata = buf[len(data):]
		copy(e.Metadata, meta)
	}
	return e, nil
}

// readRecord decodes the record stored at position pos but its stream and
// type, which it returns as bytes. The event's Data and Metadata, and the
// stream and type, alias b, capped at their length so that an append to
// one copies it instead of writing into b. It never panics.
func readRecord(pos uint64, b []byte) (e eventstore.RecordedEvent, stream, typ []byte, err error) {
	if len(b) < recordHeaderSize {
		return e, nil, nil, fmt.Errorf("%w: %d bytes at position %d", errCorruptRecord, len(b), pos)
	}
	if b[0] != recordVersion {
		return e, nil, nil, fmt.Errorf("%w: version %d at position %d", errCorruptRecord, b[0], pos)
	}
	e.Recorded = time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9])))
	copy(e.ID[:], b[9:25])
	r := recordReader{b: b[recordHeaderSize:]}
	e.Revision = r.uvarint()
	stream, typ, data, meta := r.bytes(), r.bytes(), r.bytes(), r.bytes()
	if r.err != nil {
		return eventstore.RecordedEvent{}, nil, nil, fmt.Errorf("position %d: %w", pos, r.err)
	}
	if len(r.b) != 0 {
		return eventstore.RecordedEvent{}, nil, nil, fmt.Errorf("%w: %d trailing bytes at position %d", errCorruptRecord, len(r.b), pos)
	}
	if e.ID == uuid.Nil || len(stream) == 0 || len(typ) == 0 {
		return eventstore.RecordedEvent{}, nil, nil, fmt.Errorf("%w: empty id, stream or type at position %d", errCorruptRecord, pos)
	}
	if len(data) > 0 {
		e.Data = data
	}
	if len(meta) > 0 {
		e.Metadata = meta
	}
	e.Position = eventstore.Position{Commit: pos, Prepare: pos}
	return e, stream, typ, nil
}

// positionKey is the log key of a position: big-endian so that bbolt's byte
// order is log order.
func positionKey(pos uint64) []byte { return encodeUint64(pos) }

// encodeUint64 returns a fresh 8-byte big-endian number; fresh because bbolt
// keeps the slices given to Put until the transaction ends.
func encodeUint64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

// streamKey prefixes a stream's index and id keys. The length prefix makes
// the prefixes of two streams never prefixes of each other.
func streamKey(stream string, extra int) []byte {
	k := make([]byte, 0, binary.MaxVarintLen64+len(stream)+extra)
	k = binary.AppendUvarint(k, uint64(len(stream)))
	return append(k, stream...)
}

// revisionKey is the stream index key of one revision of a stream.
func revisionKey(sk []byte, rev uint64) []byte {
	k := make([]byte, len(sk), len(sk)+8)
	copy(k, sk)
	return binary.BigEndian.AppendUint64(k, rev)
}

// idKey is the dedup index key of one event id in a stream.
func idKey(sk []byte, id uuid.UUID) []byte {
	k := make([]byte, len(sk), len(sk)+16)
	copy(k, sk)
	return append(k, id[:]...)
}

// encodeResult is the dedup index value: the AppendResult of the append
// that stored the id.
func encodeResult(r eventstore.AppendResult) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b[:8], r.Revision)
	binary.BigEndian.PutUint64(b[8:], r.Position.Commit)
	return b
}

func decodeResult(b []byte) (eventstore.AppendResult, error) {
	if len(b) != 16 {
		return eventstore.AppendResult{}, fmt.Errorf("%w: dedup entry of %d bytes", errCorruptRecord, len(b))
	}
	p := binary.BigEndian.Uint64(b[8:])
	return eventstore.AppendResult{Revision: binary.BigEndian.Uint64(b[:8]), Position: eventstore.Position{Commit: p, Prepare: p}}, nil
}

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %d-byte number", errCorruptRecord, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

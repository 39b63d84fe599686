// Package integrity makes the event log tamper-evident: every event of a
// covered stream carries the SHA-256 hash of its stored form and of its
// stream's previous event (a hash chain per stream), and signed seals
// (log.sealed events) commit to the heads of the streams changed since the
// previous seal in an RFC 6962 Merkle tree. Verify walks a log and reports
// every break; Prove and VerifyProof tie one event to a signed seal.
//
// Hashes cover what is stored (ciphertext, never plaintext), so destroying
// a user's keys leaves every chain verifiable. The exact bytes hashed are
// documented in docs/INTEGRITY.md so that anyone can re-implement the check.
//
// The package knows only the store port: streams of typed JSON events.
package integrity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// Hash is a SHA-256 hash: of an event's stored form, or a Merkle root.
type Hash [sha256.Size]byte

// Zero is the predecessor hash of a stream's first event.
var Zero Hash

// String is the hash in lower-case hex, as it appears in metadata.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText writes the hash in lower-case hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hash written by MarshalText.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ParseHash reads 64 lower-case hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) || strings.ToLower(s) != s {
		return h, fmt.Errorf("integrity: %q is not 64 lower-case hex digits", s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("integrity: %q is not 64 lower-case hex digits", s)
	}
	return h, nil
}

// Metadata members the chain adds, always the last two of the object.
const (
	MetaPrevHash  = "prev_hash"
	MetaEventHash = "event_hash"
)

// eventTag starts the hashed bytes of every event (domain separation from
// seals and Merkle nodes).
const eventTag = "profilestore.event.v1\n"

var (
	eventHashSuffixStart = []byte(`,"` + MetaEventHash + `":"`)
	prevHashMember       = []byte(`"` + MetaPrevHash + `":"`)
)

// eventHashSuffixLen is the length of `,"event_hash":"<64 hex>"}`.
var eventHashSuffixLen = len(eventHashSuffixStart) + 2*sha256.Size + 2

// CoveredCategories are the stream categories whose events must be chained
// once the genesis seal is written: the history (profile-, room-) and the
// seals themselves (log-). Other streams (the appservice transaction ledger)
// are deduplication bookkeeping: counted in the log, not chained or sealed.
var CoveredCategories = []string{"profile-", "room-", "log-"}

// Covered reports whether a stream's events are chained and sealed.
func Covered(stream string) bool {
	for _, c := range CoveredCategories {
		if strings.HasPrefix(stream, c) {
			return true
		}
	}
	return false
}

// EventHash is the hash of an event's stored form: SHA-256 over
//
//	"profilestore.event.v1\n" ‖ prev (32 bytes) ‖ lp(stream) ‖ u64(revision) ‖
//	id (16 bytes) ‖ lp(type) ‖ lp(data) ‖ lp(metadata without event_hash)
//
// where lp(x) is u64(len(x)) ‖ x and u64 is big-endian.
func EventHash(prev Hash, stream string, revision uint64, id uuid.UUID, typ string, data, meta []byte) Hash {
	var h eventHasher
	return h.sum(prev, stream, revision, id, typ, data, meta, nil)
}

// eventHasher computes event hashes in one reusable buffer, so a verifier
// hashing millions of events allocates nothing per event.
type eventHasher struct {
	buf []byte
}

// sum hashes the event; the metadata hashed is meta followed by metaTail
// (Recompute passes the stored metadata up to event_hash, then "}").
func (e *eventHasher) sum(prev Hash, stream string, revision uint64, id uuid.UUID, typ string, data, meta, metaTail []byte) Hash {
	if n := len(eventTag) + len(prev) + 8 + len(stream) + 8 + len(id) + 8 + len(typ) + 8 + len(data) + 8 + len(meta) + len(metaTail); cap(e.buf) < n {
		e.buf = make([]byte, 0, n+n/4)
	}
	b := e.buf[:0]
	b = append(b, eventTag...)
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(stream)))
	b = append(b, stream...)
	b = binary.BigEndian.AppendUint64(b, revision)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(typ)))
	b = append(b, typ...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(data)))
	b = append(b, data...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(meta)+len(metaTail)))
	b = append(b, meta...)
	b = append(b, metaTail...)
	e.buf = b
	return sha256.Sum256(b)
}

// Chain links a batch of events that will be appended to stream at
// revisions first, first+1, ...: each one's metadata gets prev_hash (the
// hash of the event before it, prev for the first) and event_hash, and the
// hash of the last one is returned, the stream's new head. Metadata must be
// a JSON object (empty is taken as {}); it is replaced, not changed in place.
func Chain(stream string, first uint64, prev Hash, events []eventstore.EventData) (Hash, error) {
	var hasher eventHasher
	for i := range events {
		e := &events[i]
		meta := bytes.TrimSpace(e.Metadata)
		if len(meta) == 0 {
			meta = []byte("{}")
		}
		if meta[0] != '{' || meta[len(meta)-1] != '}' {
			return prev, fmt.Errorf("integrity: metadata of %s event %d is not a JSON object", stream, first+uint64(i))
		}
		if bytes.Contains(meta, prevHashMember) {
			return prev, fmt.Errorf("integrity: metadata of %s event %d is chained already", stream, first+uint64(i))
		}
		out := make([]byte, 0, len(meta)+len(prevHashMember)+2*sha256.Size+2+eventHashSuffixLen)
		out = append(out, meta[:len(meta)-1]...)
		if len(bytes.TrimSpace(meta[1:len(meta)-1])) > 0 {
			out = append(out, ',')
		}
		out = append(out, prevHashMember...)
		out = hex.AppendEncode(out, prev[:])
		out = append(out, '"', '}')
		h := hasher.sum(prev, stream, first+uint64(i), e.ID, e.Type, e.Data, out, nil)
		out = append(out[:len(out)-1], eventHashSuffixStart...)
		out = hex.AppendEncode(out, h[:])
		out = append(out, '"', '}')
		e.Metadata = out
		prev = h
	}
	return prev, nil
}

// Link is what an event's stored metadata says about its place in the chain.
type Link struct {
	// Chained is false for an event without chain members (written before
	// chaining, or outside the covered categories).
	Chained bool
	// Prev and Hash are the stored prev_hash and event_hash.
	Prev, Hash Hash
	// Hashed is the metadata as hashed: without the event_hash member.
	Hashed []byte
}

// errMalformedChain is wrapped when chain members are present but not in
// the documented form.
var errMalformedChain = errors.New("integrity: malformed chain members in metadata")

// ReadLink parses the chain members at the end of stored metadata. Metadata
// that mentions neither member is unchained, not malformed.
func ReadLink(meta []byte) (Link, error) {
	l, prefix, err := readLink(meta)
	if err != nil || !l.Chained {
		return l, err
	}
	l.Hashed = append(append(make([]byte, 0, len(prefix)+1), prefix...), '}')
	return l, nil
}

var closingBrace = []byte{'}'}

// readLink is ReadLink without the copy: for a chained event, the hashed
// metadata is prefix followed by "}", prefix aliasing meta.
func readLink(meta []byte) (l Link, prefix []byte, err error) {
	n := len(meta)
	if n < eventHashSuffixLen+len(prevHashMember)+2*sha256.Size+2 ||
		!bytes.Equal(meta[n-eventHashSuffixLen:n-eventHashSuffixLen+len(eventHashSuffixStart)], eventHashSuffixStart) {
		if bytes.Contains(meta, eventHashSuffixStart[1:]) || bytes.Contains(meta, prevHashMember) {
			return Link{}, nil, errMalformedChain
		}
		return Link{Hashed: meta}, nil, nil
	}
	if meta[n-2] != '"' || meta[n-1] != '}' {
		return Link{}, nil, errMalformedChain
	}
	if !decodeHash(&l.Hash, meta[n-2-2*sha256.Size:n-2]) {
		return Link{}, nil, errMalformedChain
	}
	// prefix ends with "prev_hash":"<64 hex>"
	prefix = meta[:n-eventHashSuffixLen]
	m := len(prefix)
	start := m - 1 - 2*sha256.Size - len(prevHashMember)
	if start < 1 || !bytes.Equal(prefix[start:start+len(prevHashMember)], prevHashMember) || prefix[m-1] != '"' {
		return Link{}, nil, errMalformedChain
	}
	if !decodeHash(&l.Prev, prefix[m-1-2*sha256.Size:m-1]) {
		return Link{}, nil, errMalformedChain
	}
	l.Chained = true
	return l, prefix, nil
}

// hexValue is each byte's value as a hex digit, of either case as
// encoding/hex reads them, and 0xff for a byte that is none.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	for i, c := range "ABCDEF" {
		t[c] = byte(10 + i)
	}
	return t
}()

// decodeHash is hex.Decode of a hash's 64 digits, with one branch for all
// of them instead of two per digit: readLink decodes two hashes an event.
func decodeHash(h *Hash, src []byte) bool {
	if len(src) != 2*len(h) {
		return false
	}
	var bad byte
	for i := range h {
		hi, lo := hexValue[src[2*i]], hexValue[src[2*i+1]]
		bad |= hi | lo
		h[i] = hi<<4 | lo
	}
	return bad&0xf0 == 0
}

// HeadOf returns the hash a stream's next event links to when rec is the
// stream's last event and prev is the hash of the event before rec: the
// stored event_hash of a chained event, or the computed hash of an
// unchained one (its place in the virtual chain the genesis seal covers).
// It trusts stored hashes; Verify is what checks them.
func HeadOf(rec *eventstore.RecordedEvent, prev Hash) Hash {
	l, _, err := readLink(rec.Metadata)
	if err == nil && l.Chained {
		return l.Hash
	}
	return EventHash(prev, rec.Stream, rec.Revision, rec.ID, rec.Type, rec.Data, rec.Metadata)
}

// Recompute returns the hash of a stored event computed from its bytes and
// its parsed link. A chained event is hashed with its stored prev_hash (so
// a changed byte is reported at that event alone, and a broken link at the
// event whose prev_hash does not match); an unchained one with prev, the
// hash of its predecessor.
func Recompute(rec *eventstore.RecordedEvent, prev Hash) (Hash, Link, error) {
	var h eventHasher
	return h.recompute(rec, prev)
}

func (e *eventHasher) recompute(rec *eventstore.RecordedEvent, prev Hash) (Hash, Link, error) {
	l, prefix, err := readLink(rec.Metadata)
	if err != nil {
		return Hash{}, l, err
	}
	if l.Chained {
		return e.sum(l.Prev, rec.Stream, rec.Revision, rec.ID, rec.Type, rec.Data, prefix, closingBrace), l, nil
	}
	return e.sum(prev, rec.Stream, rec.Revision, rec.ID, rec.Type, rec.Data, rec.Metadata, nil), l, nil
}

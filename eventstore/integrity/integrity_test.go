package integrity_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// testLog is a real data directory written through the domain services.
type testLog struct {
	dir      string
	store    *bolt.Store
	keys     *bolt.Keyring
	profiles *domain.ProfileService
	rooms    *domain.RoomService
	eraser   *domain.Eraser
	key      ed25519.PrivateKey
}

func openLog(t testing.TB, dir string, key ed25519.PrivateKey) *testLog {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	l := &testLog{dir: dir, store: store, keys: keys, profiles: profiles, key: key,
		rooms:  domain.NewRoomService(store, sealer, domain.DefaultPolicy, profiles),
		eraser: domain.NewEraser(keys, sealer, profiles)}
	t.Cleanup(l.close)
	return l
}

func (l *testLog) close() {
	l.store.Close()
	l.keys.Close()
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (l *testLog) setName(t *testing.T, user, name string) eventstore.Position {
	t.Helper()
	v, _ := json.Marshal(name)
	res, err := l.profiles.SetField(context.Background(), domain.SetField{User: domain.UserID(user), Actor: domain.ServerActor, Key: "displayname", Value: v,
		Meta: domain.Metadata{OccurredAt: time.Now(), Actor: domain.UserID(user), Source: "client"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed {
		t.Fatalf("set %s to %q changed nothing", user, name)
	}
	return res.Position
}

func (l *testLog) join(t *testing.T, room, user string) {
	t.Helper()
	if _, err := l.rooms.ChangeMembership(context.Background(), domain.ChangeMembership{Room: domain.RoomID(room), User: domain.UserID(user), Actor: domain.ServerActor,
		Membership: "join", Meta: domain.Metadata{OccurredAt: time.Now(), Source: "client"}}); err != nil {
		t.Fatal(err)
	}
}

func (l *testLog) seal(t *testing.T) *integrity.SealRef {
	t.Helper()
	ref, err := integrity.NewWriter(l.store, integrity.WriterOptions{Key: l.key}).SealNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ref == nil {
		t.Fatal("nothing sealed")
	}
	return ref
}

// verify walks the log twice, through the pages the bolt store lends and
// through ReadAll, and fails unless both report the same and every page
// lent was released.
func (l *testLog) verify(t *testing.T, witness *integrity.Seal) integrity.Report {
	t.Helper()
	keys := []ed25519.PublicKey{l.key.Public().(ed25519.PublicKey)}
	lender := &countingLender{Store: l.store}
	r, err := integrity.VerifyStore(context.Background(), lender, keys, 0, witness, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lent, released := lender.lent.Load(), lender.released.Load(); lent == 0 || lent != released {
		t.Fatalf("verify was lent %d pages and released %d", lent, released)
	}
	read, err := integrity.VerifyStore(context.Background(), readAllOnly{l.store}, keys, 0, witness, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, read) {
		t.Fatalf("verify through lent pages reports\n%+v\nthrough ReadAll\n%+v", r, read)
	}
	return r
}

// countingLender is the bolt store, counting the pages it lends and their
// releases.
type countingLender struct {
	*bolt.Store
	lent, released atomic.Int64
}

func (c *countingLender) LendAll(ctx context.Context, after eventstore.Position, limit int, into []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, func(), error) {
	page, release, err := c.Store.LendAll(ctx, after, limit, into)
	if err != nil || len(page) == 0 {
		return page, release, err
	}
	c.lent.Add(1)
	var once sync.Once
	return page, func() {
		once.Do(func() { c.released.Add(1) })
		release()
	}, nil
}

// readAllOnly is a store read through ReadAll alone, as EventStoreDB is.
type readAllOnly struct{ eventstore.Store }

// history writes three sealed windows of profile and room events and
// returns the log, still open.
func history(t *testing.T) *testLog {
	l := openLog(t, t.TempDir(), newKey(t))
	for w := 0; w < 3; w++ {
		for u := 0; u < 4; u++ {
			user := fmt.Sprintf("@u%d:example.com", u)
			l.setName(t, user, fmt.Sprintf("name %d of %d", w, u))
			l.setName(t, user, fmt.Sprintf("second name %d of %d", w, u))
			if w == 0 {
				l.join(t, "!r:example.com", user)
			}
		}
		l.seal(t)
	}
	return l
}

// record is one log record of the bolt file, decoded only as far as the
// tampering needs (eventstore/bolt's record layout).
type record struct {
	pos             uint64
	stream, typ     string
	revision        uint64
	dataAt, dataLen int
	metaAt, metaLen int
	raw             []byte
}

func decode(pos uint64, v []byte) record {
	r := record{pos: pos, raw: append([]byte(nil), v...)}
	off := 1 + 8 + 16
	next := func() uint64 {
		x, n := binary.Uvarint(v[off:])
		off += n
		return x
	}
	r.revision = next()
	field := func() (int, int) {
		n := int(next())
		at := off
		off += n
		return at, n
	}
	at, n := field()
	r.stream = string(v[at : at+n])
	at, n = field()
	r.typ = string(v[at : at+n])
	r.dataAt, r.dataLen = field()
	r.metaAt, r.metaLen = field()
	return r
}

// tamper closes the log, lets edit change the bolt file's log bucket
// directly (what an attacker with a bbolt editor does) and reopens it.
func (l *testLog) tamper(t *testing.T, edit func(t *testing.T, log *bbolt.Bucket, recs []record)) *testLog {
	t.Helper()
	l.close()
	db, err := bbolt.Open(filepath.Join(l.dir, "events.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		var recs []record
		err := b.ForEach(func(k, v []byte) error {
			recs = append(recs, decode(binary.BigEndian.Uint64(k), v))
			return nil
		})
		if err != nil {
			return err
		}
		edit(t, b, recs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return openLog(t, l.dir, l.key)
}

func key(pos uint64) []byte { return binary.BigEndian.AppendUint64(nil, pos) }

func put(t *testing.T, b *bbolt.Bucket, pos uint64, v []byte) {
	t.Helper()
	if err := b.Put(key(pos), v); err != nil {
		t.Fatal(err)
	}
}

// middle returns a field_set of @u1 that has later events in its stream
// within the same seal window: the second of window 1.
func middle(recs []record) (int, record) {
	n := 0
	for i, r := range recs {
		if r.stream == "profile-@u1:example.com" {
			n++
			if n == 3 {
				return i, r
			}
		}
	}
	panic("no such event")
}

// expectBreaks checks that the report has exactly the wanted breaks, by
// kind and place.
func expectBreaks(t *testing.T, r integrity.Report, want ...integrity.Break) {
	t.Helper()
	if len(r.Breaks) != len(want) {
		t.Fatalf("got %d breaks, want %d:\n%s", len(r.Breaks), len(want), breaks(r))
	}
	for i, w := range want {
		g := r.Breaks[i]
		if g.Kind != w.Kind || g.Stream != w.Stream || g.Revision != w.Revision || g.Position != w.Position {
			t.Errorf("break %d: got %s, want %s at %s revision %d (position %s)", i, g, w.Kind, w.Stream, w.Revision, w.Position)
		}
	}
}

func breaks(r integrity.Report) string {
	var b strings.Builder
	for _, x := range r.Breaks {
		b.WriteString("  " + x.String() + "\n")
	}
	return b.String()
}

func at(kind integrity.BreakKind, r record) integrity.Break {
	return integrity.Break{Kind: kind, Stream: r.stream, Revision: r.revision, Position: fmt.Sprint(r.pos)}
}

func TestUntouchedHistoryVerifies(t *testing.T) {
	l := history(t)
	r := l.verify(t, nil)
	if !r.OK() {
		t.Fatalf("breaks in an untouched log:\n%s", breaks(r))
	}
	if r.Seals != 3 || r.LastSeal == nil || r.LastSeal.Seq != 3 {
		t.Fatalf("seals: %d, last %+v; want 3, the last verified", r.Seals, r.LastSeal)
	}
	if r.Events < 30 {
		t.Fatalf("verified %d events", r.Events)
	}
}

func TestTamperingIsReportedWhereItIs(t *testing.T) {
	t.Run("one byte of a payload", func(t *testing.T) {
		l := history(t)
		var victim record
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			_, victim = middle(recs)
			v := victim.raw
			// A base64 character of the sealed value: still valid JSON.
			i := victim.dataAt + bytes.Index(v[victim.dataAt:victim.dataAt+victim.dataLen], []byte(`"s1.`)) + 8
			v[i] ^= 0x01
			put(t, b, victim.pos, v)
		})
		expectBreaks(t, l.verify(t, nil), at(integrity.Changed, victim))
	})
	t.Run("one byte of metadata", func(t *testing.T) {
		l := history(t)
		var victim record
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			_, victim = middle(recs)
			v := victim.raw
			i := victim.metaAt + bytes.Index(v[victim.metaAt:victim.metaAt+victim.metaLen], []byte(`"client"`)) + 1
			v[i] = 'C'
			put(t, b, victim.pos, v)
		})
		expectBreaks(t, l.verify(t, nil), at(integrity.Changed, victim))
	})
	t.Run("an event deleted", func(t *testing.T) {
		l := history(t)
		var next record
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			i, victim := middle(recs)
			if err := b.Delete(key(victim.pos)); err != nil {
				t.Fatal(err)
			}
			for _, r := range recs[i+1:] {
				if r.stream == victim.stream {
					next = r
					break
				}
			}
		})
		expectBreaks(t, l.verify(t, nil), at(integrity.Missing, next))
	})
	t.Run("two events swapped", func(t *testing.T) {
		l := history(t)
		var first, second record
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			i, a := middle(recs)
			for _, r := range recs[i+1:] {
				if r.stream == a.stream {
					put(t, b, a.pos, r.raw)
					put(t, b, r.pos, a.raw)
					// What the walk now meets at each place.
					first, second = r, a
					first.pos, second.pos = a.pos, r.pos
					return
				}
			}
			t.Fatal("no later event")
		})
		expectBreaks(t, l.verify(t, nil), at(integrity.Missing, first), at(integrity.Reordered, second))
	})
	t.Run("a seal replaced by one signed with another key", func(t *testing.T) {
		l := history(t)
		var victim record
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			for _, r := range recs {
				if r.typ == integrity.SealType {
					victim = r
				}
			}
			forged := reseal(t, victim, newKey(t))
			put(t, b, victim.pos, forged)
		})
		expectBreaks(t, l.verify(t, nil), at(integrity.ForgedSeal, victim))
	})
	t.Run("a truncated log", func(t *testing.T) {
		l := history(t)
		// The latest seal, as a witness copied it from the change feed.
		latest, _, _, err := integrity.LatestSeal(context.Background(), l.store)
		if err != nil {
			t.Fatal(err)
		}
		l = l.tamper(t, func(t *testing.T, b *bbolt.Bucket, recs []record) {
			// Cut the log in the middle of the last window, seal included.
			for _, r := range recs[len(recs)-6:] {
				if err := b.Delete(key(r.pos)); err != nil {
					t.Fatal(err)
				}
			}
		})
		r := l.verify(t, &latest)
		expectBreaks(t, r, integrity.Break{Kind: integrity.Truncated, Stream: integrity.SealStream, Revision: latest.Seq - 1})
		if r.LastSeal == nil || r.LastSeal.Seq != latest.Seq-1 {
			t.Fatalf("last verified seal %+v, want %d", r.LastSeal, latest.Seq-1)
		}
	})
}

// reseal rewrites a seal event as a forger holding another key would: a
// valid seal over the same window, signed with key, chained like the
// original.
func reseal(t *testing.T, r record, key ed25519.PrivateKey) []byte {
	t.Helper()
	data := r.raw[r.dataAt : r.dataAt+r.dataLen]
	meta := r.raw[r.metaAt : r.metaAt+r.metaLen]
	s, err := integrity.ParseSeal(data)
	if err != nil {
		t.Fatal(err)
	}
	s.Sign(key)
	newData, _ := json.Marshal(&s)
	link, err := integrity.ReadLink(meta)
	if err != nil || !link.Chained {
		t.Fatalf("seal metadata: %v", err)
	}
	var plain map[string]any
	_ = json.Unmarshal(meta, &plain)
	delete(plain, integrity.MetaPrevHash)
	delete(plain, integrity.MetaEventHash)
	m, _ := json.Marshal(plain)
	evs := []eventstore.EventData{{Type: r.typ, Data: newData, Metadata: m}}
	copy(evs[0].ID[:], r.raw[9:25])
	if _, err := integrity.Chain(r.stream, r.revision, link.Prev, evs); err != nil {
		t.Fatal(err)
	}
	// Re-encode the record: header, revision, then the four fields.
	out := append([]byte(nil), r.raw[:25]...)
	out = binary.AppendUvarint(out, r.revision)
	for _, f := range [][]byte{[]byte(r.stream), []byte(r.typ), evs[0].Data, evs[0].Metadata} {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}

package appservice

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/profilestore/profilestore/domain"
	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// BackfillCheckpoint is a backfill's durable state: per room where it got
// to, and what it learnt on the way (members so far, name changes seen, the
// global changes it recorded), in one bbolt file beside the data. Memory
// stays bounded whatever the room size: a page's worth is held, the rest
// is here. Each page's progress commits in one transaction, so an
// interrupted backfill resumes at the page it was on; the page's writes to
// the store are idempotent, so doing them again appends nothing.
type BackfillCheckpoint struct {
	db *bbolt.DB
}

// Buckets of the checkpoint.
var (
	bucketRooms   = []byte("rooms")   // room -> RoomProgress (JSON)
	bucketMembers = []byte("members") // phase, room, user -> pastMember (JSON)
	bucketCands   = []byte("changes") // user, field, sha256(value), ms, room -> event id: in-room name changes the survey saw
	bucketGlobals = []byte("globals") // user, field, ms -> pastGlobal (JSON): global changes recorded
	bucketUsers   = []byte("users")   // user -> why their rooms could not be listed
	bucketLast    = []byte("last")    // user, field -> ms of the last in-room change the survey saw
)

// Phases of a room.
const (
	PhaseSurvey = "survey" // reading the room once for name changes
	PhaseWrite  = "write"  // reading it again and recording
	PhaseDone   = "done"
	PhaseFailed = "failed"
)

// RoomProgress is where a room's backfill is.
type RoomProgress struct {
	// Reader is the local member the backfill acts as ("" with the admin API).
	Reader domain.UserID `json:"reader,omitempty"`
	Phase  string        `json:"phase"`
	// From is the pagination token of the next page in the phase.
	From string `json:"from,omitempty"`
	// Order is the last order_ts given in the room (never goes down).
	Order int64 `json:"order,omitempty"`
	// Visibility is the room's history_visibility so far.
	Visibility string `json:"visibility,omitempty"`
	Events     int64  `json:"events"`
	Recorded   int64  `json:"recorded"`
	// Started is true once the room's m.room.create was read: its history
	// is complete from the start.
	Started bool `json:"started,omitempty"`
	// Reason says why the room failed, or why its history is incomplete.
	Reason string `json:"reason,omitempty"`
	// FailedIn is the phase a failed room was in, resumed at the next run.
	FailedIn string `json:"failed_in,omitempty"`
	// Live is set when the room reached events mirror mode recorded.
	Live    bool      `json:"live,omitempty"`
	Updated time.Time `json:"updated"`
}

// pastMember is a member's state in a room as the backfill has read it.
type pastMember struct {
	Membership string `json:"m"`
	DN         string `json:"dn,omitempty"`
	AV         string `json:"av,omitempty"`
	// Override is set per field while the room shows a per-room value.
	OverrideDN bool `json:"odn,omitempty"`
	OverrideAV bool `json:"oav,omitempty"`
}

func (m *pastMember) value(field string) string {
	if field == domain.KeyAvatarURL {
		return m.AV
	}
	return m.DN
}

func (m *pastMember) override(field string) *bool {
	if field == domain.KeyAvatarURL {
		return &m.OverrideAV
	}
	return &m.OverrideDN
}

// pastGlobal is a global change the backfill recorded.
type pastGlobal struct {
	Value string `json:"v"`
}

// OpenBackfillCheckpoint opens (or creates) the checkpoint file. A second
// backfill on the same file waits a second and then says one is running.
func OpenBackfillCheckpoint(path string) (*BackfillCheckpoint, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use: another backfill is running on this data directory", path)
	}
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketRooms, bucketMembers, bucketCands, bucketGlobals, bucketUsers, bucketLast} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &BackfillCheckpoint{db: db}, nil
}

// Close closes the file.
func (c *BackfillCheckpoint) Close() error { return c.db.Close() }

func key(parts ...string) []byte {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// addRoom records a room to backfill, read as reader; a room already
// known keeps its progress (a failed one is retried where it failed).
func (c *BackfillCheckpoint) addRoom(room domain.RoomID, reader domain.UserID) error {
	return c.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRooms)
		if raw := b.Get([]byte(room)); raw != nil {
			var p RoomProgress
			if json.Unmarshal(raw, &p) == nil && p.Phase == PhaseFailed {
				p.Phase, p.Reason = p.FailedIn, ""
				if reader != "" {
					p.Reader = reader
				}
				return putJSON(b, []byte(room), p)
			}
			return nil
		}
		return putJSON(b, []byte(room), RoomProgress{Reader: reader, Phase: PhaseSurvey, Updated: time.Now().UTC()})
	})
}

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// noteUser records why a user's rooms could not be listed ("" clears it).
func (c *BackfillCheckpoint) noteUser(user domain.UserID, reason string) error {
	return c.db.Update(func(tx *bbolt.Tx) error {
		if reason == "" {
			return tx.Bucket(bucketUsers).Delete([]byte(user))
		}
		return tx.Bucket(bucketUsers).Put([]byte(user), []byte(reason))
	})
}

// Rooms calls fn for each room in id order with its progress.
func (c *BackfillCheckpoint) Rooms(fn func(room domain.RoomID, p RoomProgress) error) error {
	type item struct {
		room domain.RoomID
		p    RoomProgress
	}
	// Read in batches so that fn may write (a bbolt read transaction
	// would hold the file while fn runs).
	var after []byte
	for {
		var batch []item
		err := c.db.View(func(tx *bbolt.Tx) error {
			cur := tx.Bucket(bucketRooms).Cursor()
			k, v := cur.First()
			if after != nil {
				k, v = cur.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = cur.Next()
				}
			}
			for ; k != nil && len(batch) < 256; k, v = cur.Next() {
				var p RoomProgress
				if err := json.Unmarshal(v, &p); err != nil {
					return fmt.Errorf("checkpoint of %s: %w", k, err)
				}
				batch = append(batch, item{domain.RoomID(k), p})
			}
			return nil
		})
		if err != nil || len(batch) == 0 {
			return err
		}
		for _, it := range batch {
			if err := fn(it.room, it.p); err != nil {
				return err
			}
		}
		after = []byte(batch[len(batch)-1].room)
	}
}

// Users calls fn for each user whose rooms could not be listed.
func (c *BackfillCheckpoint) Users(fn func(user domain.UserID, reason string)) error {
	return c.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			fn(domain.UserID(k), string(v))
			return nil
		})
	})
}

// pageState is one page's changes, read through to the file and
// committed with the room's progress in one transaction.
type pageState struct {
	c       *BackfillCheckpoint
	phase   string
	room    domain.RoomID
	members map[domain.UserID]*pastMember
	cands   map[string][]byte
	globals map[string]pastGlobal
	last    map[string]int64
}

func (c *BackfillCheckpoint) page(phase string, room domain.RoomID) *pageState {
	return &pageState{c: c, phase: phase, room: room, members: map[domain.UserID]*pastMember{},
		cands: map[string][]byte{}, globals: map[string]pastGlobal{}, last: map[string]int64{}}
}

// member returns the member's state so far (a copy the page may change).
func (s *pageState) member(user domain.UserID) (*pastMember, error) {
	if m := s.members[user]; m != nil {
		return m, nil
	}
	m := &pastMember{}
	err := s.c.db.View(func(tx *bbolt.Tx) error {
		if raw := tx.Bucket(bucketMembers).Get(key(s.phase, string(s.room), string(user))); raw != nil {
			return json.Unmarshal(raw, m)
		}
		return nil
	})
	s.members[user] = m
	return m, err
}

func valueHash(v string) string {
	h := sha256.Sum256([]byte(v))
	return string(h[:8])
}

func msKey(k []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(k, uint64(ms)^(1<<63)) // sign flipped: negative times sort first
}

func msOf(k []byte) int64 { return int64(binary.BigEndian.Uint64(k[len(k)-8:]) ^ (1 << 63)) }

// addChange records an in-room name change the survey saw.
func (s *pageState) addChange(user domain.UserID, field, value string, ms int64, eventID string) {
	k := msKey(append(key(string(user), field, valueHash(value)), 0), ms)
	k = append(append(k, 0), s.room...)
	s.cands[string(k)] = []byte(eventID)
	lk := string(key(string(user), field))
	if cur, ok := s.last[lk]; !ok || ms > cur {
		s.last[lk] = ms
	}
}

// lastChange is the time of the user's last in-room change of field the
// survey saw, in any room (false when none).
func (s *pageState) lastChange(user domain.UserID, field string) (int64, bool, error) {
	var ms int64
	found := false
	err := s.c.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketLast).Get(key(string(user), field)); len(v) == 8 {
			ms, found = int64(binary.BigEndian.Uint64(v)), true
		}
		return nil
	})
	return ms, found, err
}

// changeElsewhere finds the same change (user, field, value) in another
// room within window of ms; it returns the earliest such change (this
// one included) and its event id.
func (s *pageState) changeElsewhere(user domain.UserID, field, value string, ms int64, window time.Duration) (first int64, firstEvent string, found bool, err error) {
	prefix := append(key(string(user), field, valueHash(value)), 0)
	lo, hi := msKey(bytes.Clone(prefix), ms-window.Milliseconds()), msKey(bytes.Clone(prefix), ms+window.Milliseconds()+1)
	first = ms
	err = s.c.db.View(func(tx *bbolt.Tx) error {
		cur := tx.Bucket(bucketCands).Cursor()
		for k, v := cur.Seek(lo); k != nil && bytes.Compare(k, hi) < 0; k, v = cur.Next() {
			at := msOf(k[:len(prefix)+8])
			room := domain.RoomID(k[len(prefix)+9:])
			if room != s.room {
				found = true
			}
			if at < first || (at == first && firstEvent == "") {
				first, firstEvent = at, string(v)
			}
		}
		return nil
	})
	return first, firstEvent, found, err
}

// globalNear reports whether the backfill recorded a global change of the
// user's field to value within window of ms, and the last global value
// recorded at or before ms (known false when none).
func (s *pageState) globalNear(user domain.UserID, field, value string, ms int64, window time.Duration) (near bool, before string, known bool, err error) {
	prefix := append(key(string(user), field), 0)
	lo, hi := ms-window.Milliseconds(), ms+window.Milliseconds()
	beforeAt := int64(0)
	consider := func(at int64, g pastGlobal) {
		if g.Value == value && at >= lo && at <= hi {
			near = true
		}
		if at <= ms && (!known || at >= beforeAt) {
			before, beforeAt, known = g.Value, at, true
		}
	}
	for k, g := range s.globals { // this page's own
		if bytes.HasPrefix([]byte(k), prefix) {
			consider(msOf([]byte(k)), g)
		}
	}
	err = s.c.db.View(func(tx *bbolt.Tx) error {
		cur := tx.Bucket(bucketGlobals).Cursor()
		end := msKey(bytes.Clone(prefix), hi+1)
		for k, v := cur.Seek(msKey(bytes.Clone(prefix), lo)); k != nil && bytes.Compare(k, end) < 0; k, v = cur.Next() {
			var g pastGlobal
			if json.Unmarshal(v, &g) == nil {
				consider(msOf(k), g)
			}
		}
		// The last one at or before ms, which may lie before the window.
		var k, v []byte
		if k, _ = cur.Seek(msKey(bytes.Clone(prefix), ms+1)); k == nil {
			k, v = cur.Last()
		} else {
			k, v = cur.Prev()
		}
		if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
			var g pastGlobal
			if json.Unmarshal(v, &g) == nil {
				consider(msOf(k), g)
			}
		}
		return nil
	})
	return near, before, known, err
}

func (s *pageState) addGlobal(user domain.UserID, field, value string, ms int64) {
	s.globals[string(msKey(append(key(string(user), field), 0), ms))] = pastGlobal{Value: value}
}

// commit writes the page's changes and the room's progress.
func (s *pageState) commit(p RoomProgress) error {
	p.Updated = time.Now().UTC()
	return s.c.db.Update(func(tx *bbolt.Tx) error {
		mb := tx.Bucket(bucketMembers)
		for u, m := range s.members {
			if err := putJSON(mb, key(s.phase, string(s.room), string(u)), m); err != nil {
				return err
			}
		}
		cb := tx.Bucket(bucketCands)
		for k, v := range s.cands {
			if err := cb.Put([]byte(k), v); err != nil {
				return err
			}
		}
		gb := tx.Bucket(bucketGlobals)
		for k, g := range s.globals {
			if err := putJSON(gb, []byte(k), g); err != nil {
				return err
			}
		}
		lb := tx.Bucket(bucketLast)
		for k, ms := range s.last {
			if v := lb.Get([]byte(k)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= ms {
				continue
			}
			if err := lb.Put([]byte(k), binary.BigEndian.AppendUint64(nil, uint64(ms))); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketRooms), []byte(s.room), p)
	})
}

// dropMembers forgets a phase's member states of a room (after the phase).
func (c *BackfillCheckpoint) dropMembers(phase string, room domain.RoomID) error {
	prefix := append(key(phase, string(room)), 0)
	for {
		n := 0
		err := c.db.Update(func(tx *bbolt.Tx) error {
			cur := tx.Bucket(bucketMembers).Cursor()
			for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < 10_000; k, _ = cur.Seek(prefix) {
				if err := cur.Delete(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil || n < 10_000 {
			return err
		}
	}
}

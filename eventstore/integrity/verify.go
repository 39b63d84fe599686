package integrity

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/profilestore/profilestore/eventstore"
)

// BreakKind names what is wrong at a place in the log.
type BreakKind string

const (
	// Changed: the event's stored bytes do not hash to its event_hash.
	Changed BreakKind = "changed"
	// Missing: the stream skips revisions; events were dropped before this one.
	Missing BreakKind = "missing"
	// Reordered: the event's revision is not after its predecessor's.
	Reordered BreakKind = "reordered"
	// BrokenLink: the event's prev_hash is not its predecessor's hash.
	BrokenLink BreakKind = "broken_link"
	// Unchained: an event of a covered stream without chain members after
	// the genesis seal.
	Unchained BreakKind = "unchained"
	// Malformed: chain members or a seal payload not in the documented form.
	Malformed BreakKind = "malformed"
	// BadRoot: a seal's Merkle root is not that of its window's heads.
	BadRoot BreakKind = "bad_root"
	// ForgedSeal: a seal's signature does not verify or names an unknown key.
	ForgedSeal BreakKind = "forged_seal"
	// MissingSeal: seals skip a sequence number, or a seal's prev_seal is
	// not the previous seal's hash.
	MissingSeal BreakKind = "missing_seal"
	// Truncated: the log ends before a seal a witness kept.
	Truncated BreakKind = "truncated"
)

// Break is one place where the log is not what its chains and seals say.
type Break struct {
	Kind     BreakKind `json:"kind"`
	Stream   string    `json:"stream"`
	Revision uint64    `json:"revision"`
	Position string    `json:"position"`
	Detail   string    `json:"detail"`
}

func (b Break) String() string {
	return fmt.Sprintf("%s at %s revision %d (position %s): %s", b.Kind, b.Stream, b.Revision, b.Position, b.Detail)
}

// SealRef locates a seal in the log that was verified.
type SealRef struct {
	Seal
	Position  string `json:"position"`
	EventHash Hash   `json:"event_hash"`
}

// Report is the outcome of a verification.
type Report struct {
	Events uint64  `json:"events"`
	Seals  uint64  `json:"seals"`
	Breaks []Break `json:"breaks"`
	// LastSeal is the last seal that verified (signature, root and chain),
	// nil if none did.
	LastSeal *SealRef `json:"last_seal,omitempty"`
	// Unsealed counts covered events after the last seal's window.
	Unsealed uint64 `json:"unsealed"`
}

// OK reports whether nothing was broken.
func (r *Report) OK() bool { return len(r.Breaks) == 0 }

// streamState is what the verifier knows of a stream's last event.
type streamState struct {
	revision uint64
	// win is 1 + the index (counted from the start of the walk) of the
	// stream's last event in the window list, 0 if none: so the next event
	// of the stream marks that one as no longer the stream's head.
	win  uint64
	hash Hash
	// chained: the last event carried its own hash.
	chained bool
}

// windowChunk is how many window events one block of the window list
// holds: the list grows by blocks, never by copying what it holds (a
// genesis seal's window is the whole log).
const windowChunk = 4096

// windowList is the current seal window's covered events, in log order, in
// blocks of windowChunk.
type windowList struct {
	blocks [][]windowEvent
	n      int
}

func (w *windowList) len() int { return w.n }

func (w *windowList) at(i int) *windowEvent { return &w.blocks[i/windowChunk][i%windowChunk] }

func (w *windowList) push(e windowEvent) {
	if w.n%windowChunk == 0 && w.n/windowChunk == len(w.blocks) {
		w.blocks = append(w.blocks, make([]windowEvent, windowChunk))
	}
	*w.at(w.n) = e
	w.n++
}

// truncate keeps the first n events, and the blocks they need.
func (w *windowList) truncate(n int) {
	w.n = n
	keep := min(len(w.blocks), max(1, (w.n+windowChunk-1)/windowChunk))
	clear(w.blocks[keep:])
	w.blocks = w.blocks[:keep]
}

// dropFirst removes the first k events, moving the rest to the front and
// keeping the first block for reuse.
func (w *windowList) dropFirst(k int) {
	for i := k; i < w.n; i++ {
		*w.at(i - k) = *w.at(i)
	}
	w.truncate(w.n - k)
}

// windowEvent is a covered event of the current seal window.
type windowEvent struct {
	Head
	// next is 1 + the index of the stream's next event in the window list,
	// 0 while this is the stream's last: a seal's heads are the events of
	// its window whose next event is not in that window.
	next uint64
}

// Verifier checks a log fed to it in log order (Add), event by event, and
// collects every break. Memory is one entry per stream plus the current
// seal window.
type Verifier struct {
	keys    []ed25519.PublicKey
	streams streamTable
	// window: the covered events of the current seal window, in log order;
	// windowBase is the index of window[0] counted from the walk's start.
	window     windowList
	windowBase uint64
	// Predecessor, if set, is asked for the event before the first one
	// seen of a stream whose first seen revision is not 0 (verify --since).
	predecessor func(stream string, revision uint64) (eventstore.RecordedEvent, bool, error)

	lastSeal    *SealRef
	genesisSeen bool
	// trustSeq: the seal with this seq starts the verification (--since):
	// its window lies before the walk, so only its signature is checked.
	trustSeq uint64
	// witness is a seal kept outside the log (SetWitness).
	witness *Seal
	report  Report
	hasher  eventHasher
	merkle  merkleScratch
	// heads and sorter are a seal's heads and their sort, kept for the
	// next seal.
	heads  []Head
	sorter headSorter
	// compactedBelow is the index (counted from the walk's start) of the
	// first window event compactWindow left as it was: the events before
	// it may have been thinned out. droppedUnsealed counts the covered
	// events it dropped that no seal has covered yet.
	compactedBelow  uint64
	droppedUnsealed uint64
	// compactAt is the window length at which compactWindow runs next (0:
	// twice windowKeep): windowKeep more events than it left.
	compactAt int
}

// windowKeep is how many of the newest window events compactWindow keeps
// as they are. The seal writer seals every 1000 events or 750 ms, so a
// seal's through-event is a few thousand events before it at most.
var windowKeep = 1 << 18

// compactWindow bounds the window of a log that goes on for long without a
// seal (a log written without a signing key has none): of the events
// before the newest windowKeep, it drops each one that a later event of
// its stream, also before the newest windowKeep, supersedes. What stays is
// at most one older event per stream and the newest windowKeep events: the
// exact heads of any seal whose through-event is among those newest ones.
func (v *Verifier) compactWindow() {
	n := v.window.len()
	cut := n - windowKeep
	if cut <= 0 {
		return
	}
	cutAbs := v.windowBase + uint64(cut)
	newIndex := make([]uint32, cut)
	kept := 0
	for i := range cut {
		e := v.window.at(i)
		if e.next != 0 && e.next-1 < cutAbs {
			if e.Stream != SealStream {
				v.droppedUnsealed++
			}
			continue
		}
		newIndex[i] = uint32(kept)
		*v.window.at(kept) = *e
		kept++
	}
	removed := uint64(cut - kept)
	// What the old events that stay link to is among the newest, which
	// move down by what was dropped.
	for i := range kept {
		if e := v.window.at(i); e.next != 0 {
			e.next -= removed
		}
	}
	for i := cut; i < n; i++ {
		e := *v.window.at(i)
		if e.next != 0 {
			e.next -= removed
		}
		*v.window.at(i - int(removed)) = e
	}
	v.window.truncate(n - int(removed))
	// The stream table points at each stream's last window event.
	for k := range v.streams.entries {
		st := &v.streams.entries[k].state
		switch w := st.win; {
		case w <= v.windowBase:
		case w-1 < cutAbs:
			st.win = v.windowBase + uint64(newIndex[w-1-v.windowBase]) + 1
		default:
			st.win = w - removed
		}
	}
	v.compactedBelow = v.windowBase + uint64(kept)
}

// SetWitness gives the verifier a seal a witness kept: the log's seal of
// that number must be the same, and a log that ends before it is reported
// as truncated.
func (v *Verifier) SetWitness(s *Seal) { v.witness = s }

// NewVerifier verifies seals with the given public keys (none: every seal
// is reported as forged).
func NewVerifier(keys []ed25519.PublicKey) *Verifier {
	return &Verifier{keys: keys, streams: newStreamTable(0)}
}

func (v *Verifier) fail(kind BreakKind, rec *eventstore.RecordedEvent, format string, args ...any) {
	v.report.Breaks = append(v.report.Breaks, Break{Kind: kind, Stream: rec.Stream, Revision: rec.Revision,
		Position: rec.Position.String(), Detail: fmt.Sprintf(format, args...)})
}

// Prepared is the part of an event's check that needs no other event: its
// hash from its own bytes. Prepare runs on many events at once (VerifyStore
// hashes a batch on every core); Add then checks them in log order.
type Prepared struct {
	hash Hash
	// key is the stream's key in the verifier's stream table, if keyed.
	key   uint64
	keyed bool
	// prev and stored are the event's prev_hash and event_hash, if chained.
	prev, stored Hash
	err          error
	chained      bool
	ready        bool // hash is final (a chained or malformed event)
}

// Prepare hashes a chained event from its bytes; an unchained event's hash
// depends on its predecessor's and is computed by Add.
func Prepare(rec *eventstore.RecordedEvent) Prepared {
	var h eventHasher
	return h.prepare(rec)
}

func (e *eventHasher) prepare(rec *eventstore.RecordedEvent) Prepared {
	if !Covered(rec.Stream) {
		return Prepared{ready: true}
	}
	l, prefix, err := readLink(rec.Metadata)
	switch {
	case err != nil:
		return Prepared{err: err}
	case l.Chained:
		return Prepared{hash: e.sum(l.Prev, rec.Stream, rec.Revision, rec.ID, rec.Type, rec.Data, prefix, closingBrace),
			prev: l.Prev, stored: l.Hash, chained: true, ready: true}
	}
	return Prepared{}
}

// notes collects what is wrong with one event: the first kind and every
// detail.
type notes struct {
	kind     BreakKind
	problems []string
}

func (n *notes) note(k BreakKind, format string, args ...any) {
	if n.kind == "" {
		n.kind = k
	}
	n.problems = append(n.problems, fmt.Sprintf(format, args...))
}

// Add checks the next event of the log.
func (v *Verifier) Add(rec *eventstore.RecordedEvent) error {
	p := v.hasher.prepare(rec)
	return v.AddPrepared(rec, &p)
}

// prepareKeyed is prepare with the stream's key in a stream table of that
// seed.
func (e *eventHasher) prepareKeyed(rec *eventstore.RecordedEvent, seed maphash.Seed) Prepared {
	p := e.prepare(rec)
	if Covered(rec.Stream) {
		p.key, p.keyed = streamKey(seed, rec.Stream), true
	}
	return p
}

// AddPrepared checks the next event of the log, prepared by Prepare.
func (v *Verifier) AddPrepared(rec *eventstore.RecordedEvent, p *Prepared) error {
	v.report.Events++
	if !Covered(rec.Stream) {
		return nil
	}
	key := p.key
	if !p.keyed {
		key = streamKey(v.streams.seed, rec.Stream)
	}
	// at is the stream's entry if found, else the index slot for it.
	at, found := v.streams.find(rec.Stream, key)
	var st *streamState
	if found {
		s := v.streams.entries[at].state
		st = &s
	}
	if st == nil && rec.Revision > 0 && v.predecessor != nil {
		prev, found, err := v.predecessor(rec.Stream, rec.Revision-1)
		if err != nil {
			return err
		}
		if found {
			h, l, err := Recompute(&prev, Zero)
			if err != nil || !l.Chained || h != l.Hash {
				v.fail(Changed, &prev, "the event before the verified part does not hash to its event_hash")
			}
			st = &streamState{revision: prev.Revision, hash: l.Hash, chained: true}
		}
	}
	var prev Hash
	if st != nil {
		prev = st.hash
	}
	hash, err := p.hash, p.err
	link := Link{Chained: p.chained, Prev: p.prev, Hash: p.stored}
	if !p.ready {
		hash = v.hasher.sum(prev, rec.Stream, rec.Revision, rec.ID, rec.Type, rec.Data, rec.Metadata, nil)
	}
	var n notes
	switch {
	case err != nil:
		n.note(Malformed, "%v", err)
	case link.Chained:
		if hash != link.Hash {
			n.note(Changed, "the stored bytes hash to %s, event_hash says %s", hash, link.Hash)
			// Successors link to the stored hash: report this event alone.
			hash = link.Hash
		}
	case v.genesisSeen:
		// Before the genesis seal, unchained events are those written
		// before chaining (or by an older binary): the virtual chain
		// links them, and the genesis seal covers them.
		n.note(Unchained, "no prev_hash / event_hash in the metadata, after the genesis seal")
	}
	switch {
	case st == nil && rec.Revision != 0 && v.predecessor == nil:
		n.note(Missing, "the stream starts at revision %d; revisions 0 to %d are missing", rec.Revision, rec.Revision-1)
	case st != nil && rec.Revision <= st.revision:
		n.note(Reordered, "revision %d comes after revision %d", rec.Revision, st.revision)
	case st != nil && rec.Revision > st.revision+1:
		n.note(Missing, "revisions %d to %d are missing", st.revision+1, rec.Revision-1)
	}
	if link.Chained && err == nil && link.Prev != prev && (st != nil || rec.Revision == 0) && n.kind != Missing && n.kind != Reordered {
		if st != nil && !st.chained {
			n.note(BrokenLink, "prev_hash %s is not the hash of the stream's earlier events (%s): events written before chaining were changed or dropped", link.Prev, prev)
		} else {
			n.note(BrokenLink, "prev_hash %s is not the hash of the stream's previous event (%s)", link.Prev, prev)
		}
	}
	// An event that comes back from earlier in its stream (two events
	// swapped) leaves the stream's state where it was, so the events after
	// it are checked against the right predecessor.
	if n.kind != Reordered {
		idx := v.windowBase + uint64(v.window.len())
		if st != nil && st.win > v.windowBase {
			v.window.at(int(st.win - 1 - v.windowBase)).next = idx + 1
		}
		next := streamState{revision: rec.Revision, hash: hash, chained: link.Chained, win: idx + 1}
		if found {
			v.streams.entries[at].state = next
		} else if err := v.streams.add(at, rec.Stream, key, next); err != nil {
			return err
		}
		v.window.push(windowEvent{Head: Head{Stream: rec.Stream, Revision: rec.Revision, Hash: hash}})
		if l := v.window.len(); l >= v.compactAt && l >= 2*windowKeep {
			v.compactWindow()
			v.compactAt = v.window.len() + windowKeep
		}
	}

	if rec.Stream == SealStream && rec.Type == SealType {
		v.checkSeal(rec, hash, &n)
	}
	if len(n.problems) > 0 {
		v.fail(n.kind, rec, "%s", strings.Join(n.problems, "; "))
	}
	return nil
}

// checkSeal checks a seal event: signature, sequence, chain to the previous
// seal and the Merkle root of its window.
func (v *Verifier) checkSeal(rec *eventstore.RecordedEvent, eventHash Hash, n *notes) {
	v.report.Seals++
	s, err := ParseSeal(rec.Data)
	if err != nil {
		n.note(Malformed, "%v", err)
		return
	}
	good := true
	if err := s.VerifySignature(v.keys); err != nil {
		n.note(ForgedSeal, "%v", err)
		good = false
	}
	trusted := v.trustSeq != 0 && s.Seq == v.trustSeq && v.lastSeal == nil
	switch {
	case trusted:
	case v.lastSeal == nil && s.Seq != 1 && v.trustSeq == 0:
		n.note(MissingSeal, "seal %d is the first in the log; seals 1 to %d are missing", s.Seq, s.Seq-1)
		good = false
	case v.lastSeal != nil && s.Seq != v.lastSeal.Seq+1:
		n.note(MissingSeal, "seal %d follows seal %d", s.Seq, v.lastSeal.Seq)
		good = false
	case v.lastSeal != nil && s.PrevSeal != v.lastSeal.EventHash:
		n.note(MissingSeal, "prev_seal %s is not the hash of seal %d (%s)", s.PrevSeal, v.lastSeal.Seq, v.lastSeal.EventHash)
		good = false
	case v.lastSeal == nil && s.Seq == 1 && s.PrevSeal != Zero:
		n.note(MissingSeal, "the genesis seal has a prev_seal")
		good = false
	}
	if w := v.witness; w != nil && w.Seq == s.Seq && (w.Root != s.Root || w.Through != s.Through || w.PrevSeal != s.PrevSeal || !w.SealedAt.Equal(s.SealedAt)) {
		n.note(ForgedSeal, "seal %d differs from the copy a witness kept (root %s): the log was rewritten", s.Seq, w.Root)
		good = false
	}
	// Split the window at the seal's through event; what follows it (and
	// this seal event) belongs to the next window.
	end := -1
	for i := v.window.len() - 1; i >= 0; i-- {
		if e := v.window.at(i); e.Stream == s.Through.Stream && e.Revision == s.Through.Revision {
			end = i
			break
		}
	}
	thinned := end >= 0 && v.windowBase+uint64(end) < v.compactedBelow
	if !trusted {
		switch {
		case end < 0 && v.compactedBelow > v.windowBase:
			n.note(BadRoot, "the seal's last event (%s revision %d) is not in its window, or lies further before the seal than the %d events verify keeps", s.Through.Stream, s.Through.Revision, windowKeep)
			good = false
		case end < 0:
			n.note(BadRoot, "the seal's last event (%s revision %d) is not in its window", s.Through.Stream, s.Through.Revision)
			good = false
		case thinned:
			n.note(BadRoot, "the seal's last event (%s revision %d) lies further before the seal than the %d events verify keeps: its root is not checked", s.Through.Stream, s.Through.Revision, windowKeep)
			good = false
		default:
			heads := v.windowHeads(end)
			root, err := v.merkle.root(heads)
			switch {
			case err != nil:
				n.note(BadRoot, "%v", err)
				good = false
			case root != s.Root || uint64(len(heads)) != s.Streams:
				n.note(BadRoot, "the window's %d stream heads have root %s, the seal says %d with root %s", len(heads), root, s.Streams, s.Root)
				good = false
			}
		}
	}
	// The walk of a trusted seal starts after its last event: all it has
	// seen belongs to the next window.
	if end >= 0 && !trusted {
		v.window.dropFirst(end + 1)
		v.windowBase += uint64(end + 1)
		if v.windowBase >= v.compactedBelow {
			v.droppedUnsealed = 0 // every event it dropped came before this seal's
		}
		v.compactAt = v.window.len() + windowKeep
	}
	v.genesisSeen = true
	// Follow the seal chain from every seal, good or not, so one bad seal
	// is reported once and not again at every later one.
	v.lastSeal = &SealRef{Seal: s, Position: rec.Position.String(), EventHash: eventHash}
	if good {
		v.report.LastSeal = v.lastSeal
	}
}

// windowHeads returns the last event of each stream in window[:end+1],
// sorted: those whose stream's next event is later or not yet seen. A large
// window is split across cores, each collecting and sorting the heads of
// its part, and the parts merged.
func (v *Verifier) windowHeads(end int) []Head {
	last := v.windowBase + uint64(end) + 1 // 1 + the index of window[end]
	collect := func(heads []Head, s *headSorter, lo, hi int) []Head {
		for i := lo; i < hi; i++ {
			if e := v.window.at(i); e.next == 0 || e.next > last {
				heads = append(heads, e.Head)
			}
		}
		s.sort(heads)
		return heads
	}
	workers := runtime.GOMAXPROCS(0)
	if end+1 < parallelSort || workers == 1 {
		// The seal's check is done with them before the next seal's.
		v.heads = collect(v.heads[:0], &v.sorter, 0, end+1)
		return v.heads
	}
	chunk := (end + workers) / workers
	runs := make([][]Head, (end+chunk)/chunk)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			var s headSorter
			runs[i] = collect(make([]Head, 0, hi-lo), &s, lo, hi)
		}(i*chunk, min((i+1)*chunk, end+1))
	}
	wg.Wait()
	n := 0
	for _, r := range runs {
		n += len(r)
	}
	if n == 0 {
		return nil
	}
	return mergeRuns(runs, n)
}

// Finish ends the walk and returns the report. A log that ends before the
// witness's seal (SetWitness) is reported as truncated.
func (v *Verifier) Finish() Report {
	v.report.Unsealed += v.droppedUnsealed
	for i := 0; i < v.window.len(); i++ {
		if v.window.at(i).Stream != SealStream {
			v.report.Unsealed++
		}
	}
	if w := v.witness; w != nil && (v.lastSeal == nil || v.lastSeal.Seq < w.Seq) {
		last := uint64(0)
		if v.lastSeal != nil {
			last = v.lastSeal.Seq
		}
		v.report.Breaks = append(v.report.Breaks, Break{Kind: Truncated, Stream: SealStream, Revision: w.Seq - 1,
			Detail: fmt.Sprintf("the log ends after seal %d, but a witness holds seal %d (root %s): events were removed from the end", last, w.Seq, w.Root)})
	}
	return v.report
}

// Progress is told how many events were checked so far, of about total.
type Progress func(done, total uint64)

// VerifyStore walks the whole log of a store. since, if not zero, starts
// at that seal (which must verify) and checks only what follows it.
func VerifyStore(ctx context.Context, store eventstore.Store, keys []ed25519.PublicKey, since uint64, witness *Seal, progress Progress) (Report, error) {
	v := NewVerifier(keys)
	v.SetWitness(witness)
	after := eventstore.Start
	if since != 0 {
		seal, _, err := FindSeal(ctx, store, since)
		if err != nil {
			return Report{}, err
		}
		through, err := readOne(ctx, store, seal.Through.Stream, seal.Through.Revision)
		if err != nil {
			return Report{}, fmt.Errorf("integrity: --since %d: the seal's last event: %w", since, err)
		}
		after = through.Position
		v.trustSeq = since
		v.genesisSeen = true
		v.predecessor = func(stream string, revision uint64) (eventstore.RecordedEvent, bool, error) {
			rec, err := readOne(ctx, store, stream, revision)
			if errors.Is(err, errNotFound) {
				return rec, false, nil
			}
			return rec, err == nil, err
		}
	}
	head, err := store.Head(ctx)
	if err != nil {
		return Report{}, err
	}
	total := head.Commit - min(after.Commit, head.Commit)
	// Size the stream table for the log up front (bounded: a log of many
	// events per stream needs far fewer entries): growing it re-hashes
	// every stream seen so far, and copies the entries and names.
	v.streams = newStreamTable(min(total, streamTableHint))
	// Read the next page while this one is hashed, and hash a page on every
	// core: the checks in log order that follow are cheap.
	read := readPages(store, v.predecessor == nil)
	ctx, cancel := context.WithCancel(ctx)
	pages := make(chan page, 2)
	// Pages' events come back for reuse once checked.
	spare := make(chan []eventstore.RecordedEvent, 5)
	go func() {
		defer close(pages)
		for {
			var into []eventstore.RecordedEvent
			select {
			case into = <-spare:
			default:
			}
			pg, err := read(ctx, after, into)
			if err != nil || len(pg.recs) == 0 {
				pg.release()
				if err != nil {
					pages <- page{err: err, release: noRelease}
				}
				return
			}
			after = pg.recs[len(pg.recs)-1].Position
			select {
			case pages <- pg:
			case <-ctx.Done():
				pg.release()
				return
			}
		}
	}()
	// Hash the next page while this one's links are checked in log order.
	type preparedPage struct {
		page
		prepared []Prepared
	}
	ready := make(chan preparedPage, 1)
	// Every page read is released: by the check, or here when the walk
	// ends early (an error, or ctx). Nothing is left running after it.
	defer func() {
		cancel()
		for pg := range ready {
			pg.release()
		}
	}()
	// Prepared pages come back for reuse once checked: at most three are
	// in use (being hashed, waiting, being checked).
	free := make(chan []Prepared, 3)
	go func() {
		defer close(ready)
		workers := runtime.GOMAXPROCS(0)
		hashers := make([]eventHasher, workers)
		seed := v.streams.seed
		for pg := range pages {
			if pg.err != nil {
				// The reader stops after an error: pass it on.
				select {
				case ready <- preparedPage{page: pg}:
				case <-ctx.Done():
				}
				continue
			}
			if ctx.Err() != nil {
				// What the reader read before it saw ctx end.
				pg.release()
				continue
			}
			recs := pg.recs
			var prepared []Prepared
			select {
			case prepared = <-free:
			default:
			}
			if cap(prepared) < len(recs) {
				prepared = make([]Prepared, len(recs))
			}
			prepared = prepared[:len(recs)]
			var wg sync.WaitGroup
			chunk := (len(recs) + workers - 1) / workers
			for w := 0; w < workers; w++ {
				lo, hi := w*chunk, min((w+1)*chunk, len(recs))
				if lo >= hi {
					break
				}
				wg.Add(1)
				go func(h *eventHasher) {
					defer wg.Done()
					touchPayloads(recs[lo:hi])
					for i := lo; i < hi; i++ {
						prepared[i] = h.prepareKeyed(&recs[i], seed)
					}
				}(&hashers[w])
			}
			wg.Wait()
			select {
			case ready <- preparedPage{page: pg, prepared: prepared}:
			case <-ctx.Done():
				pg.release()
			}
		}
	}()
	var done uint64
	for pg := range ready {
		if pg.err != nil {
			return Report{}, pg.err
		}
		v.streams.touch(pg.prepared)
		for i := range pg.recs {
			if err := v.AddPrepared(&pg.recs[i], &pg.prepared[i]); err != nil {
				pg.release()
				return Report{}, err
			}
		}
		done += uint64(len(pg.recs))
		pg.release()
		select {
		case free <- pg.prepared:
		default:
		}
		select {
		case spare <- pg.recs[:0]:
		default:
		}
		if progress != nil {
			progress(min(done, total), total)
		}
	}
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	return v.Finish(), nil
}

// page is a page of the log VerifyStore reads, and what releases it.
type page struct {
	recs    []eventstore.RecordedEvent
	release func()
	err     error
}

func noRelease() {}

// touchPayloads reads one byte of every cache line of the events' Data
// and Metadata before they are hashed: the reads depend on nothing, so
// their cache misses overlap, where the hash's own reads (the chain
// members at the metadata's end first) would wait for them one at a time.
// A lent page's bytes were never read before (nothing copied them).
func touchPayloads(recs []eventstore.RecordedEvent) {
	var sum byte
	for i := range recs {
		for _, b := range [2][]byte{recs[i].Data, recs[i].Metadata} {
			for at := 0; at < len(b); at += 64 {
				sum += b[at]
			}
			if len(b) > 0 {
				sum += b[len(b)-1]
			}
		}
	}
	touched.Add(uint32(sum))
}

// touched keeps touchPayloads' reads from being optimised away.
var touched atomic.Uint32

// readPages returns how VerifyStore reads the page after a position:
// through eventstore.LogLender where the store lends pages (and lend is
// true), so that no event is copied, or through ReadAll. A lent page is
// released once it is checked, so each holds the store's snapshot for
// about the time of three pages' checks. The walk of verify --since
// reads predecessors while it holds pages, which a store that waits for
// lent pages to come back before a write (bbolt's remap of a growing
// file, while new reads wait behind that write) could not serve: it
// reads through ReadAll.
func readPages(store eventstore.Store, lend bool) func(context.Context, eventstore.Position, []eventstore.RecordedEvent) (page, error) {
	if l, ok := store.(eventstore.LogLender); ok && lend {
		return func(ctx context.Context, after eventstore.Position, into []eventstore.RecordedEvent) (page, error) {
			recs, release, err := l.LendAll(ctx, after, verifyPage, into)
			if release == nil {
				release = noRelease
			}
			return page{recs: recs, release: release}, err
		}
	}
	return func(ctx context.Context, after eventstore.Position, _ []eventstore.RecordedEvent) (page, error) {
		recs, err := store.ReadAll(ctx, after, verifyPage)
		return page{recs: recs, release: noRelease}, err
	}
}

// verifyPage is how many events VerifyStore reads at a time. Pages of 4096
// (the raw scan's) cost verify a fifth more CPU on the bench's log than
// pages of 1024: a page's records are 600 KiB, grown by doubling and
// cleared, and four pages are in flight (read, waiting, hashed, checked),
// which leaves the caches for memory; the pipeline also fills and drains
// faster with smaller pages.
const verifyPage = 1024

// streamTableHint bounds the stream table's initial size: 2 MiB of index,
// and room for 8 MiB of entries and 4 MiB of names, touched as they fill.
const streamTableHint = 1 << 17

var errNotFound = errors.New("integrity: event not found")

func readOne(ctx context.Context, store eventstore.Store, stream string, revision uint64) (eventstore.RecordedEvent, error) {
	recs, err := store.ReadStream(ctx, stream, revision, eventstore.Forwards, 1)
	if err != nil {
		return eventstore.RecordedEvent{}, err
	}
	if len(recs) == 0 || recs[0].Revision != revision {
		return eventstore.RecordedEvent{}, fmt.Errorf("%w: %s revision %d", errNotFound, stream, revision)
	}
	return recs[0], nil
}

// FindSeal returns the seal with the given number and its event.
func FindSeal(ctx context.Context, store eventstore.Store, seq uint64) (Seal, eventstore.RecordedEvent, error) {
	// Seals are appended one at a time, so seal n is usually at revision
	// n-1; search backwards from there if a conflict ever shifted them.
	rev := seq - 1
	for {
		rec, err := readOne(ctx, store, SealStream, rev)
		if err != nil {
			return Seal{}, rec, fmt.Errorf("integrity: seal %d: %w", seq, err)
		}
		s, err := ParseSeal(rec.Data)
		if err != nil {
			return Seal{}, rec, err
		}
		if s.Seq == seq {
			return s, rec, nil
		}
		if s.Seq < seq || rev == 0 {
			return Seal{}, rec, fmt.Errorf("integrity: seal %d: %w", seq, errNotFound)
		}
		rev--
	}
}

// LatestSeal returns the last seal of the log and its event; found is false
// when the log has none.
func LatestSeal(ctx context.Context, store eventstore.Store) (Seal, eventstore.RecordedEvent, bool, error) {
	recs, err := store.ReadStream(ctx, SealStream, ^uint64(0), eventstore.Backwards, 1)
	if err != nil || len(recs) == 0 {
		return Seal{}, eventstore.RecordedEvent{}, false, err
	}
	s, err := ParseSeal(recs[0].Data)
	return s, recs[0], err == nil, err
}

// TrustFirst makes the verifier accept the first event it sees of each
// stream at any revision, linking to whatever it names: for a bounded
// export (--from), whose streams start after revision 0.
func (v *Verifier) TrustFirst() {
	v.predecessor = func(string, uint64) (eventstore.RecordedEvent, bool, error) {
		return eventstore.RecordedEvent{}, false, nil
	}
}

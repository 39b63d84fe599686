package viewstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// Pebble is a Store on github.com/cockroachdb/pebble/v2, an LSM tree.
// Its write-ahead log is off: the event log is the truth, and a crash loses
// only memtable batches newer than the last flush, a whole-batch prefix.
type Pebble struct {
	mu     sync.RWMutex
	db     *pebble.DB
	dir    string
	closed bool
	// stopTrim ends the loop that returns the C allocator's free pages.
	stopTrim chan struct{}
	trimDone chan struct{}
}

// trimInterval is how often an open store hands the pages the C allocator
// keeps free back to the system. With cgo, pebble's block cache allocates
// its blocks with malloc; glibc keeps what the cache evicts in per-thread
// arenas, fragmented by blocks of every size, and never gives it back on
// its own. Bench scale measured those arenas holding 91 MB (tenth size)
// and 173 MB (full size) for a block cache of 64 MiB.
var trimInterval = 10 * time.Second

// trimLoop returns the C allocator's free pages every trimInterval.
func (p *Pebble) trimLoop(trim func() bool) {
	defer close(p.trimDone)
	t := time.NewTicker(trimInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stopTrim:
			return
		case <-t.C:
			if !trim() {
				return // the C library cannot; nothing to do
			}
		}
	}
}

// PebbleOptions size the engine.
type PebbleOptions struct {
	// CacheBytes is the block cache (default 64 MiB).
	CacheBytes int64
	// MemTableBytes is each memtable (default 64 MiB).
	MemTableBytes uint64
}

// OpenPebble opens (creating if needed) a pebble store in dir.
func OpenPebble(dir string, o PebbleOptions) (*Pebble, error) {
	if o.CacheBytes <= 0 {
		o.CacheBytes = 64 << 20
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = 64 << 20
	}
	cache := pebble.NewCache(o.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		L0CompactionThreshold:       8,
		L0StopWritesThreshold:       64,
		Cache:                       cache,
		DisableWAL:                  true,
		MemTableSize:                o.MemTableBytes,
		MemTableStopWritesThreshold: 4,
		Logger:                      quietLogger{},
		Merger: &pebble.Merger{Name: "profilestore.counters.v1", Merge: func(_, value []byte) (pebble.ValueMerger, error) {
			m := &counterMerger{}
			return m, m.MergeNewer(value)
		}},
	}
	// Tables are not compressed: a compressed block can hold a name as
	// back-references to other bytes, which a scan for leftover plaintext
	// after an erasure would not see; the values are small varint records
	// and keys are prefix-compressed anyway.
	// Bloom filters answer most reads of keys that do not exist (a first
	// join, a user never seen) without reading a table's blocks. The last
	// level has none: pebble never reads a filter there (its filters are
	// most of all filter bytes, larger than its data blocks are worth to
	// load), so building them only cost compactions CPU and the disk 136
	// MiB at bench scale's full size.
	for i := range opts.Levels {
		opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		if i == len(opts.Levels)-1 {
			opts.Levels[i].FilterPolicy = pebble.NoFilterPolicy // nil would inherit the level above's
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open view store %s: %w", dir, err)
	}
	p := &Pebble{db: db, dir: dir, stopTrim: make(chan struct{}), trimDone: make(chan struct{})}
	go p.trimLoop(trimCMemory)
	return p, nil
}

// DiskBytes is the size of the engine's files.
func (p *Pebble) DiskBytes() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0
	}
	return p.db.Metrics().DiskSpaceUsage()
}

// EngineStats is what the engine keeps in memory, for /metrics: the
// block cache (bounded by PebbleOptions.CacheBytes), the open tables'
// readers, and the memtables (bounded by MemTableBytes times pebble's
// stop-writes threshold).
type EngineStats struct {
	BlockCacheBytes, BlockCacheHits, BlockCacheMisses int64
	// FileCacheBytes is the memory of the open tables' readers, and
	// OpenTables their number.
	FileCacheBytes, OpenTables int64
	MemTableBytes              uint64
}

// EngineStats reads the engine's memory figures (zero once closed).
func (p *Pebble) EngineStats() EngineStats {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return EngineStats{}
	}
	m := p.db.Metrics()
	return EngineStats{
		BlockCacheBytes: m.BlockCache.Size, BlockCacheHits: m.BlockCache.Hits, BlockCacheMisses: m.BlockCache.Misses,
		FileCacheBytes: m.FileCache.Size, OpenTables: m.FileCache.TableCount,
		MemTableBytes: m.MemTable.Size,
	}
}

// Dir is the store's directory.
func (p *Pebble) Dir() string { return p.dir }

// quietLogger keeps pebble's informational lines out of the service's log;
// fatal errors still stop the process, as pebble requires.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Printf("pebble: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

func (p *Pebble) Get(key []byte) ([]byte, bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, false, ErrClosed
	}
	return get(p.db, key)
}

type gettable interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// get reads a copy of the value at key.
func get(src gettable, key []byte) ([]byte, bool, error) {
	v, closer, err := src.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, true, nil
}

func (p *Pebble) Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return scan(p.db, lower, upper, reverse, fn)
}

// GetSorted reads keys with one iterator: seeks to ascending keys move
// each level's position forward instead of searching it anew.
func (p *Pebble) GetSorted(keys [][]byte, fn func(i int, value []byte)) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if len(keys) == 0 {
		return nil
	}
	it, err := p.db.NewIter(nil)
	if err != nil {
		return err
	}
	for i, k := range keys {
		if it.SeekGE(k) && bytes.Equal(it.Key(), k) {
			fn(i, it.Value())
		}
	}
	return errors.Join(it.Error(), it.Close())
}

type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

func scan(src iterable, lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	it, err := src.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	iterate(it, reverse, fn)
	return it.Close()
}

// iterate calls fn for each entry of it, in order, until fn returns false.
func iterate(it *pebble.Iterator, reverse bool, fn func(k, v []byte) bool) {
	if reverse {
		for ok := it.Last(); ok; ok = it.Prev() {
			if !fn(it.Key(), it.Value()) {
				break
			}
		}
	} else {
		for ok := it.First(); ok; ok = it.Next() {
			if !fn(it.Key(), it.Value()) {
				break
			}
		}
	}
}

// ConcurrentTxns reports that several transactions may be open at once
// (and filled on several goroutines).
func (p *Pebble) ConcurrentTxns() bool { return true }

// Begin opens an indexed batch: its reads see its own writes over the
// committed state.
func (p *Pebble) Begin() (Txn, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	return &pebbleTxn{p: p, b: p.db.NewIndexedBatch()}, nil
}

type pebbleTxn struct {
	p *Pebble
	b *pebble.Batch
	// it serves the transaction's scans one after another: building and
	// closing an iterator over the batch and every level of the tree
	// costs about as much as the seek (the deferred views scan a user's
	// rooms at every rename). busy while a scan's fn runs, so a scan
	// inside it gets an iterator of its own.
	it   *pebble.Iterator
	busy bool
	done bool
}

func (t *pebbleTxn) Get(key []byte) ([]byte, bool, error) { return get(t.b, key) }

// Scan sees the transaction's own writes, over the committed state as of
// its first scan. The views' keys are each written by one stage, in its
// own transactions, so that is also the state at every later scan.
func (t *pebbleTxn) Scan(lower, upper []byte, reverse bool, fn func(k, v []byte) bool) error {
	if t.busy {
		return scan(t.b, lower, upper, reverse, fn)
	}
	// The iterator keeps the bounds until the next scan sets its own, and
	// compares them then: copies, as the caller may reuse its slices.
	opts := &pebble.IterOptions{LowerBound: bytes.Clone(lower), UpperBound: bytes.Clone(upper)}
	if t.it == nil {
		it, err := t.b.NewIter(opts)
		if err != nil {
			return err
		}
		t.it = it
	} else {
		t.it.SetOptions(opts) // also shows it the batch's writes since the last scan
	}
	t.busy = true
	defer func() { t.busy = false }()
	iterate(t.it, reverse, fn)
	return t.it.Error()
}

// closeIter closes the scans' iterator, before the batch is committed or
// closed.
func (t *pebbleTxn) closeIter() error {
	if t.it == nil {
		return nil
	}
	err := t.it.Close()
	t.it = nil
	return err
}

func (t *pebbleTxn) Set(key, value []byte) error { return t.b.Set(key, value, nil) }
func (t *pebbleTxn) Delete(key []byte) error     { return t.b.Delete(key, nil) }
func (t *pebbleTxn) Add(key, counter []byte) error {
	return t.b.Merge(key, counter, nil)
}
func (t *pebbleTxn) Len() int { return int(t.b.Count()) }

func (t *pebbleTxn) Commit() error {
	t.p.mu.RLock()
	defer t.p.mu.RUnlock()
	if t.p.closed {
		return ErrClosed
	}
	t.done = true
	defer t.b.Close()
	if err := t.closeIter(); err != nil {
		return err
	}
	return t.b.Commit(pebble.NoSync)
}

// CommitAll copies the transactions' writes into one plain batch (a copy
// of their records, no index) and commits it.
func (p *Pebble) CommitAll(txns ...Txn) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	all := p.db.NewBatch()
	defer all.Close()
	for _, t := range txns {
		pt, ok := t.(*pebbleTxn)
		if !ok {
			return fmt.Errorf("viewstore: a transaction of another store")
		}
		if err := pt.closeIter(); err != nil {
			return err
		}
		if err := all.Apply(pt.b, nil); err != nil {
			return err
		}
	}
	if err := all.Commit(pebble.NoSync); err != nil {
		return err
	}
	for _, t := range txns {
		t.Discard()
	}
	return nil
}

func (t *pebbleTxn) Discard() {
	if !t.done {
		t.done = true
		_ = t.closeIter()
		t.b.Close()
	}
}

// Purge flushes the memtables and compacts the whole key space, so the
// files keep only live values: no overwritten or deleted value survives in
// an older table.
func (p *Pebble) Purge() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if err := p.db.Flush(); err != nil {
		return err
	}
	// The tables now on disk hold every value committed before the call;
	// once compacted, each of them that is not live any more must be gone.
	before, err := p.tables()
	if err != nil {
		return err
	}
	first, last, ok, err := p.bounds()
	if err != nil || !ok {
		return err
	}
	if err := p.db.Compact(context.Background(), first, append(last, 0), true); err != nil {
		return err
	}
	return p.awaitDeleted(before)
}

// tables lists the table files in the store's directory.
func (p *Pebble) tables() (map[string]bool, error) {
	names, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".sst") {
			out[n.Name()] = true
		}
	}
	return out, nil
}

// awaitDeleted waits until pebble's background cleaner has removed every
// table of before that the compaction made obsolete, so that Purge answers
// only once the old bytes are gone from the directory. Tables written
// since (new writes) are not waited for.
func (p *Pebble) awaitDeleted(before map[string]bool) error {
	levels, err := p.db.SSTables()
	if err != nil {
		return err
	}
	for _, level := range levels {
		for _, t := range level {
			delete(before, fmt.Sprintf("%06d.sst", t.FileNum))
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now, err := p.tables()
		if err != nil {
			return err
		}
		stale := ""
		for name := range before {
			if now[name] {
				stale = name
			}
		}
		if stale == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("viewstore: obsolete table %s was not deleted in time", stale)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *Pebble) bounds() (first, last []byte, ok bool, err error) {
	it, err := p.db.NewIter(nil)
	if err != nil {
		return nil, nil, false, err
	}
	if it.First() {
		first = append([]byte(nil), it.Key()...)
		it.Last()
		last = append([]byte(nil), it.Key()...)
		ok = true
	}
	return first, last, ok, it.Close()
}

// Sync flushes the memtables: with the WAL off, that is what makes
// committed batches durable.
func (p *Pebble) Sync() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	return p.db.Flush()
}

func (p *Pebble) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	close(p.stopTrim)
	<-p.trimDone
	ferr := p.db.Flush()
	if err := p.db.Close(); err != nil {
		return err
	}
	return ferr
}

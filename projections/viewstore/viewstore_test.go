package viewstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/cockroachdb/pebble/v2"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

type engine struct {
	name string
	open func(t testing.TB, dir string) Store
}

var engines = []engine{
	{"pebble", func(t testing.TB, dir string) Store {
		s, err := OpenPebble(filepath.Join(dir, "views"), PebbleOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
	{"bolt", func(t testing.TB, dir string) Store {
		s, err := OpenBolt(filepath.Join(dir, "views.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

func scanKeys(t *testing.T, s Reader, lo, hi []byte, reverse bool) string {
	t.Helper()
	var out []string
	if err := s.Scan(lo, hi, reverse, func(k, v []byte) bool {
		out = append(out, string(k)+"="+string(v))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out)
}

func TestStore(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			dir := t.TempDir()
			s := e.open(t, dir)
			tx, err := s.Begin()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a/1", "a/2", "a/3", "b/1", "c"} {
				must(t, tx.Set([]byte(k), []byte("v"+k)))
			}
			must(t, tx.Delete([]byte("a/2")))
			if v, ok, err := tx.Get([]byte("a/3")); err != nil || !ok || string(v) != "va/3" {
				t.Fatalf("a transaction does not read its own write: %q %v %v", v, ok, err)
			}
			if got, want := scanKeys(t, tx, []byte("a/"), PrefixEnd([]byte("a/")), false), "[a/1=va/1 a/3=va/3]"; got != want {
				t.Fatalf("scan inside the transaction = %s, want %s", got, want)
			}
			if _, ok, err := s.Get([]byte("a/1")); err != nil || ok {
				t.Fatalf("an uncommitted write is visible to readers (%v, %v)", ok, err)
			}
			must(t, tx.Commit())
			if v, ok, err := s.Get([]byte("a/1")); err != nil || !ok || string(v) != "va/1" {
				t.Fatalf("Get a/1 = %q %v %v", v, ok, err)
			}
			if _, ok, err := s.Get([]byte("a/2")); err != nil || ok {
				t.Fatalf("deleted a/2 still there (%v, %v)", ok, err)
			}
			if got, want := scanKeys(t, s, []byte("a/"), PrefixEnd([]byte("a/")), false), "[a/1=va/1 a/3=va/3]"; got != want {
				t.Fatalf("prefix scan = %s, want %s", got, want)
			}
			if got, want := scanKeys(t, s, []byte("a/"), nil, true), "[c=vc b/1=vb/1 a/3=va/3 a/1=va/1]"; got != want {
				t.Fatalf("reverse scan = %s, want %s", got, want)
			}
			if got, want := scanKeys(t, s, []byte("a/2"), []byte("b/1"), true), "[a/3=va/3]"; got != want {
				t.Fatalf("bounded reverse scan = %s, want %s", got, want)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = e.open(t, dir)
			defer s.Close()
			if got, want := scanKeys(t, s, nil, nil, false), "[a/1=va/1 a/3=va/3 b/1=vb/1 c=vc]"; got != want {
				t.Fatalf("after reopen = %s, want %s", got, want)
			}
		})
	}
}

// TestCounters: Add sums counters without a read, inside the transaction,
// after its commit, across transactions and after a reopen.
// TestTxnScansSeeEachOthersWrites: every scan of a transaction sees the
// writes made before it, also after earlier scans (which may share an
// iterator), a scan inside a scan's callback gets its own view, and
// bounds the caller changes after a scan do not move the next one.
func TestTxnScansSeeEachOthersWrites(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			s := e.open(t, t.TempDir())
			defer s.Close()
			base, err := s.Begin()
			must(t, err)
			must(t, base.Set([]byte("a/0"), []byte("committed")))
			must(t, base.Set([]byte("b/0"), []byte("committed")))
			must(t, base.Commit())

			tx, err := s.Begin()
			must(t, err)
			defer tx.Discard()
			lo, hi := []byte("a/"), []byte("a0")
			if got := scanKeys(t, tx, lo, hi, false); got != "[a/0=committed]" {
				t.Fatalf("first scan: %s", got)
			}
			must(t, tx.Set([]byte("a/1"), []byte("new")))
			must(t, tx.Delete([]byte("a/0")))
			copy(lo, "zz") // the caller reuses its buffer
			lo = []byte("a/")
			if got := scanKeys(t, tx, lo, hi, false); got != "[a/1=new]" {
				t.Errorf("scan after writes: %s, want [a/1=new]", got)
			}
			must(t, tx.Set([]byte("a/2"), []byte("newer")))
			if got := scanKeys(t, tx, lo, hi, true); got != "[a/2=newer a/1=new]" {
				t.Errorf("reverse scan: %s", got)
			}
			var outer, inner []string
			must(t, tx.Scan([]byte("a/"), []byte("a0"), false, func(k, _ []byte) bool {
				outer = append(outer, string(k))
				must(t, tx.Scan([]byte("b/"), []byte("b0"), false, func(k, _ []byte) bool {
					inner = append(inner, string(k))
					return true
				}))
				return true
			}))
			if fmt.Sprint(outer) != "[a/1 a/2]" || fmt.Sprint(inner) != "[b/0 b/0]" {
				t.Errorf("nested scans: outer %v, inner %v", outer, inner)
			}
			if got := scanKeys(t, tx, []byte("b/"), []byte("b0"), false); got != "[b/0=committed]" {
				t.Errorf("scan of another range: %s", got)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			dir := t.TempDir()
			s := e.open(t, dir)
			k := []byte("n/day")
			for round := range 3 {
				tx, err := s.Begin()
				if err != nil {
					t.Fatal(err)
				}
				must(t, tx.Add(k, Counter(1, 2)))
				must(t, tx.Add(k, Counter(10)))
				if v, _, err := tx.Get(k); err != nil || !bytes.Equal(v, Counter(11*uint64(round+1), 2*uint64(round+1))) {
					t.Fatalf("round %d inside the transaction: %v %v", round, v, err)
				}
				must(t, tx.Commit())
			}
			must(t, s.Close())
			s = e.open(t, dir)
			defer s.Close()
			if v, _, err := s.Get(k); err != nil || !bytes.Equal(v, Counter(33, 6)) {
				t.Fatalf("after reopen: %v %v, want %v", v, err, Counter(33, 6))
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct{ in, want []byte }{
		{[]byte("a/"), []byte("a0")},
		{[]byte{'a', 0xff}, []byte("b")},
		{[]byte{0xff, 0xff}, nil},
	} {
		if got := PrefixEnd(c.in); !bytes.Equal(got, c.want) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestPebblePurgeLeavesNoOldValue overwrites and deletes a marker and checks
// that after Purge no file of the store holds its bytes, while before it one
// does (so the scan can fail).
func TestPebblePurgeLeavesNoOldValue(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenPebble(filepath.Join(dir, "views"), PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	marker := []byte("Marker-Name-7f3a9c")
	tx, err := s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		must(t, tx.Set(fmt.Appendf(nil, "k/%04d", i), []byte("filler")))
	}
	must(t, tx.Set([]byte("k/secret"), marker))
	must(t, tx.Set([]byte("m/secret"), marker))
	must(t, tx.Commit())
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if !dirHolds(t, dir, marker) {
		t.Fatal("the marker is not in the files before purge: the scan cannot fail")
	}
	if tx, err = s.Begin(); err != nil {
		t.Fatal(err)
	}
	must(t, tx.Set([]byte("k/secret"), []byte("erased")))
	must(t, tx.Delete([]byte("m/secret")))
	must(t, tx.Commit())
	if err := s.Purge(); err != nil {
		t.Fatal(err)
	}
	if dirHolds(t, dir, marker) {
		t.Fatal("an overwritten value survives Purge")
	}
	if v, ok, err := s.Get([]byte("k/secret")); err != nil || !ok || string(v) != "erased" {
		t.Fatalf("Get after purge = %q %v %v", v, ok, err)
	}
}

func dirHolds(t *testing.T, dir string, marker []byte) bool {
	t.Helper()
	found := false
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || fi.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			return nil // deleted by the engine while we walked
		}
		if err != nil {
			return err
		}
		if bytes.Contains(data, marker) {
			t.Logf("%s holds the marker", p)
			found = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// BenchmarkEngine compares the engines on the views' access pattern: batches
// of writes to scattered keys (a global rename fanning out history lines),
// point reads of recently written keys, and short prefix scans (a history
// page).
func BenchmarkEngine(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name+"/batch4096", func(b *testing.B) {
			s := e.open(b, b.TempDir())
			defer s.Close()
			r := rand.New(rand.NewPCG(1, 2))
			val := bytes.Repeat([]byte("x"), 40)
			b.ResetTimer()
			for range b.N {
				tx, err := s.Begin()
				if err != nil {
					b.Fatal(err)
				}
				for range 4096 {
					must(b, tx.Set(key(r.Uint64N(1<<20)), val))
				}
				must(b, tx.Commit())
			}
			b.ReportMetric(float64(b.N*4096)/b.Elapsed().Seconds(), "keys/s")
		})
		b.Run(e.name+"/get", func(b *testing.B) {
			s := e.open(b, b.TempDir())
			defer s.Close()
			fill(b, s, 200_000)
			r := rand.New(rand.NewPCG(3, 4))
			b.ResetTimer()
			for range b.N {
				if _, _, err := s.Get(key(r.Uint64N(200_000))); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(e.name+"/scan100", func(b *testing.B) {
			s := e.open(b, b.TempDir())
			defer s.Close()
			fill(b, s, 200_000)
			r := rand.New(rand.NewPCG(5, 6))
			b.ResetTimer()
			for range b.N {
				n := 0
				if err := s.Scan(key(r.Uint64N(199_000)), nil, false, func(k, v []byte) bool { n++; return n < 100 }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func key(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("h/"), i) }

func fill(b *testing.B, s Store, n int) {
	val := bytes.Repeat([]byte("x"), 40)
	tx, err := s.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		must(b, tx.Set(key(uint64(i)), val))
		if tx.Len() == 4096 || i == n-1 {
			must(b, tx.Commit())
			if tx, err = s.Begin(); err != nil {
				b.Fatal(err)
			}
		}
	}
	tx.Discard()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPebbleEngineStats: the memory figures /metrics exports move with what
// the engine does: a write fills the memtable, a flush opens a table, a read
// of a flushed key misses then hits the block cache.
func TestPebbleEngineStats(t *testing.T) {
	s, err := OpenPebble(filepath.Join(t.TempDir(), "views"), PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fresh := s.EngineStats()
	if fresh.OpenTables != 0 || fresh.BlockCacheBytes != 0 {
		t.Fatalf("a new store: %+v", fresh)
	}
	tx, err := s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		must(t, tx.Set(fmt.Appendf(nil, "k/%04d", i), bytes.Repeat([]byte{'v'}, 100)))
	}
	must(t, tx.Commit())
	if written := s.EngineStats(); written.MemTableBytes == 0 {
		t.Fatalf("after a write, no memtable bytes: %+v", written)
	}
	must(t, s.Sync())
	for range 2 {
		if _, ok, err := s.Get([]byte("k/0500")); err != nil || !ok {
			t.Fatalf("Get: %v %v", ok, err)
		}
	}
	read := s.EngineStats()
	if read.OpenTables < 1 || read.FileCacheBytes <= 0 || read.BlockCacheBytes <= 0 || read.BlockCacheMisses < 1 || read.BlockCacheHits < 1 {
		t.Fatalf("after a flush and two reads: %+v", read)
	}
	must(t, s.Close())
	if closed := s.EngineStats(); closed != (EngineStats{}) {
		t.Fatalf("a closed store: %+v", closed)
	}
}

// Tables get bloom filters above the last level only: pebble never reads
// one in the last level, where most keys end up.
func TestPebbleFiltersAboveTheLastLevelOnly(t *testing.T) {
	p, err := OpenPebble(t.TempDir(), PebbleOptions{CacheBytes: 1 << 20, MemTableBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	write := func(value string) {
		t.Helper()
		tx, err := p.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			if err := tx.Set(fmt.Appendf(nil, "key-%05d", i), []byte(value)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	filters := func() map[int]uint64 {
		t.Helper()
		levels, err := p.db.SSTables(pebble.WithProperties())
		if err != nil {
			t.Fatal(err)
		}
		out := map[int]uint64{}
		for l, tables := range levels {
			for _, tb := range tables {
				out[l] += tb.Properties.FilterSize
			}
		}
		return out
	}
	if err := p.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := filters(); f[0] == 0 {
		t.Errorf("a flushed table in L0 has no bloom filter (filter bytes by level: %v)", f)
	}
	// A full compaction moves that table to the last level as it is; the
	// next one merges newer values of the same keys into it, which writes
	// the last level's table afresh.
	if err := p.Purge(); err != nil {
		t.Fatal(err)
	}
	write("second")
	if err := p.Purge(); err != nil {
		t.Fatal(err)
	}
	levels, err := p.db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	bottom := len(levels) - 1
	if len(levels[bottom]) == 0 {
		t.Fatalf("after a full compaction no table is in the last level")
	}
	if n := filters()[bottom]; n != 0 {
		t.Errorf("the last level's tables hold %d bytes of bloom filter, want none", n)
	}
}

// TestGetSorted: reading many keys with one iterator finds each key that
// has a value (counters summed, deletions and never-written keys absent),
// over the memtable and flushed tables alike, in any order of the keys.
func TestGetSorted(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			s := e.open(t, t.TempDir())
			defer s.Close()
			sg, ok := s.(SortedGetter)
			if !ok {
				t.Fatalf("%s has no GetSorted", e.name)
			}
			want := map[string]string{}
			for round := range 2 { // the second round's writes over the first's, flushed in pebble
				tx, err := s.Begin()
				if err != nil {
					t.Fatal(err)
				}
				for i := round; i < 300; i += 3 {
					k, v := fmt.Sprintf("u/%04d", i), fmt.Sprintf("v%d.%d", i, round)
					must(t, tx.Set([]byte(k), []byte(v)))
					want[k] = v
				}
				if round == 1 {
					must(t, tx.Delete([]byte("u/0004")))
					delete(want, "u/0004")
				}
				must(t, tx.Add([]byte("u/0002"), Counter(5)))
				must(t, tx.Commit())
				if p, ok := s.(*Pebble); ok && round == 0 {
					must(t, p.db.Flush())
				}
			}
			want["u/0002"] = string(Counter(10)) // never set: two counter additions
			for _, order := range []string{"ascending", "descending"} {
				t.Run(order, func(t *testing.T) {
					var keys [][]byte
					for i := range 302 {
						keys = append(keys, []byte(fmt.Sprintf("u/%04d", i)))
					}
					keys = append(keys, []byte("u/"), []byte("v"))
					if order == "descending" {
						slices.Reverse(keys)
					}
					got := map[string]string{}
					must(t, sg.GetSorted(keys, func(i int, v []byte) {
						if _, dup := got[string(keys[i])]; dup {
							t.Errorf("key %s given twice", keys[i])
						}
						got[string(keys[i])] = string(v)
					}))
					if !maps.Equal(got, want) {
						t.Errorf("GetSorted found %d keys, want %d", len(got), len(want))
						for k, v := range want {
							if got[k] != v {
								t.Errorf("%s = %q, want %q", k, got[k], v)
							}
						}
						for k := range got {
							if _, ok := want[k]; !ok {
								t.Errorf("%s found, but it has no value", k)
							}
						}
					}
				})
			}
		})
	}
}

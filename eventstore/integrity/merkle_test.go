package integrity_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/eventstore/integrity"
)

// TestRootIsTheTreesRoot: the fast root (verify, the seal writer) and the
// tree that proofs come from agree for every size around the powers of two
// and the parallel threshold, and every leaf's path leads to it.
func TestRootIsTheTreesRoot(t *testing.T) {
	for _, procs := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			testRootIsTheTreesRoot(t)
		})
	}
}

func testRootIsTheTreesRoot(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 3000, 4097, 6145} {
		heads := make([]integrity.Head, n)
		for i := range heads {
			heads[i] = integrity.Head{Stream: fmt.Sprintf("profile-@%06d:x", i), Revision: uint64(i)}
			heads[i].Hash[0] = byte(i)
		}
		tree, err := integrity.NewTree(heads)
		if err != nil {
			t.Fatal(err)
		}
		root, err := integrity.Root(heads)
		if err != nil || root != tree.Root() {
			t.Fatalf("%d leaves: Root %s, tree %s (%v)", n, root, tree.Root(), err)
		}
		for i := 0; i < n; i += max(1, n/7) {
			path, err := tree.InclusionPath(uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if err := integrity.VerifyInclusion(heads[i], uint64(i), uint64(n), path, root); err != nil {
				t.Fatalf("%d leaves, leaf %d: %v", n, i, err)
			}
		}
	}
	if _, err := integrity.Root([]integrity.Head{{Stream: "b"}, {Stream: "a"}}); err == nil {
		t.Fatal("unsorted heads accepted")
	}
}

// TestSortHeadsInRuns: a window large enough to be sorted in runs on
// several cores comes out in stream order with every head kept, for an
// odd and an even number of runs.
func TestSortHeadsInRuns(t *testing.T) {
	for _, procs := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			const n = 20_001
			heads := make([]integrity.Head, n)
			for i := range heads {
				// A fixed permutation of 0..n-1 (7919 is prime to n).
				j := (i * 7919) % n
				heads[i] = integrity.Head{Stream: fmt.Sprintf("profile-@%06d:x", j), Revision: uint64(j)}
			}
			integrity.SortHeads(heads)
			for i, h := range heads {
				if want := fmt.Sprintf("profile-@%06d:x", i); h.Stream != want || h.Revision != uint64(i) {
					t.Fatalf("head %d is %s revision %d, want %s revision %d", i, h.Stream, h.Revision, want, i)
				}
			}
		})
	}
}

// TestSortHeadsOrdersNamesBytewise: as many names as fit one, two and
// three bytes of index in a sort key, names that share prefixes of every
// length, end inside the bytes the sort keys on (or inside the next
// key's, or the one's after), or hold zero and 0xff bytes come out in
// bytewise order, as the tree needs them.
func TestSortHeadsOrdersNamesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0, 1, 'a', 'b', 0xff}
	for _, n := range []int{2, 3, 17, 256, 257, 500, 20_000, 70_000} {
		for _, prefix := range []string{"", "profile-@", "room-!abcdefgh:", "profile-@aaaaaaaaaaaaaaaaaaaa"} {
			seen := make(map[string]bool)
			var heads []integrity.Head
			for len(heads) < n {
				name := []byte(prefix)
				for range rng.IntN(30) {
					name = append(name, alphabet[rng.IntN(len(alphabet))])
				}
				if !seen[string(name)] {
					seen[string(name)] = true
					heads = append(heads, integrity.Head{Stream: string(name), Revision: uint64(len(heads))})
				}
			}
			want := slices.Clone(heads)
			slices.SortFunc(want, func(a, b integrity.Head) int { return strings.Compare(a.Stream, b.Stream) })
			integrity.SortHeads(heads)
			if !slices.Equal(heads, want) {
				t.Fatalf("%d names after %q: sorted as %q", len(heads), prefix, streams(heads))
			}
		}
	}
}

// TestSortHeadsOfASeal: a seal's heads are "log-seals" and streams of
// one category whose names go on alike for longer than a key (the
// bench's "profile-@r12345:bench.example"); they sort as their names.
func TestSortHeadsOfASeal(t *testing.T) {
	var heads []integrity.Head
	for i := 12999; i >= 12000; i-- {
		heads = append(heads, integrity.Head{Stream: fmt.Sprintf("profile-@r%d:bench.example", i)})
	}
	heads = append(heads, integrity.Head{Stream: "profile-@r12:bench.example"}, integrity.Head{Stream: "log-seals"},
		integrity.Head{Stream: "profile-@r12000:bench.example\x00"}, integrity.Head{Stream: "profile-@r1"})
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(heads), func(i, j int) { heads[i], heads[j] = heads[j], heads[i] })
	want := slices.Clone(heads)
	slices.SortFunc(want, func(a, b integrity.Head) int { return strings.Compare(a.Stream, b.Stream) })
	integrity.SortHeads(heads)
	if !slices.Equal(heads, want) {
		t.Fatalf("sorted as %q", streams(heads))
	}
}

func streams(heads []integrity.Head) []string {
	out := make([]string, len(heads))
	for i, h := range heads {
		out[i] = h.Stream
	}
	return out
}

// BenchmarkSortHeads sorts a seal's heads as the bench command's log has
// them ("log-seals" and 1000 profile streams), in the order of a log
// written by many clients at once (each name at most 256 places from its
// own) and in a random one.
func BenchmarkSortHeads(b *testing.B) {
	for _, order := range []string{"local", "random"} {
		b.Run(order, func(b *testing.B) {
			base := []integrity.Head{{Stream: "log-seals"}}
			for i := 12000; i < 13000; i++ {
				base = append(base, integrity.Head{Stream: fmt.Sprintf("profile-@r%d:bench.example", i)})
			}
			r := rand.New(rand.NewPCG(1, 2))
			if order == "random" {
				r.Shuffle(len(base), func(i, j int) { base[i], base[j] = base[j], base[i] })
			} else {
				for i := range base {
					j := min(len(base)-1, i+r.IntN(256))
					base[i], base[j] = base[j], base[i]
				}
			}
			heads := make([]integrity.Head, len(base))
			for b.Loop() {
				copy(heads, base)
				integrity.SortHeads(heads)
			}
		})
	}
}

package integrity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Head is a stream's last event within a seal's window: one Merkle leaf.
type Head struct {
	Stream   string `json:"stream"`
	Revision uint64 `json:"revision"`
	Hash     Hash   `json:"hash"`
}

// leafData is lp(stream) ‖ u64(revision) ‖ hash, the bytes of a leaf.
func (h Head) leafData() []byte {
	return h.appendLeafData(make([]byte, 0, 8+len(h.Stream)+8+len(h.Hash)))
}

func (h Head) appendLeafData(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(h.Stream)))
	b = append(b, h.Stream...)
	b = binary.BigEndian.AppendUint64(b, h.Revision)
	return append(b, h.Hash[:]...)
}

// LeafHash is the RFC 6962 leaf hash of a head: SHA-256(0x00 ‖ leaf data).
func (h Head) LeafHash() []byte { return rfc6962.DefaultHasher.HashLeaf(h.leafData()) }

// SortHeads orders heads as their seal's tree does: by stream name,
// bytewise. A large window (the genesis seal of a big existing log) is
// sorted in chunks on every core and merged: verify's check of such a seal
// is otherwise one core's sort of every stream name after the walk.
func SortHeads(heads []Head) {
	workers := runtime.GOMAXPROCS(0)
	if len(heads) < parallelSort || workers == 1 {
		var s headSorter
		s.sort(heads)
		return
	}
	chunk := (len(heads) + workers - 1) / workers
	var wg sync.WaitGroup
	var runs [][]Head
	for lo := 0; lo < len(heads); lo += chunk {
		run := heads[lo:min(lo+chunk, len(heads))]
		runs = append(runs, run)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s headSorter
			s.sort(run)
		}()
	}
	wg.Wait()
	if sorted := mergeRuns(runs, len(heads)); &sorted[0] != &heads[0] {
		copy(heads, sorted)
	}
}

// headSorter sorts heads by stream name; its arrays are kept for the next
// sort. Heads move once: what is sorted is one number per head, the
// bytes of its name after the prefix that every name shares (the
// category, and often more: "profile-@") in the high bytes, its index in
// the low ones (one byte of index up to 256 heads, two up to 65,536, and
// so on: a key of 6 name bytes for a seal's heads). Names whose keys tie
// are sorted the same way by the bytes after the key (a seal's heads are
// its window's streams and "log-seals", which share no prefix: their keys
// all start "profile-"), and whole names compared only in a run where a
// name ends within the key.
type headSorter struct {
	keys []uint64
	tmp  []Head
}

func (s *headSorter) sort(heads []Head) {
	if len(heads) < 2 {
		return
	}
	// Index bytes: a seal has fewer heads than the verifier has streams
	// (at most 2³² - 2), so at most 4, leaving 4 bytes of name.
	ib := 1
	for ib < 4 && len(heads) > 1<<(8*ib) {
		ib++
	}
	keys := s.keys[:0]
	for i := range heads {
		keys = append(keys, uint64(i))
	}
	s.keys = keys
	sortByName(heads, keys, 0, ib)
	if cap(s.tmp) < len(heads) {
		s.tmp = make([]Head, len(heads))
	}
	tmp := s.tmp[:len(heads)]
	mask := uint64(1)<<(8*ib) - 1
	for j, k := range keys {
		tmp[j] = heads[k&mask]
	}
	copy(heads, tmp)
	clear(tmp) // the names are the caller's, not the sorter's to keep
}

// sortByName orders keys, whose low ib bytes are indexes of heads, by the
// names of their heads, which share their first from bytes.
func sortByName(heads []Head, keys []uint64, from, ib int) {
	shift := 8 * ib
	mask := uint64(1)<<shift - 1
	kb := 8 - ib // bytes of name in a key
	name := func(k uint64) string { return heads[k&mask].Stream }
	first := name(keys[0])
	shared := len(first)
	for _, k := range keys[1:] {
		n := name(k)
		m, j := min(shared, len(n)), from
		for j < m && first[j] == n[j] {
			j++
		}
		if shared = j; shared == from {
			break
		}
	}
	for i, k := range keys {
		keys[i] = nameKey(name(k), shared, kb)<<shift | k&mask
	}
	// A key orders two names whose keys differ as the names are ordered
	// (a name that ends within the key is padded with zeros, which sort
	// before any byte or tie with a zero byte).
	slices.Sort(keys)
	for lo := 0; lo < len(keys); {
		hi := lo + 1
		for hi < len(keys) && keys[hi]>>shift == keys[lo]>>shift {
			hi++
		}
		if run := keys[lo:hi]; len(run) > 1 {
			// Names at least as long as the key share it: their order is
			// that of what follows. A shorter one's key may tie with a
			// longer name's zero bytes.
			whole := false
			for _, k := range run {
				whole = whole || len(name(k)) < shared+kb
			}
			if whole {
				slices.SortFunc(run, func(a, b uint64) int { return strings.Compare(name(a), name(b)) })
			} else {
				sortByName(heads, run, shared+kb, ib)
			}
		}
		lo = hi
	}
}

// nameKey is the n bytes of name from offset from, big-endian, padded
// with zeros.
func nameKey(name string, from, n int) uint64 {
	var k uint64
	for i := from; i < from+n; i++ {
		k <<= 8
		if i < len(name) {
			k |= uint64(name[i])
		}
	}
	return k
}

// parallelSort is the number of heads from which sorting them is split
// across cores.
const parallelSort = 8192

// mergeRuns merges sorted runs of n heads in all, pairwise, and returns the
// merged heads (runs[0] itself if there is one run).
func mergeRuns(runs [][]Head, n int) []Head {
	var bufs [2][]Head
	for k := 0; len(runs) > 1; k ^= 1 {
		if bufs[k] == nil {
			bufs[k] = make([]Head, n)
		}
		dst := bufs[k]
		var merged [][]Head
		off := 0
		for i := 0; i < len(runs); i += 2 {
			var w int
			if i+1 == len(runs) {
				w = copy(dst[off:], runs[i])
			} else {
				w = mergeHeads(dst[off:], runs[i], runs[i+1])
			}
			merged = append(merged, dst[off:off+w])
			off += w
		}
		runs = merged
	}
	return runs[0]
}

// mergeHeads merges two sorted runs into dst and returns how many it wrote.
func mergeHeads(dst, a, b []Head) int {
	n := 0
	for len(a) > 0 && len(b) > 0 {
		if b[0].Stream < a[0].Stream {
			dst[n], b = b[0], b[1:]
		} else {
			dst[n], a = a[0], a[1:]
		}
		n++
	}
	n += copy(dst[n:], a)
	return n + copy(dst[n:], b)
}

// Root is the RFC 6962 root over heads, which must be sorted (SortHeads),
// without keeping the tree: what verify and the seal writer need.
func Root(heads []Head) (Hash, error) {
	var m merkleScratch
	return m.root(heads)
}

// merkleScratch holds the node hashes of one level of a tree while its
// root is computed; verify keeps one for all its seals.
type merkleScratch struct {
	level []Hash
}

// parallelRoot is the number of heads from which a root's leaves are hashed
// on every core.
const parallelRoot = 1024

// root computes the tree level by level in one array: each level's nodes
// overwrite the one below, and a level's last node without a sibling moves
// up as it is, which is RFC 6962's split at the largest power of two below
// the size. A large tree is split into subtrees of a power-of-two size,
// one per core, whose roots are then combined.
func (m *merkleScratch) root(heads []Head) (Hash, error) {
	var root Hash
	if len(heads) == 0 {
		copy(root[:], rfc6962.DefaultHasher.EmptyRoot())
		return root, nil
	}
	for i := 1; i < len(heads); i++ {
		if heads[i-1].Stream >= heads[i].Stream {
			return root, fmt.Errorf("integrity: heads not sorted or repeated at %q", heads[i].Stream)
		}
	}
	if cap(m.level) < len(heads) {
		m.level = make([]Hash, len(heads))
	}
	level := m.level[:len(heads)]
	workers := runtime.GOMAXPROCS(0)
	if len(heads) < parallelRoot || workers == 1 {
		hashLeaves(level, heads)
		return reduceLevel(level), nil
	}
	// Subtrees of 2^k leaves, k the least with at most one per core.
	chunk := 1
	for chunk*workers < len(heads) {
		chunk *= 2
	}
	subroots := make([]Hash, (len(heads)+chunk-1)/chunk)
	var wg sync.WaitGroup
	for w := range subroots {
		lo, hi := w*chunk, min((w+1)*chunk, len(heads))
		wg.Add(1)
		go func() {
			defer wg.Done()
			hashLeaves(level[lo:hi], heads[lo:hi])
			subroots[w] = reduceLevel(level[lo:hi])
		}()
	}
	wg.Wait()
	return reduceLevel(subroots), nil
}

// hashLeaves writes the leaf hash of each head, SHA-256(0x00 ‖ leaf data).
func hashLeaves(dst []Hash, heads []Head) {
	var stack [128]byte
	buf := stack[:0]
	for i := range heads {
		buf = heads[i].appendLeafData(append(buf[:0], rfc6962.RFC6962LeafHashPrefix))
		dst[i] = sha256.Sum256(buf)
	}
}

// reduceLevel hashes the nodes of level pairwise into the level above, in
// place, until one is left: the root of the tree whose leaves they are.
func reduceLevel(level []Hash) Hash {
	var b [1 + 2*sha256.Size]byte
	b[0] = rfc6962.RFC6962NodeHashPrefix
	for n := len(level); n > 1; {
		up := 0
		for i := 0; i+1 < n; i += 2 {
			copy(b[1:], level[i][:])
			copy(b[1+sha256.Size:], level[i+1][:])
			level[up] = sha256.Sum256(b[:])
			up++
		}
		if n%2 == 1 {
			level[up] = level[n-1]
			up++
		}
		n = up
	}
	return level[0]
}

// Tree is the RFC 6962 Merkle tree over a seal's sorted heads.
type Tree struct {
	heads []Head
	nodes map[compact.NodeID][]byte
	root  Hash
}

// NewTree builds the tree over heads, which must be sorted (SortHeads).
func NewTree(heads []Head) (*Tree, error) {
	t := &Tree{heads: heads, nodes: make(map[compact.NodeID][]byte, 2*len(heads))}
	if len(heads) == 0 {
		copy(t.root[:], rfc6962.DefaultHasher.EmptyRoot())
		return t, nil
	}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	visit := func(id compact.NodeID, hash []byte) { t.nodes[id] = hash }
	for i, h := range heads {
		if i > 0 && heads[i-1].Stream >= h.Stream {
			return nil, fmt.Errorf("integrity: heads not sorted or repeated at %q", h.Stream)
		}
		lh := h.LeafHash()
		t.nodes[compact.NewNodeID(0, uint64(i))] = lh
		if err := r.Append(lh, visit); err != nil {
			return nil, err
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	copy(t.root[:], root)
	return t, nil
}

// Root is the tree's root hash.
func (t *Tree) Root() Hash { return t.root }

// Index returns the leaf index of a stream's head, or false.
func (t *Tree) Index(stream string) (uint64, bool) {
	i := sort.Search(len(t.heads), func(i int) bool { return t.heads[i].Stream >= stream })
	if i < len(t.heads) && t.heads[i].Stream == stream {
		return uint64(i), true
	}
	return 0, false
}

// InclusionPath is the RFC 6962 audit path of the leaf at index.
func (t *Tree) InclusionPath(index uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, uint64(len(t.heads)))
	if err != nil {
		return nil, err
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, ok := t.nodes[id]
		if !ok {
			return nil, fmt.Errorf("integrity: tree node %+v missing", id)
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// VerifyInclusion checks that head is leaf index of a tree of size leaves
// whose root is root, with path its audit path.
func VerifyInclusion(head Head, index, size uint64, path [][]byte, root Hash) error {
	got, err := proof.RootFromInclusionProof(rfc6962.DefaultHasher, index, size, head.LeafHash(), path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, root[:]) {
		return fmt.Errorf("integrity: the path leads to root %x, the seal says %s", got, root)
	}
	return nil
}

package integrity

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sort"
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
	b := make([]byte, 0, 8+len(h.Stream)+8+len(h.Hash))
	b = binary.BigEndian.AppendUint64(b, uint64(len(h.Stream)))
	b = append(b, h.Stream...)
	b = binary.BigEndian.AppendUint64(b, h.Revision)
	return append(b, h.Hash[:]...)
}

// LeafHash is the RFC 6962 leaf hash of a head: SHA-256(0x00 ‖ leaf data).
func (h Head) LeafHash() []byte { return rfc6962.DefaultHasher.HashLeaf(h.leafData()) }

// SortHeads orders heads as their seal's tree does: by stream name, bytewise.
func SortHeads(heads []Head) {
	sort.Slice(heads, func(i, j int) bool { return heads[i].Stream < heads[j].Stream })
}

// Root is the RFC 6962 root over heads, which must be sorted (SortHeads),
// without keeping the tree: what verify and the seal writer need. Leaf
// hashes are computed on every core.
func Root(heads []Head) (Hash, error) {
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
	leaves := make([][]byte, len(heads))
	workers := runtime.GOMAXPROCS(0)
	if len(heads) < 1024 {
		workers = 1
	}
	var wg sync.WaitGroup
	chunk := (len(heads) + workers - 1) / workers
	for lo := 0; lo < len(heads); lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				leaves[i] = heads[i].LeafHash()
			}
		}(lo, min(lo+chunk, len(heads)))
	}
	wg.Wait()
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, lh := range leaves {
		if err := r.Append(lh, nil); err != nil {
			return root, err
		}
	}
	h, err := r.GetRootHash(nil)
	if err != nil {
		return root, err
	}
	copy(root[:], h)
	return root, nil
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

package integrity

import (
	"fmt"
	"testing"
)

// TestStreamTableTellsCollidingStreamsApart: streams whose keys are the
// same, or share the index's tag, keep their own state; a stream never
// added is not found; and a table sized for none grows to hold 20,000.
func TestStreamTableTellsCollidingStreamsApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(tab *streamTable, stream string) uint64
	}{
		{"same key", func(*streamTable, string) uint64 { return 42 }},
		{"same tag", func(tab *streamTable, stream string) uint64 { return 7<<32 | streamKey(tab.seed, stream)&0xffff }},
		{"real keys", func(tab *streamTable, stream string) uint64 { return streamKey(tab.seed, stream) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newStreamTable(0)
			tab.keyOf = func(name []byte) uint64 { return tc.key(&tab, string(name)) }
			n := 20_000
			if tc.name != "real keys" {
				n = 2_000 // every find probes past the others
			}
			name := func(i int) string { return fmt.Sprintf("profile-@u%d:example.com", i) }
			for i := 0; i < n; i++ {
				s := name(i)
				if _, found := tab.find(s, tc.key(&tab, s)); found {
					t.Fatalf("%s found before it was added", s)
				}
				at, _ := tab.find(s, tc.key(&tab, s))
				if err := tab.add(at, s, tc.key(&tab, s), streamState{revision: uint64(i)}); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < n; i++ {
				s := name(i)
				at, found := tab.find(s, tc.key(&tab, s))
				if !found || tab.entries[at].state.revision != uint64(i) || string(tab.name(at)) != s {
					t.Fatalf("%s: found %v, entry %d (%q revision %d)", s, found, at, tab.name(at), tab.entries[at].state.revision)
				}
			}
			if s := name(n); !func() bool { _, found := tab.find(s, tc.key(&tab, s)); return !found }() {
				t.Fatalf("%s found, never added", s)
			}
		})
	}
}

package integrity_test

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// TestLargeWindowHeads: a seal over a window large enough that verify
// collects and sorts its heads on several cores, with streams of several
// events and events committed between the seal's last event and the seal
// (they belong to the next window), verifies on one core and on three; a
// root over one head too few is reported.
func TestLargeWindowHeads(t *testing.T) {
	key := newKey(t)
	const streams, perStream, after = 7000, 3, 500
	var log []eventstore.RecordedEvent
	heads := make(map[string]integrity.Head)
	prev := make(map[string]integrity.Hash)
	pos := uint64(0)
	appendEvent := func(stream, typ string, data []byte) integrity.Head {
		t.Helper()
		rev := uint64(0)
		if h, ok := heads[stream]; ok {
			rev = h.Revision + 1
		}
		evs := []eventstore.EventData{{ID: uuid.New(), Type: typ, Data: data, Metadata: []byte(`{"source":"test"}`)}}
		h, err := integrity.Chain(stream, rev, prev[stream], evs)
		if err != nil {
			t.Fatal(err)
		}
		pos++
		log = append(log, eventstore.RecordedEvent{EventData: evs[0], Stream: stream, Revision: rev, Position: eventstore.Position{Commit: pos, Prepare: pos}})
		prev[stream] = h
		heads[stream] = integrity.Head{Stream: stream, Revision: rev, Hash: h}
		return heads[stream]
	}
	// Revisions interleaved across streams, so that each stream's earlier
	// events are superseded inside the window.
	var through integrity.Head
	for r := 0; r < perStream; r++ {
		for s := 0; s < streams; s++ {
			through = appendEvent(fmt.Sprintf("profile-@u%05d:example.com", (s*7919)%streams), "profile.field_set", []byte(`{"v":1}`))
		}
	}
	window := make([]integrity.Head, 0, len(heads))
	for _, h := range heads {
		window = append(window, h)
	}
	// Committed while the seal was being written: the next window, and
	// some of them newer events of streams the seal covers.
	for s := 0; s < after; s++ {
		appendEvent(fmt.Sprintf("profile-@u%05d:example.com", s*13), "profile.field_set", []byte(`{"v":1}`))
	}
	sealWith := func(window []integrity.Head) []eventstore.RecordedEvent {
		integrity.SortHeads(window)
		root, err := integrity.Root(window)
		if err != nil {
			t.Fatal(err)
		}
		seal := integrity.Seal{V: 1, Seq: 1, Root: root, Streams: uint64(len(window)), Through: through, SealedAt: time.Now().UTC()}
		seal.Sign(key)
		data, _ := json.Marshal(&seal)
		evs := []eventstore.EventData{{ID: uuid.New(), Type: integrity.SealType, Data: data, Metadata: []byte(`{}`)}}
		if _, err := integrity.Chain(integrity.SealStream, 0, integrity.Zero, evs); err != nil {
			t.Fatal(err)
		}
		return append(log[:len(log):len(log)], eventstore.RecordedEvent{EventData: evs[0], Stream: integrity.SealStream,
			Position: eventstore.Position{Commit: pos + 1, Prepare: pos + 1}})
	}
	var maxWindow int
	verify := func(log []eventstore.RecordedEvent) integrity.Report {
		v := integrity.NewVerifier([]ed25519.PublicKey{key.Public().(ed25519.PublicKey)})
		maxWindow = 0
		for i := range log {
			if err := v.Add(&log[i]); err != nil {
				t.Fatal(err)
			}
			maxWindow = max(maxWindow, v.WindowLen())
		}
		return v.Finish()
	}
	good := sealWith(window)
	// An event after the seal, one byte of it changed.
	evs := []eventstore.EventData{{ID: uuid.New(), Type: "profile.field_set", Data: []byte(`{"v":1}`), Metadata: []byte(`{}`)}}
	if _, err := integrity.Chain("profile-@late:example.com", 0, integrity.Zero, evs); err != nil {
		t.Fatal(err)
	}
	evs[0].Data = []byte(`{"v":2}`)
	changed := eventstore.RecordedEvent{EventData: evs[0], Stream: "profile-@late:example.com", Position: eventstore.Position{Commit: pos + 2, Prepare: pos + 2}}
	for _, tc := range []struct{ procs, keep int }{{1, 0}, {3, 0}, {1, 600}, {3, 600}} {
		t.Run(fmt.Sprintf("procs=%d,keep=%d", tc.procs, tc.keep), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
			if tc.keep > 0 {
				// The window is thinned out every 1,200 events; the seal's
				// last event stays among the newest 600.
				defer integrity.SetWindowKeep(tc.keep)()
			}
			if r := verify(good); !r.OK() || r.LastSeal == nil || r.Unsealed != after {
				t.Fatalf("breaks %v, last seal %v, %d unsealed (want %d)", r.Breaks, r.LastSeal, r.Unsealed, after)
			}
			bad := sealWith(window[1:])
			r := verify(bad)
			if len(r.Breaks) != 1 || r.Breaks[0].Kind != integrity.BadRoot {
				t.Fatalf("a seal missing one head: %v", r.Breaks)
			}
			// A changed event right after the bad seal is reported after
			// it, and no seal verified.
			r = verify(append(bad[:len(bad):len(bad)], changed))
			if len(r.Breaks) != 2 || r.Breaks[0].Kind != integrity.BadRoot || r.Breaks[1].Kind != integrity.Changed || r.LastSeal != nil {
				t.Fatalf("a bad seal, then a changed event: %v (last seal %v)", r.Breaks, r.LastSeal)
			}
			// The log without its seal: every event unsealed, and a
			// thinned window holds one event per stream and the newest.
			r = verify(log)
			if !r.OK() || r.Unsealed != uint64(len(log)) {
				t.Fatalf("the unsealed log: breaks %v, %d unsealed of %d", r.Breaks, r.Unsealed, len(log))
			}
			if bound := streams + after + 2*tc.keep; tc.keep > 0 && maxWindow > bound {
				t.Errorf("the window held %d events, more than %d streams and twice the %d kept", maxWindow, streams+after, tc.keep)
			}
		})
	}
	// A seal 500 events after its last event, when verify keeps only the
	// newest 50 (thinning the window every 50 events): its root cannot be
	// checked, and the break says why instead of reporting a wrong root.
	t.Run("keep=50", func(t *testing.T) {
		defer integrity.SetWindowKeep(50)()
		r := verify(good)
		if len(r.Breaks) != 1 || r.Breaks[0].Kind != integrity.BadRoot || !strings.Contains(r.Breaks[0].Detail, "50 events verify keeps") {
			t.Fatalf("a seal further after its last event than verify keeps: %v", r.Breaks)
		}
	})
}

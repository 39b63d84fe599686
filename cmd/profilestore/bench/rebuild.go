package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// rebuildBench measures what DESIGN's budget promises of projections:
// rebuilding reads the log at close to the store's raw scan rate, and a
// restart on the view store is ready in about a second for a million users.
func (b *bench) rebuildBench(ctx context.Context, users int) (string, error) {
	dataDir := filepath.Join(b.dir, "rebuild")
	defer os.RemoveAll(dataDir)
	a, err := b.open(ctx, dataDir, "bolt")
	if err != nil {
		return "", err
	}
	b.progress("writing the profiles of %d users…", users)
	seals, err := startSeals(ctx, a.Store, b.log)
	if err != nil {
		a.Close()
		return "", err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 256; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(users) {
					return
				}
				v, _ := json.Marshal(fmt.Sprintf("Bench user %d", i))
				if _, err := a.Profiles.SetField(ctx, domain.SetField{User: domain.UserID(fmt.Sprintf("@r%d:bench.example", i)), Actor: domain.ServerActor,
					Key: domain.KeyDisplayName, Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seals.stop()
	if err, _ := firstErr.Load().(error); err != nil {
		a.Close()
		return "", err
	}
	head, err := a.Store.Head(ctx)
	if err != nil {
		a.Close()
		return "", err
	}
	b.progress("scanning the log…")
	t0 := time.Now()
	var scanned int
	for after := eventstore.Start; after.Before(head); {
		recs, err := a.Store.ReadAll(ctx, after, 4096)
		if err != nil {
			a.Close()
			return "", err
		}
		if len(recs) == 0 {
			break
		}
		scanned += len(recs)
		after = recs[len(recs)-1].Position
	}
	scan := time.Since(t0)
	b.progress("sealing and verifying the log…")
	verify, verifyRatio, err := verifyRow(ctx, a.Store, seals.key)
	if err != nil {
		a.Close()
		return "", err
	}
	b.progress("rebuilding the views…")
	t0 = time.Now()
	if err := a.Runner.Rebuild(ctx, nil); err != nil {
		a.Close()
		return "", err
	}
	apply := time.Since(t0)
	viewBytes := dirBytes(filepath.Join(dataDir, "views"))

	b.progress("restarting on the view store…")
	a.Close() // bbolt files are locked while open
	a2, err := b.open(ctx, dataDir, "bolt")
	if err != nil {
		return "", err
	}
	defer a2.Close()
	t0 = time.Now()
	if err := a2.Runner.Start(ctx, nil); err != nil {
		return "", err
	}
	restart := time.Since(t0)
	a2.Runner.Close()
	if got := a2.Views.Len(); got != users {
		return "", fmt.Errorf("restart on the view store has %d profiles, want %d", got, users)
	}

	var s strings.Builder
	fmt.Fprintf(&s, "\n### Rebuild and restart, %d users (one display name each, %d events)\n\n", users, scanned)
	s.WriteString("| what | time | events/s |\n|---|---:|---:|\n")
	fmt.Fprintf(&s, "| raw scan of the log (`ReadAll`, pages of 4096) | %s | %.0f |\n", scan.Round(time.Millisecond), float64(scanned)/scan.Seconds())
	fmt.Fprintf(&s, "| rebuild of every view from the log (read, decrypt, apply) | %s | %.0f |\n", apply.Round(time.Millisecond), float64(scanned)/apply.Seconds())
	s.WriteString(verify)
	fmt.Fprintf(&s, "| restart: open the view store (%.1f MB) and catch up | %s | — |\n", float64(viewBytes)/1e6, restart.Round(time.Millisecond))
	fmt.Fprintf(&s, "\nRebuild rate / raw scan rate: %.0f%%.\n", 100*scan.Seconds()/apply.Seconds())
	fmt.Fprintf(&s, "Verify rate / raw scan rate: %.0f%%.\n", 100*verifyRatio)
	return s.String(), nil
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestUpgradeBuildsTheViewsOnce: a data directory from before views were
// kept on disk (snapshots/, no views/) starts with the views built from the
// log once, with progress reported, the old snapshots removed, and the log
// and keyring untouched byte for byte; the next start catches up on nothing.
func TestUpgradeBuildsTheViewsOnce(t *testing.T) {
	dir := seeded(t)
	if err := os.RemoveAll(filepath.Join(dir, "views")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "snapshots", "projections.snap"), []byte("an old gob snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The log as an export sees it (every event, sealed, with its metadata).
	exportLog := func() string {
		out, err := run(t, context.Background(), "export", "--data-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := exportLog()

	start := func() (progressCalls int, a *app) {
		a = testApp(t, dir)
		if err := a.Runner.Start(context.Background(), func(applied, total uint64) { progressCalls++ }); err != nil {
			t.Fatal(err)
		}
		return progressCalls, a
	}
	calls, a := start()
	if calls == 0 {
		t.Error("building the views reported no progress")
	}
	if got := a.ProfileView.Get("@bob:example.com").Profile.DisplayName(); got == "" {
		t.Error("the views were not built from the log: bob has no name")
	}
	a.close()
	if _, err := os.Stat(filepath.Join(dir, "snapshots")); !os.IsNotExist(err) {
		t.Errorf("the old snapshots are still there (%v)", err)
	}
	if after := exportLog(); after != before || before == "" {
		t.Errorf("the upgrade changed the log: %d bytes of export before, %d after", len(before), len(after))
	}
	if calls, a := start(); calls != 0 {
		t.Errorf("the second start caught up %d batches: the views were built again", calls)
	} else {
		a.close()
	}
}

// TestInterruptedRebuildSwapRecovers: a rebuild that stopped between moving
// the current views aside and moving the new ones in finds the previous
// views put back at the next start, not an empty store to rebuild.
func TestInterruptedRebuildSwapRecovers(t *testing.T) {
	dir := seeded(t)
	a := testApp(t, dir)
	if err := a.Runner.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	a.close()
	views := filepath.Join(dir, "views")
	if err := os.Rename(views, views+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(views+".rebuild", 0o700); err != nil {
		t.Fatal(err)
	}
	calls := 0
	b := testApp(t, dir)
	defer b.close()
	if err := b.Runner.Start(context.Background(), func(applied, total uint64) { calls++ }); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Errorf("the start rebuilt the views (%d batches) instead of putting the previous ones back", calls)
	}
	if got := b.ProfileView.Get("@bob:example.com").Profile.DisplayName(); got == "" {
		t.Error("bob has no name after the recovery")
	}
	for _, left := range []string{views + ".old", views + ".rebuild"} {
		if _, err := os.Stat(left); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", left, err)
		}
	}
}

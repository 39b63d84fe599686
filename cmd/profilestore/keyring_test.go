package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
)

// seeded returns a stopped data directory holding seed's events.
func seeded(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	a := testApp(t, dir)
	seed(t, a)
	a.close()
	return dir
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMissingKeyringRefusesToStart: rm keys.db, and every command refuses
// with the way back, instead of serving (then rebuilding) every profile as
// erased. No new keys.db is left behind.
func TestMissingKeyringRefusesToStart(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	dir := seeded(t)
	keys := filepath.Join(dir, "keys.db")
	if err := os.Remove(keys); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"serve", "--listen", "127.0.0.1:0"}, {"rebuild"}, {"export"}} {
		t.Run(args[0], func(t *testing.T) {
			_, _, err := run2(t, append(args, "--data-dir", dir)...)
			if err == nil || !strings.Contains(err.Error(), "keys.db is missing") || !strings.Contains(err.Error(), "Restore the keys.db") {
				t.Fatalf("%v: %v", args, err)
			}
			if _, err := os.Stat(keys); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%v left a new keys.db", args)
			}
		})
	}
}

// TestForeignKeyringRefused: another data directory's keys.db in place.
func TestForeignKeyringRefused(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	mine, other := seeded(t), seeded(t)
	copyFile(t, filepath.Join(other, "keys.db"), filepath.Join(mine, "keys.db"))
	_, _, err := run2(t, "rebuild", "--data-dir", mine)
	if err == nil || !strings.Contains(err.Error(), "not the keyring of this events.db") {
		t.Fatalf("rebuild with a foreign keyring: %v", err)
	}
}

// TestRebuildRefusesUnreadableValues: a keys.db restored from an older
// backup than events.db has the right identity but lacks the keys of the
// users who came later. Rebuild counts them and refuses; the flag proceeds.
func TestRebuildRefusesUnreadableValues(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	dir := seeded(t)
	old := filepath.Join(t.TempDir(), "keys.db")
	copyFile(t, filepath.Join(dir, "keys.db"), old)
	a := testApp(t, dir)
	for _, name := range []string{"Dave", "David"} {
		v, _ := json.Marshal(name)
		if _, err := a.Profiles.SetField(context.Background(), domain.SetField{User: "@dave:example.com", Actor: domain.ServerActor, Key: "displayname", Value: v,
			Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	a.close()
	copyFile(t, old, filepath.Join(dir, "keys.db"))
	_, _, err := run2(t, "rebuild", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "2 sealed values of 1 user (@dave:example.com among them)") {
		t.Fatalf("rebuild: %v", err)
	}
	out, stderr, err := run2(t, "rebuild", "--allow-unreadable", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "rebuilt projections") || !strings.Contains(stderr, "2 sealed values") {
		t.Fatalf("rebuild --allow-unreadable: %q %q %v", out, stderr, err)
	}
}

// TestImportWithoutKeyringNamesTheFlag: a sealed export imported without
// --keyring is refused, naming the flag, and leaves the directory as it was,
// so that the corrected command runs as it is.
func TestImportWithoutKeyringNamesTheFlag(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	src := seeded(t)
	export := filepath.Join(t.TempDir(), "export.ndjson")
	if _, _, err := run2(t, "export", "--data-dir", src, "--output", export); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	_, _, err := run2(t, "import", "--data-dir", dst, export)
	if err == nil || !strings.Contains(err.Error(), "--keyring") || !strings.Contains(err.Error(), "Nothing was imported") {
		t.Fatalf("import without --keyring: %v", err)
	}
	if entries, _ := os.ReadDir(dst); len(entries) != 0 {
		t.Errorf("the refused import left %v", entries)
	}
	out, _, err := run2(t, "import", "--data-dir", dst, "--keyring", filepath.Join(src, "keys.db"), export)
	if err != nil || !strings.Contains(out, "imported") {
		t.Fatalf("import --keyring: %q %v", out, err)
	}
	other := t.TempDir()
	out, _, err = run2(t, "import", "--data-dir", other, "--allow-unreadable", export)
	if err != nil || !strings.Contains(out, "imported") {
		t.Fatalf("import --allow-unreadable: %q %v", out, err)
	}
}

// TestKeyCheckReportsProgress: the check before a rebuild reports the log
// read so far against its head, rising, and ends at the head.
func TestKeyCheckReportsProgress(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	a := testApp(t, t.TempDir())
	defer a.close()
	for i := range 5000 {
		v, _ := json.Marshal(fmt.Sprintf("User %d", i))
		if _, err := a.Profiles.SetField(context.Background(), domain.SetField{User: domain.UserID(fmt.Sprintf("@u%d:example.com", i%50)), Actor: domain.ServerActor,
			Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	head, err := a.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var calls [][2]uint64
	bad, err := checkLogKeys(context.Background(), a.Store, a.Keyring, func(done, total uint64) { calls = append(calls, [2]uint64{done, total}) })
	if err != nil || bad.values != 0 {
		t.Fatalf("check: %v %v", bad, err)
	}
	if len(calls) < 3 {
		t.Fatalf("%d progress reports for %d events read in pages of 4096", len(calls), head.Commit)
	}
	for i, c := range calls {
		if c[1] != head.Commit || c[0] > c[1] || (i > 0 && c[0] < calls[i-1][0]) {
			t.Fatalf("report %d: %d of %d (head %d; the one before: %v)", i, c[0], c[1], head.Commit, calls[max(i-1, 0)])
		}
	}
	if last := calls[len(calls)-1]; last[0] != head.Commit {
		t.Fatalf("the last report is %d of %d", last[0], last[1])
	}
}

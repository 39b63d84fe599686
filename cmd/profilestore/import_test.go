package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/projections"
	"github.com/sirupsen/logrus"
)

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func testApp(t testing.TB, dir string) *app {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = dir
	a, err := openApp(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// seed writes global names, room events, a hidden entry and an erasure.
func seed(t *testing.T, a *app) {
	t.Helper()
	ctx := context.Background()
	set := func(u domain.UserID, name string) eventstore.Position {
		v, _ := json.Marshal(name)
		res, err := a.Profiles.SetField(ctx, domain.SetField{User: u, Actor: domain.ServerActor, Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Position
	}
	raw := func(e domain.Event) {
		e.Meta.OccurredAt = time.Now()
		data, err := domain.Encode(ctx, a.Sealer, &e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Store.Append(ctx, e.Stream(), eventstore.Any, []eventstore.EventData{data}); err != nil {
			t.Fatal(err)
		}
	}
	name := "Admin"
	set("@admin:example.com", "Admin")
	dead := set("@bob:example.com", "Bobby Deadname")
	set("@bob:example.com", "\u0410dmin")
	raw(domain.Event{Type: domain.TypeMemberJoined, Room: "!r:example.com", User: "@admin:example.com", DisplayName: &name})
	raw(domain.Event{Type: domain.TypeEntryHidden, User: "@bob:example.com", Hidden: dead})
	set("@carol:example.com", "Carol Erased")
	if _, err := a.Eraser.Erase(ctx, domain.EraseProfile{User: "@carol:example.com", Actor: domain.ServerActor, Meta: domain.Metadata{OccurredAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
}

type viewDigest struct {
	Profiles map[domain.UserID]domain.Profile
	Names    any
	Hidden   bool
	Bob      any
	Stats    any
}

func digest(t *testing.T, a *app) viewDigest {
	t.Helper()
	if err := a.RebuildViews(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	d := viewDigest{Profiles: map[domain.UserID]domain.Profile{}}
	for _, u := range []domain.UserID{"@admin:example.com", "@bob:example.com", "@carol:example.com"} {
		d.Profiles[u] = a.ProfileView.Get(u).Profile
	}
	d.Names, _ = a.Names.Search("admin", 100, nil)
	d.Bob = a.Names.UserNames("@bob:example.com", nil)
	now := time.Now()
	d.Stats = a.Activity.Report(now.AddDate(0, 0, -1), now, 10)
	return d
}

func TestExportImportReproducesViews(t *testing.T) {
	src := t.TempDir()
	a := testApp(t, src)
	seed(t, a)
	var export bytes.Buffer
	n, err := exportLog(context.Background(), a.Store, exportBounds{}, &export, nil)
	if err != nil || n != 7 {
		t.Fatalf("export: %d %v", n, err)
	}
	want := digest(t, a)
	a.close()
	if m, _ := want.Names.([]projections.NameMatch); len(m) != 2 || len(want.Profiles["@carol:example.com"].Fields) != 0 {
		t.Fatalf("seeded views are not what the comparison needs: %+v", want)
	}
	if strings.Contains(export.String(), "Admin") || strings.Contains(export.String(), "Carol Erased") {
		t.Fatal("the export holds plaintext")
	}

	dst := t.TempDir()
	out, err := run(t, context.Background(), "import", "--data-dir", dst, "--keyring", filepath.Join(src, "keys.db"), writeTemp(t, export.Bytes()))
	if err != nil || !strings.Contains(out, "imported 7 events") {
		t.Fatalf("import: %q %v", out, err)
	}
	b := testApp(t, dst)
	defer b.close()
	got := digest(t, b)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("views differ after import:\n got %+v\nwant %+v", got, want)
	}
	if names := b.Names.UserNames("@bob:example.com", nil); len(names) != 2 || !names[0].Hidden {
		t.Errorf("the hidden entry did not survive the import: %+v", names)
	}
	if _, err := importLog(context.Background(), b.Store, bytes.NewReader(export.Bytes())); err == nil {
		t.Error("import into a non-empty store accepted")
	}
}

func TestExportBounds(t *testing.T) {
	a := testApp(t, t.TempDir())
	defer a.close()
	seed(t, a)
	count := func(b exportBounds) uint64 {
		n, err := exportLog(context.Background(), a.Store, b, io.Discard, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	p := func(n uint64) eventstore.Position { return eventstore.Position{Commit: n, Prepare: n} }
	if got := count(exportBounds{From: p(2), To: p(5)}); got != 3 {
		t.Errorf("after 2 up to 5: %d", got)
	}
	if got := count(exportBounds{To: p(100)}); got != 7 {
		t.Errorf("to beyond the head: %d", got)
	}
	if got := count(exportBounds{Since: time.Now().Add(time.Hour)}); got != 0 {
		t.Errorf("since the future: %d", got)
	}
	if got := count(exportBounds{Until: time.Now().Add(time.Hour), Since: time.Now().Add(-time.Hour)}); got != 7 {
		t.Errorf("within the hour: %d", got)
	}
	if _, err := run(t, context.Background(), "export", "--data-dir", t.TempDir(), "--since", "yesterday"); err == nil {
		t.Error("bad --since accepted")
	}
}

func TestImportRejectsBadInput(t *testing.T) {
	for name, input := range map[string]string{
		"not JSON":        "{\n",
		"missing fields":  `{"stream":"profile-@a:x"}` + "\n",
		"bad event id":    `{"stream":"profile-@a:x","type":"profile.erased","event_id":"nope","data":{"v":1}}` + "\n",
		"line over limit": `{"stream":"` + strings.Repeat("x", maxImportLine) + `"}` + "\n",
	} {
		a := testApp(t, t.TempDir())
		if _, err := importLog(context.Background(), a.Store, strings.NewReader(input)); err == nil {
			t.Errorf("%s: accepted", name)
		}
		a.close()
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.ndjson")
	if err := writeFile(path, data); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

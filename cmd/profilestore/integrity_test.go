package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	"github.com/profilestore/profilestore/projections"
)

// sealedApp opens a data directory whose app seals with the key at keyPath.
func sealedApp(t *testing.T, dir, keyPath string) *app {
	t.Helper()
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Integrity.SigningKey = keyPath
	a, err := openApp(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func keygen(t *testing.T) (path, pub string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "seal.key")
	out, err := run(t, context.Background(), "integrity", "keygen", "--key", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(line, "public key: "); ok {
			return path, p
		}
	}
	t.Fatalf("keygen printed no public key: %q", out)
	return "", ""
}

func TestKeygenRefusesToOverwriteOrToWriteIntoTheDataDirectory(t *testing.T) {
	path, _ := keygen(t)
	before, _ := os.ReadFile(path)
	if _, err := run(t, context.Background(), "integrity", "keygen", "--key", path); err == nil || !strings.Contains(err.Error(), "never overwrites") {
		t.Fatalf("second keygen on the same path: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the key changed")
	}
	dir := t.TempDir()
	if _, err := run(t, context.Background(), "integrity", "keygen", "--data-dir", dir, "--key", filepath.Join(dir, "seal.key")); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("keygen into the data directory: %v", err)
	}
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Integrity.SigningKey = filepath.Join(dir, "keys", "seal.key")
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a signing key in the data directory passed validation: %v", err)
	}
}

// TestVerifyExportAndReimport: a log with events from before chaining
// (seed's raw appends), chained writes, an erasure and two seals verifies
// as a store and as an export file, and the export re-imported verifies
// identically; a changed byte in the export is reported.
func TestVerifyExportAndReimport(t *testing.T) {
	ctx := context.Background()
	keyPath, pub := keygen(t)
	src := t.TempDir()
	a := sealedApp(t, src, keyPath)
	seed(t, a) // raw (unchained) events and an erasure: the genesis window
	if _, err := a.seals.SealNow(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		v, _ := json.Marshal(fmt.Sprintf("Later name %d", i))
		if _, err := a.Profiles.SetField(ctx, domain.SetField{User: "@bob:example.com", Actor: domain.ServerActor, Key: "displayname", Value: v,
			Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.seals.SealNow(ctx); err != nil {
		t.Fatal(err)
	}
	want, err := integrity.VerifyStore(ctx, a.Store, a.checker.Keys(), 0, nil, nil)
	if err != nil || !want.OK() || want.LastSeal == nil || want.LastSeal.Seq != 2 {
		t.Fatalf("source: %+v %v", want, err)
	}
	var export bytes.Buffer
	if _, err := exportLog(ctx, a.Store, exportBounds{}, &export, nil); err != nil {
		t.Fatal(err)
	}
	a.close()
	exportFile := writeTemp(t, export.Bytes())

	out, err := run(t, ctx, "verify", "--data-dir", src, "--public-key", pub)
	if err != nil || !strings.Contains(out, "verified up to seal 2") || !strings.Contains(out, "0 breaks") {
		t.Fatalf("verify the store: %q %v", out, err)
	}
	out, err = run(t, ctx, "verify", "--export", exportFile, "--public-key", pub)
	if err != nil || !strings.Contains(out, "verified up to seal 2") {
		t.Fatalf("verify the export: %q %v", out, err)
	}

	dst := t.TempDir()
	if _, err := run(t, ctx, "import", "--data-dir", dst, "--keyring", filepath.Join(src, "keys.db"), exportFile); err != nil {
		t.Fatal(err)
	}
	b := testApp(t, dst)
	got, err := integrity.VerifyStore(ctx, b.Store, a.checker.Keys(), 0, nil, nil)
	b.close()
	if err != nil {
		t.Fatal(err)
	}
	if !got.OK() || got.Events != want.Events || got.Seals != want.Seals || got.LastSeal == nil ||
		got.LastSeal.Seal.Root != want.LastSeal.Seal.Root || got.LastSeal.EventHash != want.LastSeal.EventHash {
		t.Fatalf("the re-imported log verifies differently:\n got %+v\nwant %+v", got, want)
	}

	// One changed character of a sealed value in the export file.
	lines := bytes.Split(export.Bytes(), []byte("\n"))
	var victim eventstore.JSONEvent
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"profile.field_set"`)) && bytes.Contains(l, []byte(`"prev_hash"`)) {
			_ = json.Unmarshal(l, &victim)
			j := bytes.Index(l, []byte(`"s1.`)) + 10
			l[j] ^= 0x01
			lines[i] = l
			break
		}
	}
	if victim.Stream == "" {
		t.Fatal("no chained field_set in the export")
	}
	tampered := writeTemp(t, bytes.Join(lines, []byte("\n")))
	out, err = run(t, ctx, "verify", "--export", tampered, "--public-key", pub)
	want1 := "BREAK changed at " + victim.Stream
	if err == nil || !strings.Contains(out, want1) || !strings.Contains(out, "(position "+victim.Position+")") || strings.Count(out, "BREAK") != 1 {
		t.Fatalf("verify a tampered export: %v\n%s\nwant one break: %s ... position %s", err, out, want1, victim.Position)
	}
}

// TestReimportWithOtherPositionsVerifiesIdentically: when the new store's
// positions differ from the export's (here an export that leaves out the
// log's first event, an appservice ledger entry; EventStoreDB and the
// embedded store differ the same way), the import keeps every hide's bytes,
// so the re-imported log verifies with the same seals and roots and no
// break, and the hidden entry is still the one hidden. An export of that
// store, re-imported in turn, needs no further record.
func TestReimportWithOtherPositionsVerifiesIdentically(t *testing.T) {
	ctx := context.Background()
	keyPath, pub := keygen(t)
	src := t.TempDir()
	a := sealedApp(t, src, keyPath)
	ledger, err := a.Store.Append(ctx, "astxn-test", eventstore.NoStream, []eventstore.EventData{{ID: uuid.New(), Type: "appservice.txn", Data: []byte(`{"v":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	seed(t, a) // a hide of bob's first name among them, written before chaining
	if _, err := a.seals.SealNow(ctx); err != nil {
		t.Fatal(err)
	}
	// A chained hide, after the genesis seal.
	var daveOld eventstore.Position
	for _, name := range []string{"Dave Old", "Dave New"} {
		v, _ := json.Marshal(name)
		res, err := a.Profiles.SetField(ctx, domain.SetField{User: "@dave:example.com", Actor: domain.ServerActor, Key: "displayname", Value: v,
			Meta: domain.Metadata{OccurredAt: time.Now()}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if daveOld.IsStart() {
			daveOld = res.Position
		}
	}
	if err := a.RebuildViews(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Profiles.HideEntry(ctx, domain.HideEntry{User: "@dave:example.com", Entry: daveOld, Actor: domain.ServerActor,
		Meta: domain.Metadata{OccurredAt: time.Now()}}, a.RoomView); err != nil {
		t.Fatal(err)
	}
	if _, err := a.seals.SealNow(ctx); err != nil {
		t.Fatal(err)
	}
	want, err := integrity.VerifyStore(ctx, a.Store, a.checker.Keys(), 0, nil, nil)
	if err != nil || !want.OK() || want.LastSeal == nil {
		t.Fatalf("source: %+v %v", want, err)
	}
	if err := a.RebuildViews(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wantNames := map[domain.UserID][]projections.NameUse{}
	for _, u := range []domain.UserID{"@bob:example.com", "@dave:example.com"} {
		wantNames[u] = a.Names.UserNames(u, nil)
		if n := wantNames[u]; len(n) != 2 || !n[0].Hidden || n[1].Hidden {
			t.Fatalf("the source's names of %s are not what the test needs: %+v", u, n)
		}
	}
	var export bytes.Buffer
	if _, err := exportLog(ctx, a.Store, exportBounds{From: ledger.Position}, &export, nil); err != nil {
		t.Fatal(err)
	}
	a.close()

	reimport := func(export []byte) (string, integrity.Report, []eventstore.RecordedEvent) {
		t.Helper()
		dst := t.TempDir()
		if _, err := run(t, ctx, "import", "--data-dir", dst, "--keyring", filepath.Join(src, "keys.db"), writeTemp(t, export)); err != nil {
			t.Fatal(err)
		}
		b := testApp(t, dst)
		defer b.close()
		got, err := integrity.VerifyStore(ctx, b.Store, a.checker.Keys(), 0, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got.OK() || got.Seals != want.Seals || got.LastSeal == nil || got.LastSeal.Seal.Root != want.LastSeal.Seal.Root ||
			got.LastSeal.EventHash != want.LastSeal.EventHash {
			t.Fatalf("the re-imported log verifies differently:\n got %+v\nwant %+v", got, want)
		}
		for _, u := range []domain.UserID{"@bob:example.com", "@dave:example.com"} {
			if names := b.Names.UserNames(u, nil); len(names) != 2 || names[0].Name != wantNames[u][0].Name || !names[0].Hidden || names[1].Hidden {
				t.Fatalf("after the import, %s's names are %+v, want %+v", u, names, wantNames[u])
			}
		}
		moved, err := b.Store.ReadStream(ctx, domain.MovedHidesStream, 0, eventstore.Forwards, 10)
		if err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		if _, err := exportLog(ctx, b.Store, exportBounds{}, &again, nil); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, ctx, "verify", "--export", writeTemp(t, again.Bytes()), "--public-key", pub)
		if err != nil || !strings.Contains(out, "0 breaks") {
			t.Fatalf("verify the imported store's export: %q %v", out, err)
		}
		return again.String(), got, moved
	}
	again, got, moved := reimport(export.Bytes())
	if len(moved) != 1 || got.Events != want.Events-1+1 {
		t.Fatalf("%d log.hides_moved events and %d events, want 1 and %d (the ledger entry left out, the record added)", len(moved), got.Events, want.Events)
	}
	_, got2, moved2 := reimport([]byte(again))
	if len(moved2) != 1 || got2.Events != got.Events {
		t.Fatalf("the second import: %d log.hides_moved events and %d events, want 1 and %d", len(moved2), got2.Events, got.Events)
	}
}

// TestSealVerifyJSONAndVerifyProofCommands: integrity seal on a stopped
// store, verify --json and --since, and verify-proof with only the public
// key, on a proof that holds and on one that does not.
func TestSealVerifyJSONAndVerifyProofCommands(t *testing.T) {
	ctx := context.Background()
	keyPath, pub := keygen(t)
	dir := t.TempDir()
	a := sealedApp(t, dir, keyPath)
	seed(t, a)
	first, err := a.Store.ReadAll(ctx, eventstore.Start, 1)
	if err != nil || len(first) != 1 {
		t.Fatal(err)
	}
	a.close()
	t.Setenv("PROFILESTORE_INTEGRITY_SIGNING_KEY", keyPath)
	out, err := run(t, ctx, "integrity", "seal", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "latest seal 1 ") {
		t.Fatalf("integrity seal: %q %v", out, err)
	}
	out, err = run(t, ctx, "verify", "--data-dir", dir, "--json")
	var report struct {
		OK       bool `json:"ok"`
		Events   int  `json:"events"`
		LastSeal *struct {
			Seq uint64 `json:"seq"`
		} `json:"last_seal"`
	}
	if err != nil || json.Unmarshal([]byte(out), &report) != nil || !report.OK || report.LastSeal == nil || report.LastSeal.Seq != 1 || report.Events != 8 {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if out, err := run(t, ctx, "verify", "--data-dir", dir, "--since", "1"); err != nil || !strings.Contains(out, "0 breaks") {
		t.Fatalf("verify --since 1: %q %v", out, err)
	}

	a = sealedApp(t, dir, keyPath)
	proof, err := integrity.Prove(ctx, a.Store, first[0].Position)
	a.close()
	if err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(proof)
	out, err = run(t, ctx, "verify-proof", writeTemp(t, good), "--public-key", pub)
	if err != nil || !strings.HasPrefix(out, "proven: profile.field_set event "+first[0].ID.String()) {
		t.Fatalf("verify-proof: %q %v", out, err)
	}
	proof.Event.Data[len(proof.Event.Data)-4] ^= 1
	bad, _ := json.Marshal(proof)
	if out, err := run(t, ctx, "verify-proof", writeTemp(t, bad), "--public-key", pub); err == nil || !strings.Contains(err.Error(), "NOT proven") {
		t.Fatalf("verify-proof of a changed event: %q %v", out, err)
	}
	otherPub := strings.TrimSpace(strings.SplitN(strings.SplitN(mustKeygen(t), "public key: ", 2)[1], "\n", 2)[0])
	if _, err := run(t, ctx, "verify-proof", writeTemp(t, good), "--public-key", otherPub); err == nil {
		t.Fatal("verify-proof accepted a seal with another key")
	}
}

func mustKeygen(t *testing.T) string {
	t.Helper()
	out, err := run(t, context.Background(), "integrity", "keygen", "--key", filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

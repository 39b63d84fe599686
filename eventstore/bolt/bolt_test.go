package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	bbolt "go.etcd.io/bbolt"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/eventstore/storetest"
)

// quietLogger keeps test output to failures.
func quietLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return l
}

// harness opens each store in its own temporary directory.
type harness struct{}

func openStore(t testing.TB, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, bolt.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (harness) Open(t *testing.T) eventstore.Store {
	return openStore(t, filepath.Join(t.TempDir(), "events.db"))
}

func (harness) Reopen(t *testing.T, s eventstore.Store) eventstore.Store {
	bs := s.(*bolt.Store)
	path := bs.Path()
	if err := bs.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openStore(t, path)
}

func TestConformance(t *testing.T) { storetest.Run(t, harness{}) }

// TestOpenInUse: a file held by another open store fails at once with
// ErrInUse, for the log and for the keyring, instead of waiting seconds
// and printing bbolt's "timeout".
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "events.db"))
	if _, err := bolt.Open(s.Path(), bolt.Options{Logger: quietLogger()}); !errors.Is(err, bolt.ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	k, err := bolt.OpenKeyring(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if _, err := bolt.OpenKeyring(k.Path()); !errors.Is(err, bolt.ErrInUse) {
		t.Fatalf("second OpenKeyring: %v, want ErrInUse", err)
	}
}

// TestOpenErrorNamesThePathOnce: "bolt: open X: open X: is a directory"
// named the file twice.
func TestOpenErrorNamesThePathOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := bolt.Open(path, bolt.Options{Logger: quietLogger()})
	if err == nil || strings.Count(err.Error(), path) != 1 {
		t.Fatalf("Open: %v, want the path named once", err)
	}
}

// TestStreamIndexPagesStayFull: each stream's revisions are appended in
// order, so the stream index's pages are split near full, not in halves:
// with many streams written in turn, its leaf pages stay mostly full (a
// denser file, and smaller pages to read and copy at every commit).
func TestStreamIndexPagesStayFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openStore(t, path)
	ctx := context.Background()
	for round := 0; round < 40; round++ {
		for u := 0; u < 64; u++ {
			events := make([]eventstore.EventData, 10)
			for i := range events {
				events[i] = eventstore.EventData{ID: uuid.New(), Type: "profile.field_set", Data: []byte(`{}`)}
			}
			if _, err := s.Append(ctx, fmt.Sprintf("profile-@user%d:example.com", u), eventstore.Any, events); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error {
		st := tx.Bucket([]byte("streams")).Stats()
		fill := float64(st.LeafInuse) / float64(st.LeafPageN*db.Info().PageSize)
		if fill < 0.7 {
			t.Errorf("the stream index's %d leaf pages are %.0f%% full, want at least 70%%", st.LeafPageN, 100*fill)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

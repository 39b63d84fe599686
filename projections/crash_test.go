package projections_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
	"github.com/sirupsen/logrus"
)

// crashChildEnv names the data directory a re-executed test binary writes
// to, with the views following live, until it is killed; crashSeedEnv
// makes it write a backlog without views and exit, so the next child
// starts by catching up.
const (
	crashChildEnv = "PROFILESTORE_VIEWS_CRASH_CHILD"
	crashSeedEnv  = "PROFILESTORE_VIEWS_CRASH_SEED"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir, os.Getenv(crashSeedEnv) != "")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashStack is a data directory opened as serve opens it.
type crashStack struct {
	store  *bolt.Store
	keys   *bolt.Keyring
	sealer *domain.Sealer
	db     *projections.DB
	runner *projections.Runner
	prof   *domain.ProfileService
	rooms  *domain.RoomService
}

func openCrashStack(dir string) (*crashStack, error) {
	s := &crashStack{}
	var err error
	if s.store, err = bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{}); err != nil {
		return nil, err
	}
	if s.keys, err = bolt.OpenKeyring(filepath.Join(dir, "keys.db")); err != nil {
		return nil, err
	}
	s.sealer = domain.NewSealer(s.keys)
	s.prof = domain.NewProfileService(s.store, s.sealer, domain.DefaultPolicy)
	s.rooms = domain.NewRoomService(s.store, s.sealer, domain.DefaultPolicy, s.prof)
	if s.db, _, err = projections.OpenDB(filepath.Join(dir, "views"), viewstore.PebbleOptions{CacheBytes: 8 << 20, MemTableBytes: 1 << 20}); err != nil {
		return nil, err
	}
	s.runner = newRunnerOver(s, s.db)
	return s, nil
}

func newRunnerOver(s *crashStack, db *projections.DB) *projections.Runner {
	return newRunnerWith(s, db, projections.NewProfiles(db, 64), projections.NewRooms(db, 64))
}

func newRunnerWith(s *crashStack, db *projections.DB, profiles *projections.Profiles, rooms *projections.Rooms) *projections.Runner {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return projections.NewRunner(projections.Options{Store: s.store, Sealer: s.sealer, DB: db, BatchEvents: 256,
		Views:    []projections.View{profiles},
		Deferred: []projections.View{rooms, projections.NewNameIndex(db), projections.NewActivity(db)}, Logger: log})
}

func (s *crashStack) close() {
	s.runner.Close()
	s.db.Close()
	s.keys.Close()
	s.store.Close()
}

// crashChild writes renames, joins, leaves and per-room names of a few users
// in a few rooms, forever (or a backlog when seeding).
func crashChild(dir string, seed bool) {
	s, err := openCrashStack(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	if !seed {
		if err := s.runner.Start(ctx, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; !seed || i < 3000; i++ {
		u := domain.UserID(fmt.Sprintf("@u%d:crash.example", rng.IntN(12)))
		room := domain.RoomID(fmt.Sprintf("!r%d:crash.example", rng.IntN(4)))
		meta := domain.Metadata{OccurredAt: time.Now()}
		name, _ := json.Marshal(fmt.Sprintf("Name %d", i))
		switch rng.IntN(4) {
		case 0, 1:
			_, err = s.prof.SetField(ctx, domain.SetField{User: u, Key: domain.KeyDisplayName, Value: name, Actor: domain.ServerActor, Meta: meta}, nil)
		case 2:
			membership := domain.MembershipJoin
			if rng.IntN(3) == 0 {
				membership = domain.MembershipLeave
			}
			_, err = s.rooms.ChangeMembership(ctx, domain.ChangeMembership{Room: room, User: u, Membership: membership, Actor: domain.ServerActor, Meta: meta})
		default:
			_, err = s.rooms.SetMemberProfile(ctx, domain.SetMemberProfile{Room: room, User: u, Field: domain.KeyDisplayName, Value: fmt.Sprintf("Nick %d", i), Actor: domain.ServerActor, Meta: meta})
		}
		if err != nil && domain.ErrorCode(err) == "" {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	s.close()
}

// TestCrashLeavesViewsEqualToARebuild kills a server-like process with
// SIGKILL while its views catch up and while they follow live writes,
// several times. After each kill the deferred views stand exactly at their
// checkpoint; at the end, caught up, the view store holds exactly what a
// rebuild from the log writes.
func TestCrashLeavesViewsEqualToARebuild(t *testing.T) {
	dir := t.TempDir()
	seed := exec.Command(os.Args[0], "-test.run=^$")
	seed.Env = append(os.Environ(), crashChildEnv+"="+dir, crashSeedEnv+"=1")
	if out, err := seed.CombinedOutput(); err != nil {
		t.Fatalf("seeding: %v %s", err, out)
	}
	rng := rand.New(rand.NewPCG(11, 13))
	for round := range 6 {
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stderr bytes.Buffer
		child.Stderr = &stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		// The first rounds die during catch-up of the backlog, later ones live.
		delay := time.Duration(20+rng.IntN(400)) * time.Millisecond
		if round < 2 {
			delay = time.Duration(5+rng.IntN(30)) * time.Millisecond
		}
		time.Sleep(delay)
		_ = child.Process.Signal(syscall.SIGKILL)
		_ = child.Wait()
		if stderr.Len() > 0 {
			t.Fatalf("round %d: child failed: %s", round, stderr.String())
		}
		s, err := openCrashStack(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		cp, err := s.db.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if last := projections.NewRooms(s.db, 0).Position(); last != cp {
			t.Fatalf("round %d: the rooms view stands at %s, its checkpoint at %s", round, last, cp)
		}
		head, _ := s.store.Head(context.Background())
		if head.Before(cp) {
			t.Fatalf("round %d: checkpoint %s is past the log's head %s", round, cp, head)
		}
		t.Logf("round %d: checkpoint %s of %s", round, cp, head)
		s.close()
	}

	s, err := openCrashStack(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ctx := context.Background()
	if err := s.runner.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	head, _ := s.store.Head(ctx)
	if err := s.runner.WaitFor(wctx, head); err != nil {
		t.Fatal(err)
	}
	s.runner.Close()

	fresh := projections.OpenTestDB(t)
	profiles, rooms := projections.NewProfiles(fresh, 64), projections.NewRooms(fresh, 64)
	if err := newRunnerWith(s, fresh, profiles, rooms).Rebuild(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if diff := projections.Diff(t, s.db, fresh); diff != "" {
		t.Fatalf("the views after the crashes differ from a rebuild: %s", diff)
	}
	// A rebuild writes a store nothing reads yet: it keeps nothing in the
	// caches, and reads afterwards fill them again.
	if n := profiles.Cache().Len() + rooms.Cache().Len(); n != 0 {
		t.Errorf("the rebuild left %d objects in the view caches, want 0", n)
	}
	if st := profiles.Get("@u0:crash.example"); !st.Exists {
		t.Errorf("@u0:crash.example has no profile after the rebuild")
	}
	if profiles.Cache().Len() != 1 {
		t.Errorf("after one read the profiles cache holds %d entries, want 1", profiles.Cache().Len())
	}
}

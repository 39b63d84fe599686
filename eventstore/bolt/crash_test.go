package bolt_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
)

// crashChildEnv names the store file a re-executed test binary appends to
// until it is killed.
const crashChildEnv = "PROFILESTORE_BOLT_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func crashData(id uuid.UUID) []byte { return []byte(`{"id":"` + id.String() + `"}`) }

// crashChild appends from a few goroutines forever, printing each append as
// soon as it is acknowledged: "<last position> <last revision> <stream> <id>,<id>...".
func crashChild(path string) {
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("profile-crash%d", g)
			var last uint64
			for i := 0; ; i++ {
				evs := make([]eventstore.EventData, 1+i%3)
				ids := make([]string, len(evs))
				for j := range evs {
					id := uuid.New()
					evs[j] = eventstore.EventData{ID: id, Type: "crash.test", Data: crashData(id)}
					ids[j] = id.String()
				}
				res, err := s.Append(context.Background(), stream, eventstore.ExpectRevision(last, i > 0), evs)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				last = res.Revision
				// One write per line: lines from goroutines do not interleave.
				os.Stdout.WriteString(fmt.Sprintf("%d %d %s %s\n", res.Position.Commit, res.Revision, stream, strings.Join(ids, ",")))
			}
		}()
	}
	wg.Wait()
}

func TestCrashKeepsAcknowledgedAppends(t *testing.T) {
	for round := 0; round < 5; round++ {
		crashRound(t, round)
	}
}

func crashRound(t *testing.T, round int) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	var acked []string
	// Kill only once the child is appending, after 20 to 220 ms more.
	if lines.Scan() {
		acked = append(acked, lines.Text())
		delay := 20*time.Millisecond + rand.N(200*time.Millisecond)
		time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
	} else {
		cmd.Process.Kill()
	}
	for lines.Scan() {
		acked = append(acked, lines.Text())
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child ended with %v, not SIGKILL; stderr: %s", round, err, stderr.String())
	}
	if len(acked) == 0 {
		t.Fatalf("round %d: the child acknowledged nothing", round)
	}

	s, err := bolt.Open(path, bolt.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
	}
	defer s.Close()
	ctx := context.Background()
	byPos := map[uint64]eventstore.RecordedEvent{}
	var last eventstore.Position
	for {
		page, err := s.ReadAll(ctx, last, 1000)
		if err != nil {
			t.Fatalf("round %d: ReadAll: %v", round, err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			byPos[e.Position.Commit] = e
			last = e.Position
		}
	}
	for _, line := range acked {
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("round %d: bad line %q", round, line)
		}
		pos, _ := strconv.ParseUint(f[0], 10, 64)
		rev, _ := strconv.ParseUint(f[1], 10, 64)
		ids := strings.Split(f[3], ",")
		for j, idText := range ids {
			back := uint64(len(ids) - 1 - j)
			e, ok := byPos[pos-back]
			id := uuid.MustParse(idText)
			if !ok || e.ID != id || e.Stream != f[2] || e.Revision != rev-back || !bytes.Equal(e.Data, crashData(id)) {
				t.Fatalf("round %d: acknowledged event %s (%s@%d, position %d) lost or changed: %+v", round, id, f[2], rev-back, pos-back, e)
			}
		}
	}
	head, _ := s.Head(ctx)
	if head != last {
		t.Fatalf("round %d: Head %s, last event %s", round, head, last)
	}
	res, err := s.Append(ctx, "profile-after-crash", eventstore.NoStream, []eventstore.EventData{{ID: uuid.New(), Type: "crash.after"}})
	if err != nil || res.Position.Commit != last.Commit+1 {
		t.Fatalf("round %d: append after the crash = %+v, %v; want position %d", round, res, err, last.Commit+1)
	}
	t.Logf("round %d: %d appends acknowledged, %d events stored", round, len(acked), len(byPos))
}

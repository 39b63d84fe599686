package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/eventstore"
)

type ackedWrite struct {
	pos  eventstore.Position
	user string
	name string
}

func put(base, token, user, name string) (eventstore.Position, error) {
	req, _ := http.NewRequest("PUT", base+"/_matrix/client/v3/profile/"+user+"/displayname", strings.NewReader(`{"displayname":"`+name+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return eventstore.Position{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		return eventstore.Position{}, fmt.Errorf("PUT %s: %d %s", user, resp.StatusCode, body)
	}
	return eventstore.ParsePosition(resp.Header.Get("X-Profilestore-Position"))
}

func displayName(t *testing.T, base, user string) (string, int) {
	t.Helper()
	resp, err := http.Get(base + "/_matrix/client/v3/profile/" + user + "/displayname")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`"displayname":"([^"]*)"`).FindSubmatch(body)
	if m == nil {
		return "", resp.StatusCode
	}
	return string(m[1]), resp.StatusCode
}

// serveIn runs serve on dir until the test ends and returns its base URL
// and a function that stops it.
func serveIn(t *testing.T, dir string) (string, func()) {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(t, ctx, "serve", "--data-dir", dir, "--listen", addr)
		done <- err
	}()
	base := "http://" + addr
	waitReady(t, base)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve %s: %v", dir, err)
			}
		})
	}
	t.Cleanup(stop)
	return base, stop
}

// TestBackupRestoreUnderWriteLoad: back up a running server while clients
// write, export from it too, restore the backup into a fresh directory and
// serve it: it has exactly the log up to the backup's position (the same
// events at the same positions), and its views show, for every user, the
// last acknowledged write at or before that position.
func TestBackupRestoreUnderWriteLoad(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	t.Setenv("PROFILESTORE_WRITES_PER_SECOND", "0")
	dir := t.TempDir()
	token, err := run(t, context.Background(), "token", "issue", "--admin", "--data-dir", dir, "@admin:example.com")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	base, stop := serveIn(t, dir)

	const writers, users = 4, 8
	var mu sync.Mutex
	var acked []ackedWrite
	quit := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-quit:
					return
				default:
				}
				user := fmt.Sprintf("@u%d:example.com", (w+seq)%users)
				name := fmt.Sprintf("name-%d-%d", w, seq)
				pos, err := put(base, token, user, name)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acked = append(acked, ackedWrite{pos, user, name})
				mu.Unlock()
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor := func(n int) {
		for count() < n {
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			http.Get(base + "/ready") // yield to the writers
		}
	}
	waitFor(100)

	dest := filepath.Join(t.TempDir(), "backup")
	out, _, err := run2(t, "backup", "--data-dir", dir, dest)
	if err != nil {
		t.Fatalf("backup while serving: %v", err)
	}
	m := regexp.MustCompile(`at position (\S+) \(from the running server\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("backup said %q", out)
	}
	at, err := eventstore.ParsePosition(m[1])
	if err != nil {
		t.Fatal(err)
	}
	exported, _, err := run2(t, "export", "--data-dir", dir)
	if err != nil || strings.Count(exported, "\n") < 100 {
		t.Fatalf("export while serving: %d lines, %v", strings.Count(exported, "\n"), err)
	}
	waitFor(count() + 50) // writes go on after the backup
	close(quit)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	stop()

	if _, err := os.Stat(filepath.Join(dest, "backup.json")); err != nil {
		t.Errorf("no manifest: %v", err)
	}
	// The same events at the same positions, up to the backup's position.
	want, _, err := run2(t, "export", "--data-dir", dir, "--to", at.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := run2(t, "export", "--data-dir", dest)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || strings.Count(got, "\n") != int(at.Commit) {
		t.Fatalf("the backup's log differs from the source's up to %s: %d and %d lines", at, strings.Count(got, "\n"), strings.Count(want, "\n"))
	}
	// The restored server's views.
	restoredBase, _ := serveIn(t, dest)
	latest := map[string]ackedWrite{}
	after := 0
	for _, a := range acked {
		if at.Before(a.pos) {
			after++
			continue
		}
		if a.pos.Commit > latest[a.user].pos.Commit {
			latest[a.user] = a
		}
	}
	if after == 0 {
		t.Fatal("no write landed after the backup: the test proves nothing about a live copy")
	}
	for u := range users {
		user := fmt.Sprintf("@u%d:example.com", u)
		name, status := displayName(t, restoredBase, user)
		if w, ok := latest[user]; ok && (status != 200 || name != w.name) {
			t.Errorf("%s restored: %d %q, want %q (written at %s)", user, status, name, w.name, w.pos)
		} else if !ok && status != 404 {
			t.Errorf("%s restored: %d, want 404 (no write before the backup)", user, status)
		}
	}
	pos, err := put(restoredBase, token, "@u0:example.com", "after restore")
	if err != nil || pos.Commit != at.Commit+1 {
		t.Errorf("first write after the restore at %v (%v), want %d", pos, err, at.Commit+1)
	}
}

// TestBackupStopped: a stopped data directory is copied directly; a
// non-empty target is refused.
func TestBackupStopped(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	src := seeded(t)
	if _, _, err := run2(t, "token", "issue", "--data-dir", src, "@alice:example.com"); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "b")
	out, _, err := run2(t, "backup", "--data-dir", src, dest)
	if err != nil || !strings.Contains(out, "(from the stopped data directory)") {
		t.Fatalf("backup: %q %v", out, err)
	}
	for _, f := range []string{"events.db", "keys.db", "tokens.yaml", "backup.json"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("backup lacks %s: %v", f, err)
		}
	}
	want, _, _ := run2(t, "export", "--data-dir", src)
	got, _, err := run2(t, "export", "--data-dir", dest)
	if err != nil || got != want || want == "" {
		t.Errorf("the backup's export differs: %v", err)
	}
	if _, _, err := run2(t, "backup", "--data-dir", src, dest); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("backup into a full directory: %v", err)
	}
}

// TestTokenRevokeOnRunningServer: "profilestore token revoke" while serve
// runs; the token is refused within a second, without a restart.
func TestTokenRevokeOnRunningServer(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	t.Setenv("PROFILESTORE_WRITES_PER_SECOND", "0") // the polling must meet no 429
	dir := t.TempDir()
	token, err := run(t, context.Background(), "token", "issue", "--data-dir", dir, "@alice:example.com")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	base, _ := serveIn(t, dir)
	if _, err := put(base, token, "@alice:example.com", "Alice"); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if _, _, err := run2(t, "token", "revoke", "--data-dir", dir, "--user", "@alice:example.com"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		_, err := put(base, token, "@alice:example.com", "Alice "+time.Now().Format(time.StampNano))
		if err != nil && strings.Contains(err.Error(), "401") && strings.Contains(err.Error(), "M_UNKNOWN_TOKEN") {
			return
		}
		if err != nil {
			t.Fatalf("after revocation: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the revoked token still writes after a second")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeWithoutControlSocket: a data directory whose path is too long
// for a unix socket still serves; backup then says why it cannot.
func TestServeWithoutControlSocket(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	base, _ := serveIn(t, dir)
	if _, status := displayName(t, base, "@nobody:example.com"); status != 404 {
		t.Fatalf("profile read: %d", status)
	}
	_, _, err := run2(t, "backup", "--data-dir", dir, filepath.Join(t.TempDir(), "b"))
	if err == nil || !strings.Contains(err.Error(), "control socket") {
		t.Fatalf("backup: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"github.com/profilestore/profilestore/eventstore/esdb/esdbtest"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := rootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeTokenRebuildExport runs the commands a new operator runs: issue a
// token, serve, write through the API, stop, rebuild, export.
func TestServeTokenRebuildExport(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	token, err := run(t, context.Background(), "token", "issue", "--data-dir", dir, "@alice:example.com")
	if err != nil || !strings.HasPrefix(token, "ps_") {
		t.Fatalf("token issue: %q %v", token, err)
	}
	token = strings.TrimSpace(token)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(t, ctx, "serve", "--data-dir", dir, "--listen", addr)
		done <- err
	}()
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/ready")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	req, _ := http.NewRequest("PUT", base+"/_matrix/client/v3/profile/@alice:example.com/displayname", strings.NewReader(`{"displayname":"Alice Liddell"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	putAt := resp.Header.Get("X-Profilestore-Position")
	// The view caches and the view store's size are in /metrics.
	if resp, err := http.Get(base + "/_matrix/client/v3/profile/@alice:example.com"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET profile: %v %v", resp, err)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`profilestore_view_cache_entries{cache="profiles"} 1`, `profilestore_view_cache_capacity{cache="rooms"}`,
		`profilestore_view_cache_hits_total{cache="profiles"}`, `profilestore_view_cache_misses_total{cache="rooms"}`, "profilestore_view_store_bytes ",
		"profilestore_view_store_block_cache_bytes ", "profilestore_view_store_open_tables ", "profilestore_view_store_memtable_bytes "} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "views", "MANIFEST-*")); len(m) == 0 {
		t.Error("no view store after a clean stop")
	}
	out, err := run(t, context.Background(), "rebuild", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "(1 profiles)") || putAt == "" || !strings.Contains(out, "to position "+putAt+" ") {
		t.Fatalf("rebuild: %q %v (the PUT was at %q)", out, err, putAt)
	}
	out, err = run(t, context.Background(), "export", "--data-dir", dir)
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"type":"profile.field_set"`) {
		t.Fatalf("export: %q %v", out, err)
	}
	if strings.Contains(out, "Alice Liddell") {
		t.Error("the export holds a plaintext name; values must stay sealed")
	}
}

func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte("listen: 127.0.0.1:9999\nstore: bolt\nprofile:\n  default_propagation: none\n"), 0o600)
	t.Setenv("PROFILESTORE_LISTEN", "127.0.0.1:7777")
	t.Setenv("PROFILESTORE_ESDB_URL", "") // a real server configured for the esdb suite must not leak in
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7777" || cfg.Profile.DefaultPropagation != "none" || cfg.DataDir != "./data" {
		t.Errorf("layers: %+v", cfg)
	}
	for _, bad := range []string{"store: mongo\n", "auth:\n  mode: homeserver\n", "profile:\n  default_propagation: some\n", "store: esdb\n"} {
		os.WriteFile(path, []byte(bad), 0o600)
		cfg, err := loadConfig(path)
		if err == nil {
			err = cfg.validate()
		}
		if err == nil {
			t.Errorf("config %q accepted", bad)
		}
	}
	os.WriteFile(path, []byte("listen: [\n"), 0o600)
	if _, err := loadConfig(path); err == nil {
		t.Error("malformed YAML accepted")
	}
}

// TestServeOnEventStoreDB runs the service with store: esdb against the
// in-process EventStoreDB test server: a write, an erasure, and a second
// instance on the same database that catches up and reads the write.
func TestServeOnEventStoreDB(t *testing.T) {
	srv := esdbtest.Start(t)
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	dirs := []string{t.TempDir(), t.TempDir()}
	token, err := run(t, context.Background(), "token", "issue", "--data-dir", dirs[0], "@alice:example.com")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	addrs := []string{freeAddr(t), freeAddr(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for i := range dirs {
		go func(i int) {
			_, err := run(t, ctx, "serve", "--store", "esdb", "--esdb-url", srv.URL(), "--data-dir", dirs[i], "--listen", addrs[i])
			errs <- err
		}(i)
	}
	for _, a := range addrs {
		waitReady(t, "http://"+a)
	}
	req, _ := http.NewRequest("PUT", "http://"+addrs[0]+"/_matrix/client/v3/profile/@alice:example.com/displayname", strings.NewReader(`{"displayname":"Alice on ESDB"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	pos := resp.Header.Get("X-Profilestore-Position")
	// Read your write on the other instance with the position header.
	req, _ = http.NewRequest("GET", "http://"+addrs[1]+"/_matrix/client/v3/profile/@alice:example.com/displayname", nil)
	req.Header.Set("X-Profilestore-Min-Position", pos)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Alice on ESDB") {
		t.Fatalf("second instance: %d %s", resp.StatusCode, body)
	}
	cancel()
	for range dirs {
		if err := <-errs; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/ready")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

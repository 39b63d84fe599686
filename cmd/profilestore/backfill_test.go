package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/prometheus/client_golang/prometheus"
)

// backfillDir is a data directory with a store and profilestore's
// registration, and a config naming the homeserver at hsURL.
func backfillDir(t *testing.T, hsURL string) (dir, config string, reg *appservice.Registration) {
	t.Helper()
	dir = t.TempDir()
	if _, stderr, err := run2(t, "appservice", "register", "--server-name", "localhost", "--data-dir", dir); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	s, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	reg, err = appservice.LoadRegistration(filepath.Join(dir, "appservice-registration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	config = filepath.Join(dir, "config.yaml")
	body := "log_level: error\n"
	if hsURL != "" {
		body += fmt.Sprintf("appservice:\n  homeserver_url: %s\n  backfill:\n    requests_per_second: 100\n", hsURL)
	}
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, config, reg
}

// historyHomeserver answers a backfill's calls as the appservice acting
// as @alice:localhost (the token is read at each request): one room, a
// create and two joins, in Dendrite's shapes.
func historyHomeserver(t *testing.T, asToken *string) *httptest.Server {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+*asToken || r.URL.Query().Get("user_id") != "@alice:localhost" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
			return
		}
		switch {
		case r.URL.Path == "/_matrix/client/v3/joined_rooms":
			_, _ = w.Write([]byte(`{"joined_rooms":["!r:localhost"]}`))
		case r.URL.Path == "/_matrix/client/v3/rooms/!r:localhost/messages" && r.URL.Query().Get("from") == "":
			_, _ = w.Write([]byte(`{"start":"t1","end":"t4","chunk":[
{"type":"m.room.create","event_id":"$c","room_id":"!r:localhost","sender":"@alice:localhost","state_key":"","origin_server_ts":1700000000000,"content":{}},
{"type":"m.room.member","event_id":"$a","room_id":"!r:localhost","sender":"@alice:localhost","state_key":"@alice:localhost","origin_server_ts":1700000000001,"content":{"membership":"join","displayname":"Alice"}},
{"type":"m.room.member","event_id":"$b","room_id":"!r:localhost","sender":"@bob:localhost","state_key":"@bob:localhost","origin_server_ts":1700000000002,"content":{"membership":"join","displayname":"Bob"}}]}`))
		default:
			_, _ = w.Write([]byte(`{"start":"t4","end":"t0_0","chunk":[]}`))
		}
	}))
	t.Cleanup(hs.Close)
	return hs
}

func TestBackfillCommand(t *testing.T) {
	var asToken string
	hs := historyHomeserver(t, &asToken)
	dir, config, reg := backfillDir(t, hs.URL)
	asToken = reg.ASToken

	report := func(args ...string) appservice.BackfillReport {
		t.Helper()
		stdout, stderr, err := run2(t, append([]string{"backfill", "--data-dir", dir, "--config", config, "--user", "@alice:localhost", "--json", "--quiet"}, args...)...)
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		var r appservice.BackfillReport
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("%v: %q", err, stdout)
		}
		return r
	}
	// Two global names (first seen at the joins) and two joins.
	if r := report(); r.Rooms != 1 || r.Done != 1 || r.Events != 3 || r.Recorded != 4 {
		t.Errorf("first run: %+v, want 1 room done, 3 events read, 4 changes recorded", r)
	}
	if r := report(); r.Done != 1 || r.Recorded != 0 {
		t.Errorf("second run: %+v, want nothing more recorded", r)
	}
	// A new checkpoint reads everything again and still appends nothing.
	if err := os.Remove(filepath.Join(dir, "backfill.db")); err != nil {
		t.Fatal(err)
	}
	if r := report(); r.Done != 1 || r.Events != 3 || r.Recorded != 0 {
		t.Errorf("run on a new checkpoint: %+v, want 3 events read, nothing recorded", r)
	}
}

func TestBackfillCommandNeedsTheHomeserver(t *testing.T) {
	dir, config, _ := backfillDir(t, "")
	_, _, err := run2(t, "backfill", "--data-dir", dir, "--config", config, "--quiet")
	if err == nil || !strings.Contains(err.Error(), "appservice.homeserver_url") {
		t.Fatalf("backfill without a homeserver: %v, want a message naming appservice.homeserver_url", err)
	}
}

func TestBackfillCommandSynapseAdminTokenFile(t *testing.T) {
	for name, content := range map[string]string{"missing": "", "empty": " \n"} {
		t.Run(name, func(t *testing.T) {
			dir, config, _ := backfillDir(t, "http://127.0.0.1:1")
			tokenFile := filepath.Join(dir, "admin-token")
			if name == "empty" {
				if err := os.WriteFile(tokenFile, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, _ := os.ReadFile(config)
			cfg = append(cfg, []byte("    synapse_admin_token_file: "+tokenFile+"\n")...)
			if err := os.WriteFile(config, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := run2(t, "backfill", "--data-dir", dir, "--config", config, "--quiet")
			if err == nil || !strings.Contains(err.Error(), "synapse_admin_token_file") {
				t.Fatalf("backfill with a %s admin token file: %v", name, err)
			}
		})
	}
}

// TestBackfillOnTheRunningServer: the service behind POST
// /_profilestore/v1/backfill runs one backfill at a time in the background
// and shows its progress in /metrics.
func TestBackfillOnTheRunningServer(t *testing.T) {
	var asToken string
	hs := historyHomeserver(t, &asToken)
	dir, _, reg := backfillDir(t, hs.URL)
	asToken = reg.ASToken
	cfg := defaultConfig()
	cfg.DataDir = dir
	cfg.Appservice.Enabled, cfg.Appservice.HomeserverURL = true, hs.URL
	a, err := openApp(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	svc := newBackfillService(a)
	defer a.close()
	a.backfill = svc
	started, err := svc.Start([]domain.UserID{"@alice:localhost"})
	if err != nil || !started {
		t.Fatalf("Start = %v, %v", started, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for svc.Status().Running && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := svc.Status()
	rep, _ := st.Report.(appservice.BackfillReport)
	if st.Running || st.Error != "" || rep.Done != 1 || rep.Recorded != 4 || st.Finished == nil || st.Phase != appservice.PhaseWrite || st.Done != 1 {
		t.Fatalf("status after the run: %+v (report %+v)", st, st.Report)
	}
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(svc.metrics.Collectors()...)
	got := map[string]float64{}
	families, err := reg2.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.GetGauge() != nil:
				got[name] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"profilestore_backfill_running":                       0,
		"profilestore_backfill_rooms{phase=write}":            1,
		"profilestore_backfill_rooms_done{phase=write}":       1,
		"profilestore_backfill_events_total{result=read}":     3,
		"profilestore_backfill_events_total{result=recorded}": 4,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
	// A second start runs again (the rooms are done: nothing is recorded).
	if started, err := svc.Start(nil); err != nil || !started {
		t.Fatalf("second Start = %v, %v", started, err)
	}
	svc.stop()
	if st := svc.Status(); st.Running {
		t.Errorf("still running after stop: %+v", st)
	}
}

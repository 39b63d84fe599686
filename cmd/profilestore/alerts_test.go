package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/alerts"
	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

func TestAlertsConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	yaml := `alerts:
  enabled: true
  console_url: https://profiles.example.com
  lookalike: {enabled: true, moderators_only: true}
  rename_burst: {enabled: true, count: 4, window: 15m}
  protected_names:
    - name: Admin
      holders: ["@admin:example.com"]
  rooms:
    "!room:example.com":
      lookalike: {enabled: false}
      protected_names: [{name: Room Bot}]
  matrix:
    room: "!mods:example.com"
    rooms: {"!room:example.com": "!room-mods:example.com"}
  webhooks:
    - url: https://hooks.example.com/p
      secret_file: /run/secrets/hook
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Alerts
	if !a.Enabled || !a.Lookalike.ModeratorsOnly || a.RenameBurst.Count != 4 || a.RenameBurst.Window != 15*time.Minute ||
		len(a.ProtectedNames) != 1 || a.ProtectedNames[0].Holders[0] != "@admin:example.com" {
		t.Errorf("rules: %+v", a.AlertConfig)
	}
	room := a.For("!room:example.com")
	if room.Lookalike.Enabled || len(room.ProtectedNames) != 2 {
		t.Errorf("the room's rules: %+v", room)
	}
	if a.Matrix.Room != "!mods:example.com" || a.Matrix.Rooms["!room:example.com"] != "!room-mods:example.com" || a.Webhooks[0].SecretFile != "/run/secrets/hook" {
		t.Errorf("delivery: %+v %+v", a.Matrix, a.Webhooks)
	}
	// Without an alerts section the default rules apply once enabled.
	if d := defaultConfig().Alerts; d.Enabled || !d.Lookalike.Enabled || d.RenameBurst.Count != 5 {
		t.Errorf("defaults: %+v", d)
	}
}

func TestAlertsConfigMistakes(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		set  func(*AlertsConfig)
		want string
	}{
		{"matrix without the appservice", func(c *AlertsConfig) { c.Matrix.Room = "!mods:example.com" }, "alerts.matrix needs appservice.enabled"},
		{"short secret", func(c *AlertsConfig) { c.Webhooks = []WebhookConfig{{URL: "https://h.example.com", Secret: "x"}} }, "needs a secret of at least 16 characters"},
		{"short secret file", func(c *AlertsConfig) {
			c.Webhooks = []WebhookConfig{{URL: "https://h.example.com", SecretFile: secret}}
		}, "needs a secret of at least 16 characters"},
		{"both secrets", func(c *AlertsConfig) {
			c.Webhooks = []WebhookConfig{{URL: "https://h.example.com", Secret: strings.Repeat("s", 16), SecretFile: secret}}
		}, "give secret or secret_file, not both"},
		{"webhook url", func(c *AlertsConfig) {
			c.Webhooks = []WebhookConfig{{URL: "hooks.example.com", Secret: strings.Repeat("s", 16)}}
		}, `alerts.webhooks[0].url "hooks.example.com" is not an http(s) URL`},
		{"same webhook twice", func(c *AlertsConfig) {
			h := WebhookConfig{URL: "https://h.example.com/a", Secret: strings.Repeat("s", 16)}
			c.Webhooks = []WebhookConfig{h, h}
		}, "is configured twice"},
		{"burst", func(c *AlertsConfig) { c.RenameBurst.Count = 1 }, "alerts.rename_burst: count must be at least 2"},
		{"console url", func(c *AlertsConfig) { c.ConsoleURL = "profiles" }, `alerts.console_url "profiles" is not an http(s) URL`},
		{"room id", func(c *AlertsConfig) { c.Rooms = map[domain.RoomID]domain.RoomAlertRules{"room": {}} }, `alerts.rooms: "room" is not a room id`},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := testApp(t, t.TempDir())
			defer a.close()
			a.cfg.Alerts.Enabled = true
			c.set(&a.cfg.Alerts)
			_, err := a.withAlerts(&pshttp.Config{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
}

// TestServeDeliversAlertsToAWebhook runs serve with alerts on: a member
// joins a room under a look-alike of its moderator's name through the
// admin API, and the configured webhook receives the signed alert.
func TestServeDeliversAlertsToAWebhook(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	const secret = "0123456789abcdef0123"
	var mu sync.Mutex
	var got []alerts.Payload
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, _ := strconv.ParseInt(r.Header.Get("X-Profilestore-Timestamp"), 10, 64)
		if r.Header.Get("X-Profilestore-Signature") != alerts.Signature(secret, ts, body) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var p alerts.Payload
		_ = json.Unmarshal(body, &p)
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	defer hook.Close()
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("alerts:\n  enabled: true\n  webhooks:\n    - url: "+hook.URL+"\n      secret: "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROFILESTORE_CONFIG", config)
	token, err := run(t, context.Background(), "token", "issue", "--admin", "--data-dir", dir, "@admin:example.com")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	base, _ := serveIn(t, dir)
	// The watcher starts at the log's head; give it its checkpoint first.
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(filepath.Join(dir, "alerts-watched.json")); err != nil; _, err = os.Stat(filepath.Join(dir, "alerts-watched.json")) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never wrote its checkpoint")
		}
		time.Sleep(10 * time.Millisecond)
	}
	put := func(path, body string) {
		req, _ := http.NewRequest("PUT", base+"/_profilestore/v1/rooms/!room:example.com"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT %s: %d", path, resp.StatusCode)
		}
	}
	put("/power_levels", `{"users":{"@alice:example.com":100},"kick":50}`)
	put("/members/@alice:example.com", `{"membership":"join","displayname":"Alice"}`)
	put("/members/@eve:example.com", `{"membership":"join","displayname":"\u0410lice"}`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no alert reached the webhook")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if p := got[0]; len(got) != 1 || p.Rule != domain.AlertLookalike || p.UserID != "@eve:example.com" || !p.Moderator || p.Others[0].UserID != "@alice:example.com" {
		t.Errorf("delivered: %+v", got)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(metrics), `profilestore_alerts_raised_total{rule="lookalike"} 1`) || !strings.Contains(string(metrics), "profilestore_alert_deliveries_total") {
		t.Errorf("metrics lack the alerts'")
	}
}

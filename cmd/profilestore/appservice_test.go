package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
)

// TestAppserviceAuthWiring loads a bridge's registration as the config names
// it: its exclusive namespace is writable, its non-exclusive one is not, and
// without user_id it acts as its sender on the configured server.
func TestAppserviceAuthWiring(t *testing.T) {
	path := filepath.Join(t.TempDir(), "irc.yaml")
	reg := `id: irc
url: null
as_token: bridge-as-token
hs_token: bridge-hs-token
sender_localpart: _irc_bot
namespaces:
  users:
    - {regex: "@_irc_.*:example\\.com", exclusive: true}
    - {regex: "@.*:example\\.com", exclusive: false}
`
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := appserviceAuth(AppserviceConfig{Registrations: []string{path}}, nil); err == nil {
		t.Fatal("registrations without server_name accepted")
	}
	auth, err := appserviceAuth(AppserviceConfig{Registrations: []string{path}, ServerName: "example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if id, err := auth.Authenticate(ctx, "bridge-as-token"); err != nil || id.User != "@_irc_bot:example.com" || id.Appservice != "irc" {
		t.Errorf("sender: %+v %v", id, err)
	}
	if id, err := auth.AuthenticateAs(ctx, "bridge-as-token", "@_irc_x:example.com"); err != nil || id.User != "@_irc_x:example.com" {
		t.Errorf("ghost in the exclusive namespace: %+v %v", id, err)
	}
	if _, err := auth.AuthenticateAs(ctx, "bridge-as-token", "@alice:example.com"); domain.ErrorCode(err) != domain.ErrCodeExclusive {
		t.Errorf("user in the non-exclusive namespace: %v", err)
	}
	if _, err := auth.Authenticate(ctx, "bridge-hs-token"); domain.ErrorCode(err) != domain.ErrCodeUnknownToken {
		t.Errorf("hs_token accepted as a client token: %v", err)
	}
}

// TestServeAnswersProfileLookups: with appservice.enabled, serve answers
// the homeserver's MSC4337 look-ups under the registration's hs_token,
// from what is stored (not displayname: the homeserver's own), unless
// appservice.profile_lookup.enabled is false.
func TestServeAnswersProfileLookups(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		t.Run(map[bool]string{true: "enabled", false: "disabled"}[enabled], func(t *testing.T) {
			t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
			dir := t.TempDir()
			if _, stderr, err := run2(t, "appservice", "register", "--server-name", "localhost", "--data-dir", dir); err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			reg, err := appservice.LoadRegistration(filepath.Join(dir, "appservice-registration.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			config := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(config, []byte(fmt.Sprintf("appservice:\n  enabled: true\n  profile_lookup: {enabled: %v}\n", enabled)), 0o600); err != nil {
				t.Fatal(err)
			}
			token, err := run(t, context.Background(), "token", "issue", "--data-dir", dir, "@alice:localhost")
			if err != nil {
				t.Fatal(err)
			}
			addr := freeAddr(t)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := run(t, ctx, "serve", "--data-dir", dir, "--config", config, "--listen", addr)
				done <- err
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			base := "http://" + addr
			waitReady(t, base)
			do := func(method, path, tok, body string) (int, string) {
				t.Helper()
				req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			tok := strings.TrimSpace(token)
			for key, value := range map[string]string{"displayname": `"Alice"`, "org.example.job_title": `"Eng"`} {
				if status, body := do("PUT", "/_matrix/client/v3/profile/@alice:localhost/"+key, tok, `{"`+key+`":`+value+`}`); status != 200 {
					t.Fatalf("PUT %s: %d %s", key, status, body)
				}
			}
			status, body := do("GET", "/_matrix/app/v1/profile/@alice:localhost", reg.HSToken, "")
			if enabled && (status != 200 || strings.TrimSpace(body) != `{"org.example.job_title":"Eng"}`) {
				t.Fatalf("look-up: %d %q", status, body)
			}
			if !enabled && (status != 404 || !strings.Contains(body, "M_UNRECOGNIZED")) {
				t.Fatalf("look-up with profile_lookup disabled: %d %s", status, body)
			}
			if status, body := do("GET", "/_matrix/app/v1/profile/@alice:localhost", tok, ""); enabled && status != 403 {
				t.Errorf("look-up with a client token: %d %s, want 403", status, body)
			}
		})
	}
}

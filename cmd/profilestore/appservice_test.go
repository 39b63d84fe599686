package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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

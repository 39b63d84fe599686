package http_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// refusedWithin polls Authenticate until the token is refused, failing the
// test if it still works after d.
func refusedWithin(t *testing.T, tf *pshttp.TokenFile, token string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, err := tf.Authenticate(context.Background(), token)
		if domain.ErrorCode(err) == domain.ErrCodeUnknownToken {
			return
		}
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token still works after %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRevocationOnRunningServer: a token revoked with RevokeTokens (what
// "profilestore token revoke" runs), or by deleting its entry in an editor,
// stops working on a loaded TokenFile within a second; the others go on.
func TestRevocationOnRunningServer(t *testing.T) {
	for _, how := range []string{"revoke", "edit"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.yaml")
			keep, err := pshttp.IssueToken(path, "@keep:example.com", false, "")
			if err != nil {
				t.Fatal(err)
			}
			gone, err := pshttp.IssueToken(path, "@gone:example.com", false, "")
			if err != nil {
				t.Fatal(err)
			}
			tf, err := pshttp.LoadTokenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tf.Authenticate(context.Background(), gone); err != nil {
				t.Fatalf("before revocation: %v", err)
			}
			switch how {
			case "revoke":
				if _, err := pshttp.RevokeTokens(path, pshttp.TokenMatch{Token: gone}); err != nil {
					t.Fatal(err)
				}
			case "edit":
				// Rewrite the file in place (same inode), as an editor may.
				data, _ := os.ReadFile(path)
				i := strings.Index(string(data), "  - user_id: '@gone:example.com'")
				if i < 0 {
					t.Fatalf("entry not found in\n%s", data)
				}
				if err := os.WriteFile(path, data[:i], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			refusedWithin(t, tf, gone, time.Second)
			if id, err := tf.Authenticate(context.Background(), keep); err != nil || id.User != "@keep:example.com" {
				t.Errorf("the other token: %+v %v", id, err)
			}
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	old, err := pshttp.IssueTokenFor(path, pshttp.TokenSpec{User: "@a:example.com", Expires: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := pshttp.IssueTokenFor(path, pshttp.TokenSpec{User: "@a:example.com", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	tf, err := pshttp.LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tf.Authenticate(context.Background(), old); domain.ErrorCode(err) != domain.ErrCodeUnknownToken || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	if _, err := tf.Authenticate(context.Background(), fresh); err != nil {
		t.Errorf("unexpired token: %v", err)
	}
}

func TestListAndRevokeTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	var toks []string
	for _, u := range []domain.UserID{"@a:example.com", "@a:example.com", "@b:example.com"} {
		tok, err := pshttp.IssueTokenFor(path, pshttp.TokenSpec{User: u, Comment: "for " + string(u), Admin: u == "@b:example.com"})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	list, err := pshttp.ListTokens(path)
	if err != nil || len(list) != 3 {
		t.Fatalf("%v %v", list, err)
	}
	if list[2].User != "@b:example.com" || !list[2].Admin || list[2].Comment != "for @b:example.com" || list[2].Created.IsZero() || len(list[2].Hash) != 64 {
		t.Errorf("list entry: %+v", list[2])
	}
	for _, c := range []struct {
		name string
		m    pshttp.TokenMatch
		want string
	}{
		{"short prefix", pshttp.TokenMatch{HashPrefix: "ab"}, "at least 6"},
		{"not hex", pshttp.TokenMatch{HashPrefix: "zzzzzzzz"}, "not a hash prefix"},
		{"no match", pshttp.TokenMatch{User: "@nobody:example.com"}, "no token matches"},
		{"nothing", pshttp.TokenMatch{}, "nothing selects"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := pshttp.RevokeTokens(path, c.m); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
	revoked, err := pshttp.RevokeTokens(path, pshttp.TokenMatch{HashPrefix: list[2].Hash[:8]})
	if err != nil || len(revoked) != 1 || revoked[0].User != "@b:example.com" {
		t.Fatalf("by prefix: %v %v", revoked, err)
	}
	revoked, err = pshttp.RevokeTokens(path, pshttp.TokenMatch{User: "@a:example.com"})
	if err != nil || len(revoked) != 2 {
		t.Fatalf("by user: %v %v", revoked, err)
	}
	if list, err := pshttp.ListTokens(path); err != nil || len(list) != 0 {
		t.Errorf("after revoking all: %v %v", list, err)
	}
	data, _ := os.ReadFile(path)
	for _, tok := range toks {
		if strings.Contains(string(data), tok) {
			t.Error("the file holds a token")
		}
	}
}

// TestQueryAccessToken: ?access_token= works like the header (older clients
// and bridges send it); two different tokens are refused.
func TestQueryAccessToken(t *testing.T) {
	ts := newTestService(t)
	A := ts.tokens[alice]
	r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?access_token="+A, "", `{"displayname":"Alice Q"}`)
	if r.Status != 200 {
		t.Fatalf("write with a query token: %d %s", r.Status, r.Body)
	}
	r = ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?access_token="+A, ts.tokens[bob], `{"displayname":"Alice R"}`)
	if r.Status != 401 || !strings.Contains(string(r.Body), "M_UNKNOWN_TOKEN") {
		t.Fatalf("header and query name different tokens: %d %s", r.Status, r.Body)
	}
	r = ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname?access_token="+A, A, `{"displayname":"Alice S"}`)
	if r.Status != 200 {
		t.Fatalf("the same token twice: %d %s", r.Status, r.Body)
	}
}

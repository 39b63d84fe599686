package appservice_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// lookupService is profilestore serving MSC4337, with alice's profile
// stored: a display name, an avatar and a custom field.
func lookupService(t *testing.T, lookup pshttp.ProfileLookup, requireAuth bool) *mirrorService {
	t.Helper()
	ms := newMirrorService(t)
	ms.lookup, ms.requireAuth = &lookup, requireAuth
	ms.restart()
	ctx := context.Background()
	var last domain.WriteResult
	for k, v := range map[string]string{domain.KeyDisplayName: `"Alice"`, domain.KeyAvatarURL: `"mxc://localhost/a"`, "org.example.job_title": `"Eng"`} {
		res, err := ms.app.Profiles.SetField(ctx, domain.SetField{User: alice, Actor: domain.ServerActor, Key: k, Value: json.RawMessage(v),
			PropagateTo: domain.PropagateUnchanged, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		last = res
	}
	if err := ms.app.Runner.WaitFor(ctx, last.Position); err != nil {
		t.Fatal(err)
	}
	return ms
}

// homeserverSide is the registration a homeserver implementing MSC4337
// reads from profilestore's file, pointed at the running server: the
// supplement client profilestore already has plays the homeserver.
func homeserverSide(t *testing.T, ms *mirrorService, unstable bool) *appservice.Supplier {
	t.Helper()
	reg := *ms.reg
	u := ms.server.URL
	reg.URL = &u
	reg.SupportsProfileLookup, reg.UnstableProfileLookup = !unstable, unstable
	return appservice.NewSupplier(appservice.SupplierOptions{Registrations: []*appservice.Registration{&reg}, Deadline: 5 * time.Second, Logger: quietLogger()})
}

func TestProfileLookupFromTheHomeserverSide(t *testing.T) {
	for _, unstable := range []bool{false, true} {
		name := map[bool]string{false: "stable", true: "unstable"}[unstable]
		t.Run(name, func(t *testing.T) {
			ms := lookupService(t, pshttp.ProfileLookup{}, false)
			hs := homeserverSide(t, ms, unstable)
			ctx := context.Background()
			got := hs.Supplement(ctx, alice, "", "@bob:localhost")
			if len(got) != 1 || string(got["org.example.job_title"]) != `"Eng"` {
				t.Fatalf("full profile supplied %v, want only the custom field (displayname and avatar_url are the homeserver's)", got)
			}
			if got := hs.Supplement(ctx, alice, "org.example.job_title", ""); string(got["org.example.job_title"]) != `"Eng"` {
				t.Fatalf("one key supplied %v", got)
			}
			if got := hs.Supplement(ctx, alice, domain.KeyDisplayName, ""); got != nil {
				t.Fatalf("displayname supplied %v with standard_fields off", got)
			}
			if got := hs.Supplement(ctx, "@nobody:localhost", "", ""); got != nil {
				t.Fatalf("a user with nothing stored supplied %v", got)
			}
		})
	}
	t.Run("standard fields", func(t *testing.T) {
		ms := lookupService(t, pshttp.ProfileLookup{StandardFields: true}, false)
		got := homeserverSide(t, ms, false).Supplement(context.Background(), alice, "", "")
		if len(got) != 3 || string(got[domain.KeyDisplayName]) != `"Alice"` || string(got[domain.KeyAvatarURL]) != `"mxc://localhost/a"` {
			t.Fatalf("full profile with standard_fields = %v", got)
		}
	})
}

// lookup sends one MSC4337 request as the MSC describes it.
func lookup(t *testing.T, ms *mirrorService, method, path, token string) (int, string, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, ms.server.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, path, b)
	}
	code, _ := body["errcode"].(string)
	return resp.StatusCode, code, resp.Header, body
}

func TestProfileLookupRoutes(t *testing.T) {
	ms := lookupService(t, pshttp.ProfileLookup{}, false)
	a := url.PathEscape(alice)
	rows := []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"full profile", "GET", "/_matrix/app/v1/profile/" + a, ms.reg.HSToken, 200, ""},
		{"full profile, unstable", "GET", "/_matrix/app/uk.half-shot.msc4337/profile/" + a, ms.reg.HSToken, 200, ""},
		{"one key", "GET", "/_matrix/app/v1/profile/" + a + "/org.example.job_title?from_user_id=%40bob%3Alocalhost", ms.reg.HSToken, 200, ""},
		{"federated requester", "GET", "/_matrix/app/v1/profile/" + a + "?origin_server=remote.example", ms.reg.HSToken, 200, ""},
		{"no token", "GET", "/_matrix/app/v1/profile/" + a, "", 401, "M_MISSING_TOKEN"},
		{"wrong token", "GET", "/_matrix/app/v1/profile/" + a, "nope", 403, "M_FORBIDDEN"},
		{"as_token is not hs_token", "GET", "/_matrix/app/v1/profile/" + a, ms.reg.ASToken, 403, "M_FORBIDDEN"},
		{"unknown user", "GET", "/_matrix/app/v1/profile/%40ghost%3Alocalhost", ms.reg.HSToken, 404, "M_NOT_FOUND"},
		{"unset key", "GET", "/_matrix/app/v1/profile/" + a + "/org.example.unset", ms.reg.HSToken, 404, "M_NOT_FOUND"},
		{"homeserver's own key", "GET", "/_matrix/app/v1/profile/" + a + "/displayname", ms.reg.HSToken, 404, "M_NOT_FOUND"},
		{"not a user id", "GET", "/_matrix/app/v1/profile/alice", ms.reg.HSToken, 400, "M_INVALID_PARAM"},
		{"bad key", "GET", "/_matrix/app/v1/profile/" + a + "/Bad%20Key", ms.reg.HSToken, 400, "M_INVALID_PARAM"},
		{"bad from_user_id", "GET", "/_matrix/app/v1/profile/" + a + "?from_user_id=bob", ms.reg.HSToken, 400, "M_INVALID_PARAM"},
		{"from_user_id twice", "GET", "/_matrix/app/v1/profile/" + a + "?from_user_id=%40b%3Ax&from_user_id=%40c%3Ax", ms.reg.HSToken, 400, "M_INVALID_PARAM"},
		{"bad origin_server", "GET", "/_matrix/app/v1/profile/" + a + "?origin_server=not%20a%20server", ms.reg.HSToken, 400, "M_INVALID_PARAM"},
		{"wrong method", "POST", "/_matrix/app/v1/profile/" + a, ms.reg.HSToken, 405, "M_UNRECOGNIZED"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			status, code, h, body := lookup(t, ms, row.method, row.path, row.token)
			if status != row.status || code != row.code {
				t.Fatalf("%d %s %v, want %d %s", status, code, body, row.status, row.code)
			}
			if status == 200 {
				if h.Get("Cache-Control") != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", h.Get("Cache-Control"))
				}
				if body["org.example.job_title"] != "Eng" || len(body) != 1 {
					t.Errorf("body %v", body)
				}
			}
		})
	}
}

// TestProfileLookupRequesters: with profile.require_auth an unknown
// requester is told nothing, a named one is answered, and neither answer
// is reused for the other (asked alternately).
func TestProfileLookupRequesters(t *testing.T) {
	ms := lookupService(t, pshttp.ProfileLookup{}, true)
	base := "/_matrix/app/v1/profile/" + url.PathEscape(alice)
	for i := 0; i < 2; i++ {
		if status, code, _, _ := lookup(t, ms, "GET", base, ms.reg.HSToken); status != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("round %d: unknown requester: %d %s, want 404 M_NOT_FOUND", i, status, code)
		}
		if status, _, _, body := lookup(t, ms, "GET", base+"?from_user_id=%40bob%3Alocalhost", ms.reg.HSToken); status != 200 || body["org.example.job_title"] != "Eng" {
			t.Fatalf("round %d: from_user_id: %d %v", i, status, body)
		}
	}
	// The supplement client sends from_user_id only when it knows the reader.
	hs := homeserverSide(t, ms, false)
	if got := hs.Supplement(context.Background(), alice, "", ""); got != nil {
		t.Fatalf("anonymous supplement %v", got)
	}
	if got := hs.Supplement(context.Background(), alice, "", "@bob:localhost"); string(got["org.example.job_title"]) != `"Eng"` {
		t.Fatalf("supplement for bob %v", got)
	}
}

// TestProfileLookupOff: with profile_lookup disabled the route is unknown.
func TestProfileLookupOff(t *testing.T) {
	ms := newMirrorService(t)
	if status, code, _, _ := lookup(t, ms, "GET", "/_matrix/app/v1/profile/"+url.PathEscape(alice), ms.reg.HSToken); status != 404 || code != "M_UNRECOGNIZED" {
		t.Fatalf("%d %s, want 404 M_UNRECOGNIZED", status, code)
	}
}

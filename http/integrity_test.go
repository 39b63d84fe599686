package http_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/eventstore/integrity"
	pshttp "github.com/profilestore/profilestore/http"
)

func withIntegrity(pub ed25519.PublicKey) serviceOption {
	return func(c *pshttp.Config) {
		c.Integrity = integrity.NewChecker(c.Store, []ed25519.PublicKey{pub}, nil)
		c.SealKey = pub
	}
}

func TestIntegrityRoutes(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestService(t, withIntegrity(pub), withAnalytics(time.Minute))
	admin := ts.tokens["@admin:example.com"]
	first := ts.setName(alice, "Alice")
	ts.setName(alice, "Alice Again")

	for name, c := range map[string]struct {
		method, path, token string
		status              int
		errcode             string
	}{
		"state without a token":    {"GET", "/_profilestore/v1/integrity", "", 401, "M_MISSING_TOKEN"},
		"state as a user":          {"GET", "/_profilestore/v1/integrity", ts.tokens[alice], 403, "M_FORBIDDEN"},
		"proof as a user":          {"GET", "/_profilestore/v1/integrity/proof?position=" + first, ts.tokens[alice], 403, "M_FORBIDDEN"},
		"check as a user":          {"POST", "/_profilestore/v1/integrity/check", ts.tokens[alice], 403, "M_FORBIDDEN"},
		"proof without a position": {"GET", "/_profilestore/v1/integrity/proof", admin, 400, "M_MISSING_PARAM"},
		"proof of a bad position":  {"GET", "/_profilestore/v1/integrity/proof?position=x", admin, 400, "M_INVALID_PARAM"},
		"proof of no event":        {"GET", "/_profilestore/v1/integrity/proof?position=99999", admin, 404, "M_NOT_FOUND"},
		"proof before any seal":    {"GET", "/_profilestore/v1/integrity/proof?position=" + first, admin, 503, "IO.PROFILESTORE.NOT_READY"},
	} {
		t.Run(name, func(t *testing.T) {
			r := ts.do(c.method, c.path, c.token, nil)
			if r.Status != c.status || r.errcode(t) != c.errcode {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, c.status, c.errcode)
			}
		})
	}

	feed, _ := ts.openFeed("?category=log", analyticsToken)
	if _, err := integrity.NewWriter(ts.store, integrity.WriterOptions{Key: key}).SealNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Witnesses keep seals from the change feed.
	if ev := feed.next(); ev.Event != integrity.SealType || ev.Data["data"].(map[string]any)["seq"] != float64(1) {
		t.Fatalf("feed: %+v", ev)
	}

	var state struct {
		PublicKey  string             `json:"public_key"`
		LatestSeal *integrity.SealRef `json:"latest_seal"`
		Check      integrity.CheckStatus
	}
	if err := json.Unmarshal(okBody(t, ts, "/_profilestore/v1/integrity", analyticsToken), &state); err != nil {
		t.Fatal(err)
	}
	if state.PublicKey != integrity.EncodePublicKey(pub) || state.LatestSeal == nil || state.LatestSeal.Seq != 1 {
		t.Fatalf("state: %+v", state)
	}

	var proof integrity.Proof
	if err := json.Unmarshal(okBody(t, ts, "/_profilestore/v1/integrity/proof?position="+first, analyticsToken), &proof); err != nil {
		t.Fatal(err)
	}
	if err := integrity.VerifyProof(&proof, []ed25519.PublicKey{pub}); err != nil || proof.Event.Position != first {
		t.Fatalf("proof of %s: %v (%s)", first, err, proof.Event.Position)
	}

	if r := ts.do("POST", "/_profilestore/v1/integrity/check", admin, nil); r.Status != 202 {
		t.Fatalf("start a check: %d %s", r.Status, r.Body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := json.Unmarshal(okBody(t, ts, "/_profilestore/v1/integrity", admin), &state); err != nil {
			t.Fatal(err)
		}
		if !state.Check.Running && !state.Check.Checked.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the check did not finish within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if state.Check.VerifiedSeal != 1 || len(state.Check.Breaks) != 0 || state.Check.Error != "" || state.Check.Events < 3 {
		t.Fatalf("check: %+v", state.Check)
	}
	// The console's overview says how far the history is verified.
	status, body, _ := ts.consoleGet("/console/", ts.consoleCookieOf("@admin:example.com"))
	if status != 200 || !strings.Contains(body, "History verified up to seal 1 (sealed ") || !strings.Contains(body, "no breaks in ") {
		t.Fatalf("console overview: %d\n%s", status, body)
	}
}

func okBody(t *testing.T, ts *testService, path, token string) []byte {
	t.Helper()
	r := ts.do("GET", path, token, nil)
	if r.Status != 200 {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	return r.Body
}

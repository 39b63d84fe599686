package http_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// scanDir returns the files under dir whose bytes contain marker.
func scanDir(t *testing.T, dir string, marker string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil // a table the view store deleted while we walked
		}
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(marker)) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestEraseLeavesNothingReadable(t *testing.T) {
	ts := newTestService(t)
	A := ts.tokens[alice]
	const name, field, avatar = "Zebediah Quux 7731", "secret-marker-9931", "mxc://example.com/QuuxAvatar7731"
	for path, body := range map[string]string{
		"displayname":      `{"displayname":"` + name + `"}`,
		"avatar_url":       `{"avatar_url":"` + avatar + `"}`,
		"org.example.note": `{"org.example.note":"` + field + `"}`,
	} {
		if r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/"+path, A, body); r.Status != 200 {
			t.Fatalf("%s: %d %s", path, r.Status, r.Body)
		}
	}
	// In a room too: the name at join, and a per-room nickname.
	ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "join"})
	ts.ok("PUT", v1+"/members/"+string(bob), admin, map[string]string{"membership": "join"})
	ts.ok("PUT", v1+"/members/"+string(alice)+"/profile/displayname", alice, map[string]string{"displayname": "Room Quux 7731"})
	if err := ts.runner.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ts.db.Sync(); err != nil {
		t.Fatal(err)
	}
	// The test can fail: the view store's files hold the plaintext before
	// erasure, and the log never does.
	// A background compaction may replace a table while the scan walks
	// the directory: look again before concluding.
	var found []string
	for try := 0; try < 50 && len(found) == 0; try++ {
		if try > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		found = scanDir(t, ts.dir, name)
	}
	if len(found) == 0 {
		t.Fatal("before erasure the name is in no file: the scan cannot fail")
	}
	for _, f := range found {
		if rel, _ := filepath.Rel(ts.dir, f); !strings.HasPrefix(rel, "views"+string(filepath.Separator)) {
			t.Fatalf("before erasure the name is in %s, outside the view store", f)
		}
	}

	if r := ts.do("POST", "/_profilestore/v1/users/@alice:example.com/erase", ts.tokens[bob], `{}`); r.Status != 403 {
		t.Fatalf("bob erased alice: %d", r.Status)
	}
	r := ts.do("POST", "/_profilestore/v1/users/@alice:example.com/erase", ts.tokens[admin], `{}`)
	if r.Status != 200 || r.Header.Get("X-Profilestore-Position") == "" {
		t.Fatalf("erase: %d %s", r.Status, r.Body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/profile/@alice:example.com", "", nil); r.Status != 404 {
		t.Errorf("profile after erasure: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", A, `{"search_term":"Zebediah"}`); len(r.json(t)["results"].([]any)) != 0 {
		t.Errorf("directory after erasure: %s", r.Body)
	}
	// No API shows any of them: room members, room history, names search.
	for _, path := range []string{v1 + "/members", v1 + "/history?dir=f", "/_profilestore/v1/names/search?q=Quux", "/_profilestore/v1/users/" + string(alice) + "/history"} {
		for _, as := range []domain.UserID{bob, admin} {
			r := ts.do("GET", path, ts.tokens[as], nil)
			if strings.Contains(string(r.Body), "Quux") {
				t.Errorf("%s read by %s after erasure still shows the names: %s", path, as, r.Body)
			}
		}
	}
	for _, marker := range []string{name, field, avatar, "QuuxAvatar7731", "Room Quux 7731"} {
		if found := scanDir(t, ts.dir, marker); len(found) != 0 {
			t.Errorf("%q still on disk in %v", marker, found)
		}
	}
	// Idempotent: erasing again appends nothing.
	head := ts.head()
	if r := ts.do("POST", "/_profilestore/v1/users/@alice:example.com/erase", A, `{}`); r.Status != 200 || ts.head() != head {
		t.Errorf("second erasure: %d, head %s -> %s", r.Status, head, ts.head())
	}
	// New writes work normally, with a new key.
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@alice:example.com/displayname", A, `{"displayname":"Fresh Start"}`); r.Status != 200 {
		t.Fatalf("write after erasure: %d %s", r.Status, r.Body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/profile/@alice:example.com", "", nil); r.Status != 200 {
		t.Fatalf("profile after new write: %d", r.Status)
	} else {
		assertJSONEqual(t, r.Body, `{"displayname":"Fresh Start"}`)
	}
}

func TestHideAnEntry(t *testing.T) {
	ts := newTestService(t)
	carol := domain.UserID("@carol:example.com")
	tok, err := pshttp.IssueToken(filepath.Join(ts.dir, "tokens.yaml"), carol, false, "")
	if err != nil {
		t.Fatal(err)
	}
	ts.tokens[carol] = tok
	time.Sleep(1100 * time.Millisecond) // let the token file's reload throttle pass
	ts.ok("PUT", v1+"/power_levels", admin, map[string]any{"users": map[string]int{string(carol): 50}, "kick": 50})
	ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "join", "displayname": "Deadname Dora"})
	ts.ok("PUT", v1+"/members/"+string(bob), admin, map[string]string{"membership": "join"})
	ts.ok("PUT", v1+"/members/"+string(carol), admin, map[string]string{"membership": "join"})
	hist := ts.ok("GET", "/_profilestore/v1/users/"+string(alice)+"/history", alice, nil).json(t)["chunk"].([]any)
	if len(hist) != 1 {
		t.Fatalf("alice's history: %v", hist)
	}
	pos := hist[0].(map[string]any)["position"].(string)
	hidePath := "/_profilestore/v1/users/" + string(alice) + "/history/" + pos + "/hide"

	if r := ts.do("POST", hidePath, ts.tokens[bob], nil); r.Status != 403 {
		t.Errorf("bob hid alice's entry: %d", r.Status)
	}
	if r := ts.do("POST", "/_profilestore/v1/users/"+string(alice)+"/history/999999/hide", ts.tokens[alice], nil); r.Status != 404 || r.errcode(t) != "M_NOT_FOUND" {
		t.Errorf("hiding a position that is not alice's: %d %s", r.Status, r.Body)
	}
	if r := ts.do("POST", "/_profilestore/v1/users/"+string(alice)+"/history/nope/hide", ts.tokens[alice], nil); r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
		t.Errorf("a malformed position: %d %s", r.Status, r.Body)
	}
	ts.ok("POST", hidePath, alice, nil)
	head := ts.head()
	ts.ok("POST", hidePath, alice, nil)
	if ts.head() != head {
		t.Error("hiding twice appended twice")
	}
	// Renaming away from the hidden name, and leaving another room with it:
	// the hidden name must not come back as the old value of those entries.
	ts.ok("PUT", "/_matrix/client/v3/profile/"+string(alice)+"/displayname", alice, map[string]string{"displayname": "Alice"})
	if page := ts.ok("GET", v1+"/history?dir=f", bob, nil); !strings.Contains(string(page.Body), `"old_hidden":true`) {
		t.Errorf("the rename's old value is not marked hidden for a member: %s", page.Body)
	}

	for _, c := range []struct {
		who   domain.UserID
		sees  bool
		label string
	}{{bob, false, "a member"}, {carol, true, "a moderator"}, {admin, true, "an admin"}} {
		page := ts.ok("GET", v1+"/history?dir=f", c.who, nil)
		if got := strings.Contains(string(page.Body), "Deadname"); got != c.sees {
			t.Errorf("%s sees the hidden name: %v, want %v (%s)", c.label, got, c.sees, page.Body)
		}
		if !strings.Contains(string(page.Body), `"hidden":true`) {
			t.Errorf("%s is not told the entry is hidden", c.label)
		}
	}
}

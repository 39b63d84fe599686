package appservice_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/appservice"
)

// synapseAdmin replays testdata/synapse-admin-history.json: answers keyed
// by the from token each request carries.
func synapseAdmin(t *testing.T, token string) *httptest.Server {
	raw, err := os.ReadFile("testdata/synapse-admin-history.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Rooms    map[string]json.RawMessage            `json:"rooms"`
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	answer := func(w http.ResponseWriter, body json.RawMessage, ok bool) {
		var status struct {
			Status int `json:"_status"`
		}
		_ = json.Unmarshal(body, &status)
		switch {
		case !ok:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errcode":"M_INVALID_PARAM","error":"'from' parameter is invalid"}`))
		case status.Status != 0:
			w.WriteHeader(status.Status)
			_, _ = w.Write(body)
		default:
			_, _ = w.Write(body)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed."}`))
			return
		}
		from := r.URL.Query().Get("from")
		switch p := r.URL.Path; {
		case p == "/_synapse/admin/v1/rooms":
			body, ok := fx.Rooms[from]
			answer(w, body, ok)
		case strings.HasPrefix(p, "/_synapse/admin/v1/rooms/") && strings.HasSuffix(p, "/messages"):
			room := strings.TrimSuffix(strings.TrimPrefix(p, "/_synapse/admin/v1/rooms/"), "/messages")
			if r.URL.Query().Get("dir") != "f" || !strings.Contains(r.URL.Query().Get("filter"), "m.room.member") {
				t.Errorf("messages of %s asked with dir=%q filter=%q", room, r.URL.Query().Get("dir"), r.URL.Query().Get("filter"))
			}
			body, ok := fx.Messages[room][from]
			answer(w, body, ok)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBackfillThroughSynapsesAdminAPI(t *testing.T) {
	ms := newMirrorService(t)
	ctx := context.Background()
	srv := synapseAdmin(t, "syt_admin_token")
	cp, err := appservice.OpenBackfillCheckpoint(filepath.Join(t.TempDir(), "backfill.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	reg, err := appservice.NewRegistration("profilestore", "http://127.0.0.1:1", "_profilestore", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	b := appservice.NewBackfill(appservice.BackfillOptions{Registration: reg, Profiles: ms.app.Profiles, Rooms: ms.app.Rooms,
		Source: &appservice.SynapseAdminHistory{Client: appservice.NewHomeserverClient(srv.URL, "syt_admin_token", 0, nil)}, Checkpoint: cp, Logger: quietLogger()})
	rep, err := b.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	settleViews(t, ms)
	// A room nobody is in any more, read whole regardless of membership
	// and history visibility; a remote member's names stay room values.
	want := []string{"alice join ->Alice", "carol invite ->Carol", "carol join ->Carol", "alice leave Alice->", "carol leave Carol->"}
	if got := historyLines(t, ms.app.RoomView, "!old:example.org"); !reflect.DeepEqual(got, want) {
		t.Errorf("history:\n got %q\nwant %q", got, want)
	}
	if rep.Source != "Synapse admin API" || rep.Rooms != 2 || rep.Done != 1 || len(rep.Unreadable) != 1 || rep.Unreadable[0].Room != "!gone:example.org" ||
		!strings.Contains(rep.Unreadable[0].Reason, "does not know it") || len(rep.Incomplete) != 0 {
		t.Errorf("report = %+v", rep)
	}
}

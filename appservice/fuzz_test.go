package appservice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
)

// FuzzTransaction sends arbitrary transaction bodies to the transaction
// route of a real mirror on a healthy store. The answer is never a 5xx (the
// documented 503 is for a failing store, and this one does not fail), and
// when the body is a transaction its events are sent again between two
// valid member events, which must both be applied: a malformed event never
// costs the rest of its transaction.
func FuzzTransaction(f *testing.F) {
	fixture, err := os.ReadFile(fixturePath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fixture)
	seq := 0
	ev := func(typ, stateKey, content string, extra string) string {
		seq++
		return `{"type":"` + typ + `","event_id":"$seed` + fmt.Sprint(seq) + `","room_id":"!r:localhost","sender":"@a:localhost",` +
			`"state_key":` + stateKey + `,"origin_server_ts":1700000000000,"content":` + content + extra + `}`
	}
	for _, events := range []string{
		ev("m.room.member", `"@a:localhost"`, `{"membership":"join","displayname":"A","avatar_url":"mxc://localhost/x"}`, ""),
		ev("m.room.member", `"@a:localhost"`, `{"membership":"join","displayname":5}`, ""),
		ev("m.room.member", `"@a:localhost"`, `{"membership":"join","avatar_url":"https://not.mxc/"}`, ""),
		ev("m.room.member", `"@b:localhost"`, `{"membership":"leave"}`, ""),
		ev("m.room.member", `"@b:localhost"`, `{"membership":"knock"}`, ""),
		ev("m.room.member", `"@b:localhost"`, `{"membership":"something"}`, ""),
		ev("m.room.member", `"not a user"`, `{"membership":"ban"}`, ""),
		ev("m.room.member", `null`, `{"membership":"join"}`, ""),
		ev("m.room.member", `"@a:localhost"`, `{"membership":"join","displayname":"Far future"}`, `,"origin_server_ts":253402300800000`),
		ev("m.room.member", `"@a:localhost"`, `{"membership":"join"}`, `,"origin_server_ts":-1`),
		ev("m.room.member", `"@a:localhost"`, `[]`, ""),
		ev("m.room.history_visibility", `""`, `{"history_visibility":"shared"}`, ""),
		ev("m.room.history_visibility", `""`, `{"history_visibility":"bogus"}`, ""),
		ev("m.room.power_levels", `""`, `{"users":{"@a:localhost":"100","@b:localhost":1e300},"users_default":"x","kick":null}`, ""),
		ev("m.room.power_levels", `""`, `{"users":{"nobody":50}}`, ""),
		ev("m.room.message", `null`, `{"body":"hi"}`, ""),
		`1, "two", null, [], {}`,
		`{"type":"m.room.member","event_id":""}`,
	} {
		f.Add([]byte(`{"events":[` + events + `]}`))
	}
	for _, body := range []string{``, `null`, `[]`, `{"events":null}`, `{"events":{}}`, `{"events":[`, "\xff"} {
		f.Add([]byte(body))
	}

	ms := newMirrorService(f)
	profiles := domain.NewProfileService(ms.store, ms.sealer, domain.DefaultPolicy)
	rooms := domain.NewRoomService(ms.store, ms.sealer, domain.DefaultPolicy, profiles)
	homeserver := appservice.NewHomeserverProfiles(ms.hs.URL, ms.reg.ASToken, nil, time.Minute)
	n := 0
	f.Fuzz(func(t *testing.T, body []byte) {
		// A fresh mirror each time: one that has seen an event id skips it,
		// and the fuzzer's mutations keep the seeds' ids.
		mirror := appservice.NewMirror(appservice.MirrorOptions{Registration: ms.reg, Profiles: profiles, Rooms: rooms,
			Homeserver: homeserver, Logger: quietLogger()})
		ing := appservice.NewIngester(appservice.IngesterOptions{Registration: ms.reg, Store: ms.store, Mirror: mirror,
			LedgerWindow: 8, Logger: quietLogger()})
		router := pshttp.NewServer(pshttp.Config{Appservice: ing, Logger: quietLogger()}).Handler()
		put := func(body []byte) int {
			n++
			req := httptest.NewRequest(http.MethodPut, fmt.Sprintf("/_matrix/app/v1/transactions/fuzz-%d", n), bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+ms.reg.HSToken)
			rec := httptest.NewRecorder()
			router.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%d %s for %q", rec.Code, rec.Body, body)
			}
			if rec.Code != 200 {
				var e struct {
					ErrCode string `json:"errcode"`
				}
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.ErrCode == "" {
					t.Fatalf("%d without a Matrix error: %s", rec.Code, rec.Body)
				}
			}
			return rec.Code
		}

		var txn struct {
			Events []json.RawMessage `json:"events"`
		}
		if json.Unmarshal(body, &txn) != nil {
			put(body)
			return
		}
		// Sentinels in rooms of their own, so no fuzzed event can touch them.
		first, last := fmt.Sprintf("!first%d:remote.example", n), fmt.Sprintf("!last%d:remote.example", n)
		events := []string{sentinel(first, n)}
		for _, e := range txn.Events {
			events = append(events, string(e))
		}
		events = append(events, sentinel(last, n))
		wrapped := []byte(`{"events":[` + strings.Join(events, ",") + `]}`)
		if code := put(wrapped); code != 200 {
			t.Fatalf("a transaction with fuzzed events answered %d: %s", code, wrapped)
		}
		for _, room := range []string{first, last} {
			recs, err := ms.store.ReadStream(context.Background(), domain.RoomStream(domain.RoomID(room)), 0, eventstore.Forwards, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				t.Fatalf("the valid event in %s was lost beside %s", room, body)
			}
		}
	})
}

// sentinel is a valid join of a remote user (no homeserver look-up).
func sentinel(room string, n int) string {
	b, _ := json.Marshal(map[string]any{"type": "m.room.member", "event_id": fmt.Sprintf("$sentinel-%s", room),
		"room_id": room, "sender": "@s:remote.example", "state_key": "@s:remote.example", "origin_server_ts": 1700000000000 + n,
		"content": map[string]any{"membership": "join", "displayname": "Sentinel"}})
	return string(b)
}

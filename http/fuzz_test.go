package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzProfileWrite throws arbitrary bodies, keys and query strings at the
// profile write route: the answer is always a Matrix error or 200, never a
// 500, and a refused write never moves the log.
func FuzzProfileWrite(f *testing.F) {
	seeds := []struct{ key, query, body string }{
		{"displayname", "", `{"displayname":"Alice"}`},
		{"displayname", "propagate_to=all", `{"displayname":""}`},
		{"org.example.x", "", `{"org.example.x":{"nested":[1,2,{"a":null}]}}`},
		{"org.example.x", "", `{"org.example.x":1e999}`},
		{"avatar_url", "propagate=false", `{"avatar_url":"mxc://a/b"}`},
		{"m.tz", "", `{"m.tz":"Europe/London"}`},
		{"Bad Key", "", `{}`},
		{"displayname", "propagate_to=%zz", `{"displayname":"\ud800"}`},
		{"displayname", "", "\xff\xfe"},
		{"displayname", "", `{"displayname":"a","displayname":"b"}`},
	}
	for _, s := range seeds {
		f.Add(s.key, s.query, []byte(s.body))
	}
	ts := newTestService(f)
	handler := ts.server.Config.Handler
	token := ts.tokens[alice]
	req0ctx := context.Background()
	f.Fuzz(func(t *testing.T, key, query string, body []byte) {
		head := func() string { p, _ := ts.store.Head(req0ctx); return p.String() }
		before := head()
		target := "/_matrix/client/v3/profile/@alice:example.com/" + url.PathEscape(key) + "?" + query
		req, err := http.NewRequest("PUT", "http://x"+target, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("PUT %q %q: %d %s", key, body, rec.Code, rec.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("answer is not JSON: %s", rec.Body)
		}
		if rec.Code != 200 {
			if code, _ := m["errcode"].(string); code == "" {
				t.Fatalf("error without errcode: %d %s", rec.Code, rec.Body)
			}
			if head() != before {
				t.Fatalf("a refused write (%d) moved the log", rec.Code)
			}
		}
	})
}

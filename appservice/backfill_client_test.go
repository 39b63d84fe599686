package appservice_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/profilestore/profilestore/appservice"
)

// The homeserver client's limits: each one ends in an error that names it
// (the backfill reports the room with it), never in waiting for ever.
func TestHomeserverClientLimits(t *testing.T) {
	page := `{"chunk":[],"start":"t1","end":""}`
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, n int64)
		setup  func(c *appservice.HomeserverClient)
		calls  int64
		want   string
	}{
		{"429 for ever", func(w http.ResponseWriter, _ int64) {
			w.WriteHeader(429)
			_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":0}`))
		}, func(c *appservice.HomeserverClient) { c.RateLimitWaits = 3 }, 4, "still rate limited after 3 waits"},
		{"429 with Retry-After, then an answer", func(w http.ResponseWriter, n int64) {
			if n == 1 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(429)
				return
			}
			_, _ = w.Write([]byte(page))
		}, nil, 2, ""},
		{"5xx for ever", func(w http.ResponseWriter, _ int64) { w.WriteHeader(502) },
			func(c *appservice.HomeserverClient) { c.Retries, c.Backoff = 2, time.Millisecond }, 3, "after 3 attempts"},
		{"5xx, then an answer", func(w http.ResponseWriter, n int64) {
			if n < 3 {
				w.WriteHeader(503)
				return
			}
			_, _ = w.Write([]byte(page))
		}, func(c *appservice.HomeserverClient) { c.Backoff = time.Millisecond }, 3, ""},
		{"an answer over the cap", func(w http.ResponseWriter, _ int64) {
			_, _ = w.Write([]byte(`{"chunk":[],"end":"` + strings.Repeat("x", 100) + `"}`))
		}, func(c *appservice.HomeserverClient) { c.MaxBody = 64 }, 1, "an answer over 64 bytes"},
		{"an answer at the cap", func(w http.ResponseWriter, _ int64) {
			body := `{"chunk":[],"end":""}`
			_, _ = w.Write([]byte(body + strings.Repeat(" ", 64-len(body))))
		}, func(c *appservice.HomeserverClient) { c.MaxBody = 64 }, 1, ""},
		{"not JSON", func(w http.ResponseWriter, _ int64) { _, _ = w.Write([]byte(`<html>`)) }, nil, 1, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.answer(w, calls.Add(1))
			}))
			defer srv.Close()
			c := appservice.NewHomeserverClient(srv.URL, "tok", 0, nil)
			if tc.setup != nil {
				tc.setup(c)
			}
			src := &appservice.ClientHistory{Client: c}
			_, _, err := src.Messages(context.Background(), "!r:x", "@a:x", "t1", 10)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("error %v, want an answer", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
			if got := calls.Load(); got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
		})
	}
}

func TestHomeserverClientStopsWithItsContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(429)
		_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":600000}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := appservice.NewHomeserverClient(srv.URL, "tok", 0, nil)
	c.OnRateLimited = func(wait time.Duration) {
		if wait != 10*time.Minute {
			t.Errorf("retry_after_ms 600000 waits %v, want the 10-minute cap", wait)
		}
		cancel()
	}
	_, _, err := (&appservice.ClientHistory{Client: c}).Messages(ctx, "!r:x", "@a:x", "t1", 10)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

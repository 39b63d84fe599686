package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// TestConcurrentWritesToOneUser renames one user from 32 clients at once
// (the command side batches them into shared appends): every request
// succeeds with its own position and ETag, and the profile ends with the
// value written at the last position.
func TestConcurrentWritesToOneUser(t *testing.T) {
	ts := newTestService(t)
	const clients = 32
	type answer struct {
		value, etag string
		pos         eventstore.Position
		err         error
	}
	answers := make([]answer, clients)
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[i]
			a.value = fmt.Sprintf("Alice %d", i)
			body, _ := json.Marshal(map[string]string{"displayname": a.value})
			req, _ := http.NewRequest(http.MethodPut, ts.URL+"/_matrix/client/v3/profile/@alice:example.com/displayname", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+ts.tokens[alice])
			resp, err := client.Do(req)
			if err != nil {
				a.err = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				a.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
				return
			}
			a.etag = resp.Header.Get("ETag")
			a.pos, a.err = eventstore.ParsePosition(resp.Header.Get("X-Profilestore-Position"))
		}()
	}
	wg.Wait()
	positions, etags := map[eventstore.Position]bool{}, map[string]bool{}
	var last answer
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("client %d: %v", i, a.err)
		}
		if positions[a.pos] || etags[a.etag] || a.etag == "" {
			t.Errorf("client %d: position %v, ETag %q already answered to another client", i, a.pos, a.etag)
		}
		positions[a.pos], etags[a.etag] = true, true
		if last.pos.Before(a.pos) {
			last = a
		}
	}
	// The log holds each value once, at the position its client was told.
	recs, err := ts.store.ReadStream(context.Background(), domain.ProfileStream(alice), 0, eventstore.Forwards, 1000)
	if err != nil {
		t.Fatal(err)
	}
	at := map[eventstore.Position]string{}
	seen := map[string]int{}
	for _, rec := range recs {
		e, err := domain.Decode(context.Background(), ts.sealer, rec)
		if err != nil {
			t.Fatal(err)
		}
		var v string
		if err := json.Unmarshal(e.Value, &v); err != nil {
			t.Fatalf("event at %v: %v", rec.Position, err)
		}
		at[rec.Position] = v
		seen[v]++
	}
	for i, a := range answers {
		if at[a.pos] != a.value || seen[a.value] != 1 {
			t.Errorf("client %d wrote %q: its position %v holds %q; the log holds it %d times", i, a.value, a.pos, at[a.pos], seen[a.value])
		}
	}
	got := ts.do("GET", "/_matrix/client/v3/profile/@alice:example.com/displayname", "", nil).json(t)["displayname"]
	if got != last.value {
		t.Errorf("displayname %q, want %q (written at the last position, %v)", got, last.value, last.pos)
	}
}

package http

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCheckBody: a valid JSON body that checkBody passes decodes without
// any U+FFFD the body did not itself write (as the character or as
// \ufffd), that is without a silent replacement.
func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":"\ud800"}`, `{"a":"\ud83d\ude00"}`, `{"a":"\\ud800"}`, `{"a":"\ufffd"}`, "{\"a\":\"\xff\"}", `["\udc00"]`, `{"\ud800\ud800":1}`} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`[{"a":{"a":1}},{"b":[{"b":1,"c":2}]}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		// What Go itself encodes (UTF-8, no duplicate keys, no lone
		// surrogates) always passes.
		var any0 any
		if json.Unmarshal(body, &any0) == nil {
			again, _ := json.Marshal(any0)
			if err := checkBody(again); err != nil {
				t.Fatalf("checkBody refused %q, Go's own encoding of %q: %v", again, body, err)
			}
		}
		if checkBody(body) != nil {
			return
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("valid JSON %q did not decode: %v", body, err)
		}
		out, _ := json.Marshal(v)
		written := bytes.Count(body, []byte("\uFFFD")) + strings.Count(strings.ToLower(string(body)), `\ufffd`)
		if got := strings.Count(string(out), "\uFFFD") + strings.Count(string(out), `\ufffd`); got > written || !utf8.Valid(body) {
			t.Fatalf("checkBody passed %q, which decodes to %q", body, out)
		}
	})
}

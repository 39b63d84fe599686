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

// duplicateKeysByDecoder is the reference of checkDuplicateKeys: the same
// rule read through encoding/json's tokens.
func duplicateKeysByDecoder(body []byte) bool {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var open []*frame
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			open = open[:len(open)-1]
			continue
		}
		var top *frame
		if len(open) > 0 {
			top = open[len(open)-1]
		}
		if top != nil && top.keys != nil && top.wantKey {
			key, _ := tok.(string)
			if top.keys[key] {
				return true
			}
			top.keys[key], top.wantKey = true, false
			continue
		}
		if top != nil && top.keys != nil {
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			open = append(open, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			open = append(open, &frame{})
		}
	}
}

// FuzzCheckDuplicateKeys: the one-pass scanner finds a repeated key exactly
// when encoding/json's tokens show one.
func FuzzCheckDuplicateKeys(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":1,"b":2}`, `{"a":"a","b":"a"}`, `{"a":{"a":1}}`, `{"a":{"b":1,"b":2}}`,
		`[{"a":1},{"a":1}]`, `{"a":[1,{"a":2}],"a":3}`, `{"a\u0062":1,"ab":2}`, `{"a\"":1,"a\\"":2}`,
		`{"x":"\"","x":1}`, `{"k":true,"k":null}`, ` { "a" : -1.5e3 , "b" : [ ] , "a" : { } } `,
		`{"0":0,"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":0,"11":1,"12":2,"13":3,"14":4,"15":5,"16":6,"17":7,"3":1}`,
		`{"0":0,"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":0,"11":1,"12":2,"13":3,"14":4,"15":5,"16":6,"17":7,"18":1}`,
		`"a"`, `[]`, `[[[[[[[[[[{"a":1,"a":1}]]]]]]]]]]`, `{"displayname":"Alice"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		want := duplicateKeysByDecoder(body)
		if got := checkDuplicateKeys(body) != nil; got != want {
			t.Fatalf("%q: scanner says duplicate %v, decoder %v", body, got, want)
		}
	})
}

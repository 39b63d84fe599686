package domain

import (
	"encoding/json"
	"strings"
	"testing"
)

func set(t *testing.T, p *Profile, key, value string, prop Propagation) ([]Event, error) {
	t.Helper()
	v, err := CanonicalJSON([]byte(value))
	if err != nil {
		t.Fatalf("canonical %s: %v", value, err)
	}
	evs, err := DecideSetField(p, SetField{User: "@a:x", Key: key, Value: v, PropagateTo: prop}, DefaultLimits)
	for i := range evs {
		p.Apply(&evs[i])
	}
	return evs, err
}

func TestDecideSetField(t *testing.T) {
	var p Profile
	evs, err := set(t, &p, "displayname", `"  Alice  "`, "")
	if err != nil || len(evs) != 1 {
		t.Fatalf("first set: %v %v", evs, err)
	}
	if evs[0].PropagateTo != PropagateUnchanged || string(evs[0].Value) != `"Alice"` {
		t.Errorf("event = %+v, want trimmed value and default propagation", evs[0])
	}
	if evs, err := set(t, &p, "displayname", `"Alice"`, PropagateAll); err != nil || len(evs) != 0 {
		t.Errorf("setting the same value: %d events, %v; want none and no error", len(evs), err)
	}
	if evs, err := set(t, &p, "org.example.x", `{"b":1,"a":[1, 2]}`, PropagateAll); err != nil || len(evs) != 1 || evs[0].PropagateTo != "" || string(evs[0].Value) != `{"a":[1,2],"b":1}` {
		t.Errorf("custom field event = %+v %v (propagation must be empty, value canonical)", evs, err)
	}
	if evs, err := set(t, &p, "org.example.null", `null`, ""); err != nil || len(evs) != 1 {
		t.Errorf("null custom value: %v %v (a server that accepts null stores it)", evs, err)
	}
	if _, ok := p.Get("org.example.null"); !ok {
		t.Error("null value not stored")
	}
	// An empty display name unsets it.
	evs, err = set(t, &p, "displayname", `""`, PropagateNone)
	if err != nil || len(evs) != 1 || evs[0].Type != TypeFieldDeleted || evs[0].PropagateTo != PropagateNone {
		t.Fatalf("empty displayname: %+v %v", evs, err)
	}
	if _, ok := p.Get("displayname"); ok {
		t.Error("displayname still set")
	}
}

func TestDecideSetFieldErrors(t *testing.T) {
	var p Profile
	if _, err := set(t, &p, "displayname", `"Alice"`, ""); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key, value, code string
	}{
		{"displayname", `null`, ErrCodeInvalidParam},
		{"displayname", `42`, ErrCodeInvalidParam},
		{"displayname", `"` + strings.Repeat("é", 257) + `"`, ErrCodeTooLarge},
		{"avatar_url", `"http://x/y"`, ErrCodeInvalidParam},
		{"avatar_url", `"mxc://x/` + strings.Repeat("a", 1000) + `"`, ErrCodeTooLarge},
		{"m.tz", `5`, ErrCodeInvalidParam},
		{"Bad", `1`, ErrCodeInvalidParam},
		{"org.example.blob", `"` + strings.Repeat("a", MaxProfileBytes) + `"`, ErrCodeProfileTooLarge},
	}
	for _, c := range cases {
		evs, err := set(t, &p, c.key, c.value, "")
		if ErrorCode(err) != c.code || len(evs) != 0 {
			t.Errorf("set %s=%.20s: %v (%d events), want %s", c.key, c.value, err, len(evs), c.code)
		}
	}
	if p.DisplayName() != "Alice" || len(p.Fields) != 1 {
		t.Errorf("a refused write changed the profile: %v", p.Fields)
	}
	if _, err := set(t, &p, "displayname", `"`+strings.Repeat("é", 256)+`"`, ""); err != nil {
		t.Errorf("256 characters refused: %v", err)
	}
}

func TestProfileSizeLimitIsExact(t *testing.T) {
	var p Profile
	// {"org.example.b":"…"} is 2 + 15 + 1 + 2 + n bytes.
	n := MaxProfileBytes - (2 + len(`"org.example.b"`) + 1 + 2)
	if _, err := set(t, &p, "org.example.b", `"`+strings.Repeat("a", n)+`"`, ""); err != nil {
		t.Fatalf("a profile of exactly %d bytes was refused: %v", MaxProfileBytes, err)
	}
	whole, _ := json.Marshal(p.Fields)
	if len(whole) != MaxProfileBytes || p.CanonicalSize() != MaxProfileBytes {
		t.Fatalf("size = %d / %d, want %d", len(whole), p.CanonicalSize(), MaxProfileBytes)
	}
	if _, err := set(t, &p, "org.example.b", `"`+strings.Repeat("a", n+1)+`"`, ""); ErrorCode(err) != ErrCodeProfileTooLarge {
		t.Fatalf("one byte over: %v", err)
	}
}

func TestDecideDeleteFieldIsIdempotent(t *testing.T) {
	var p Profile
	evs, err := DecideDeleteField(&p, DeleteField{User: "@a:x", Key: "org.example.never"})
	if err != nil || len(evs) != 0 {
		t.Fatalf("delete of unset key: %v %v", evs, err)
	}
	if _, err := set(t, &p, "org.example.x", `1`, ""); err != nil {
		t.Fatal(err)
	}
	evs, err = DecideDeleteField(&p, DeleteField{User: "@a:x", Key: "org.example.x"})
	if err != nil || len(evs) != 1 || evs[0].Type != TypeFieldDeleted {
		t.Fatalf("delete: %+v %v", evs, err)
	}
}

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b": 2, "a": {"d": 1, "c": "<&>"}}`: `{"a":{"c":"<&>","d":1},"b":2}`,
		` 1.50 `:                              `1.50`,
		`"é\u00e9"`:                           `"éé"`,
	} {
		got, err := CanonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{``, `{`, `1 2`, `{"a":1}x`} {
		if _, err := CanonicalJSON([]byte(bad)); err == nil {
			t.Errorf("CanonicalJSON(%q) accepted", bad)
		}
	}
}

func TestParsePropagation(t *testing.T) {
	for _, ok := range []string{"all", "unchanged", "none"} {
		if _, err := ParsePropagation(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := ParsePropagation("maybe"); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("maybe: %v", err)
	}
}

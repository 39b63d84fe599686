package domain

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The string fast path of CanonicalJSON must give exactly what decoding and
// encoding gives, or refuse the value to the general path.
func TestCanonicalJSONStringFastPathAgreesWithTheEncoder(t *testing.T) {
	inputs := []string{
		`""`, `"Alice"`, ` "Alice" `, "\t\"Alice\"\r\n", `"<b>&amp;</b>"`, `"mxc://example.org/abc"`,
		`"Zoë 🌈"`, `"a\"b"`, `"a\\b"`, `"\u0041"`, "\"a\u2028b\"", "\"a\u2029b\"", "\"a\u2027b\"",
		"\"tab\tin\"", "\"\x7f\"", "\"\xff\"", "\"\xe2\x80\"", `"a"b"`, `"`, `"abc`, `abc"`,
		"\u00a0\"nbsp\"", `"x" "y"`, `"x"x`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("aZ09 \"\\/<>&\t\x01\x7f\xe2\x80\xa8\xa9\xc3\xa9\xf0\x9f\x8c\x88\xff")
	for range 20000 {
		b := []byte{'"'}
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, string(append(b, '"')))
	}
	for _, in := range inputs {
		fast, ok := plainJSONString([]byte(in))
		if !ok {
			continue
		}
		want, err := canonicalJSON([]byte(in))
		if err != nil {
			t.Errorf("%q: the fast path took a value the encoder refuses (%v)", in, err)
			continue
		}
		if !bytes.Equal(fast, want) {
			t.Errorf("%q: fast path %q, encoder %q", in, fast, want)
		}
	}
	if _, ok := plainJSONString([]byte(`"Alice"`)); !ok {
		t.Error("a plain name does not take the fast path")
	}
}

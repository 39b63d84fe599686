package eventstore_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/eventstore"
)

// FuzzParsePosition: a token is either refused with ErrInvalidPosition or
// read as a position whose token reads back as the same position; every
// position's token, up to the largest, is accepted.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0", "1", "42.41", "18446744073709551615.18446744073709551615", "18446744073709551616", "1.",
		".1", "1.2.3", "-1", "+1", "01", "1e3", " 1", "0x10", "", strings.Repeat("9", 42)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := eventstore.ParsePosition(s)
		if err != nil {
			if !errors.Is(err, eventstore.ErrInvalidPosition) {
				t.Fatalf("ParsePosition(%q): %v is not ErrInvalidPosition", s, err)
			}
			return
		}
		back, err := eventstore.ParsePosition(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePosition(%q) = %+v, whose token %q reads back as %+v, %v", s, p, p.String(), back, err)
		}
	})
}

func TestLargestPositionRoundTrips(t *testing.T) {
	for _, p := range []eventstore.Position{{}, {Commit: math.MaxUint64, Prepare: math.MaxUint64}, {Commit: math.MaxUint64, Prepare: 0}, {Commit: 3, Prepare: 7}} {
		if back, err := eventstore.ParsePosition(p.String()); err != nil || back != p {
			t.Errorf("%+v: token %q reads back as %+v, %v", p, p.String(), back, err)
		}
	}
}

package domain_test

import (
	"testing"

	"github.com/profilestore/profilestore/domain"
)

func TestNameSkeleton(t *testing.T) {
	for _, tc := range []struct {
		a, b       string
		confusable bool
	}{
		{"Admin", "admin", true},
		{"Admin", "\u0410dmin", true},                     // Cyrillic capital A
		{"Admin", "\uff21\uff44\uff4d\uff49\uff4e", true}, // full width: NFKC
		{"Admin", "Adm\u200bin", true},                    // zero-width space
		{"Admin", "  Admin ", true},
		{"bob", "b0b", true},
		{"paypal", "\U0001d52d\U0001d4b6\u1eff\U0001d561\U0001d552\u2113", true},
		{"modern", "rnodern", true},
		{"Alice", "Alicia", false},
		{"Admin", "Admins", false},
	} {
		if got := domain.NameSkeleton(tc.a) == domain.NameSkeleton(tc.b); got != tc.confusable {
			t.Errorf("%q ~ %q = %v, want %v", tc.a, tc.b, got, tc.confusable)
		}
	}
	if domain.FoldName("ALICE  Liddell") != "alice liddell" {
		t.Errorf("fold: %q", domain.FoldName("ALICE  Liddell"))
	}
}

func TestLookalikes(t *testing.T) {
	alerts := domain.Lookalikes([]domain.NamedMember{
		{User: "@eve:evil.org", DisplayName: "\u0410dmin"},
		{User: "@carol:example.com", DisplayName: "Carol"},
		{User: "@admin:example.com", DisplayName: "Admin", Moderator: true},
		{User: "@dave:example.com", DisplayName: "Dave"},
		{User: "@dave2:example.com", DisplayName: "dave"},
		{User: "@nameless:example.com"},
		{User: "@nameless2:example.com"},
	})
	if len(alerts) != 2 {
		t.Fatalf("alerts: %+v", alerts)
	}
	first := alerts[0]
	if !first.Moderator || first.Identical || first.Members[0].User != "@admin:example.com" || first.Members[1].User != "@eve:evil.org" {
		t.Errorf("the moderator's alert must come first, moderator first: %+v", first)
	}
	if second := alerts[1]; second.Moderator || !second.Identical || len(second.Members) != 2 {
		t.Errorf("dave/Dave: %+v", second)
	}
	if got := domain.Lookalikes([]domain.NamedMember{{User: "@a:x", DisplayName: "A"}, {User: "@a:x", DisplayName: "a"}}); len(got) != 0 {
		t.Errorf("one user is no impersonation: %+v", got)
	}
}

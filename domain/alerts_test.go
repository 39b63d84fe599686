package domain_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

func TestCheckLookalike(t *testing.T) {
	members := []domain.NamedMember{
		{User: "@alice:x", DisplayName: "Alice", Moderator: true},
		{User: "@bob:x", DisplayName: "Bob"},
		{User: "@eve:x", DisplayName: "\u0410lice"}, // the one taking the name
	}
	taken := domain.NameTaken{User: "@eve:x", Room: "!r:x", Name: "\u0410lice", Position: eventstore.Position{Commit: 7}}
	for _, tc := range []struct {
		name    string
		rule    domain.LookalikeRule
		taken   domain.NameTaken
		members []domain.NamedMember
		others  []domain.UserID
	}{
		{"confusable with a moderator", domain.LookalikeRule{Enabled: true}, taken, members, []domain.UserID{"@alice:x"}},
		{"moderators only, still a moderator", domain.LookalikeRule{Enabled: true, ModeratorsOnly: true}, taken, members, []domain.UserID{"@alice:x"}},
		{"moderators only, not a moderator", domain.LookalikeRule{Enabled: true, ModeratorsOnly: true},
			domain.NameTaken{User: "@eve:x", Room: "!r:x", Name: "B\u043eb"}, members, nil},
		{"disabled", domain.LookalikeRule{}, taken, members, nil},
		{"a global rename is checked per room, not here", domain.LookalikeRule{Enabled: true},
			domain.NameTaken{User: "@eve:x", Name: "\u0410lice"}, members, nil},
		{"the user's own name is no look-alike", domain.LookalikeRule{Enabled: true},
			domain.NameTaken{User: "@alice:x", Room: "!r:x", Name: "ALICE"}, members[:1], nil},
		{"no name", domain.LookalikeRule{Enabled: true}, domain.NameTaken{User: "@eve:x", Room: "!r:x", Name: " "}, members, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := domain.CheckLookalike(tc.rule, tc.taken, tc.members)
			if tc.others == nil {
				if a != nil {
					t.Fatalf("alert %+v, want none", a)
				}
				return
			}
			if a == nil || len(a.Others) != len(tc.others) {
				t.Fatalf("alert %+v, want one naming %v", a, tc.others)
			}
			for i, u := range tc.others {
				if a.Others[i].User != u {
					t.Errorf("others[%d] = %s, want %s", i, a.Others[i].User, u)
				}
			}
			if !a.Moderator || a.Rule != domain.AlertLookalike || a.Trigger != tc.taken.Position {
				t.Errorf("alert %+v", a)
			}
			if d := a.Differences()[0]; d.Relation() != "confusable" || len(d.A) != 1 || d.A[0].Script != "Cyrillic" {
				t.Errorf("difference %+v", d)
			}
		})
	}
}

func TestCheckProtectedName(t *testing.T) {
	names := []domain.ProtectedName{{Name: "Admin", Holders: []domain.UserID{"@admin:x"}}, {Name: "Support"}}
	for _, tc := range []struct {
		user      domain.UserID
		name      string
		protected string
	}{
		{"@eve:x", "\u0410dmin", "Admin"},
		{"@eve:x", "ADMIN", "Admin"},
		{"@admin:x", "Admin", ""},
		{"@eve:x", "Support", "Support"},
		{"@eve:x", "Eve", ""},
	} {
		t.Run(tc.name+" by "+string(tc.user), func(t *testing.T) {
			a := domain.CheckProtectedName(names, domain.NameTaken{User: tc.user, Name: tc.name})
			switch {
			case tc.protected == "" && a != nil:
				t.Errorf("alert %+v, want none", a)
			case tc.protected != "" && (a == nil || a.Protected != tc.protected):
				t.Errorf("alert %+v, want one for %q", a, tc.protected)
			}
		})
	}
}

func TestCheckRenameBurst(t *testing.T) {
	rule := domain.RenameBurstRule{Enabled: true, Count: 3, Window: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(secs ...int) []time.Time {
		var out []time.Time
		for _, s := range secs {
			out = append(out, t0.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		renames []time.Time
		alert   bool
	}{
		{"third within the window", at(0, 10, 20), true},
		{"fourth of the same burst raises nothing more", at(0, 10, 20, 30), false},
		{"spread over more than the window", at(0, 40, 80), false},
		{"exactly the window apart is outside it", at(0, 30, 60), false},
		{"a new burst after a quiet spell", at(0, 10, 20, 200, 210, 220), true},
		{"too few", at(0, 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := domain.CheckRenameBurst(rule, domain.NameTaken{User: "@eve:x"}, tc.renames)
			if (a != nil) != tc.alert {
				t.Errorf("alert %+v, want %v", a, tc.alert)
			}
			if a != nil && (a.Renames != 3 || a.Window != time.Minute) {
				t.Errorf("alert %+v", a)
			}
		})
	}
	if a := domain.CheckRenameBurst(domain.RenameBurstRule{Count: 3, Window: time.Minute}, domain.NameTaken{}, at(0, 1, 2)); a != nil {
		t.Errorf("a disabled rule raised %+v", a)
	}
}

func TestAlertConfigForARoom(t *testing.T) {
	cfg := domain.AlertConfig{AlertRules: domain.AlertRules{Lookalike: domain.LookalikeRule{Enabled: true}, ProtectedNames: []domain.ProtectedName{{Name: "Admin"}}},
		Rooms: map[domain.RoomID]domain.RoomAlertRules{"!r:x": {Lookalike: &domain.LookalikeRule{Enabled: true, ModeratorsOnly: true}, ProtectedNames: []domain.ProtectedName{{Name: "Room Bot"}}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := cfg.For("!r:x")
	if !r.Lookalike.ModeratorsOnly || len(r.ProtectedNames) != 2 {
		t.Errorf("room rules %+v", r)
	}
	if g := cfg.For("!other:x"); g.Lookalike.ModeratorsOnly || len(g.ProtectedNames) != 1 {
		t.Errorf("another room's rules %+v", g)
	}
	if len(cfg.ProtectedNames) != 1 {
		t.Error("a room's additions changed the server's list")
	}
	for _, bad := range []domain.AlertConfig{
		{AlertRules: domain.AlertRules{RenameBurst: domain.RenameBurstRule{Enabled: true, Count: 1, Window: time.Minute}}},
		{AlertRules: domain.AlertRules{ProtectedNames: []domain.ProtectedName{{Name: " "}}}},
		{Rooms: map[domain.RoomID]domain.RoomAlertRules{"not-a-room": {}}},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v passed validation", bad)
		}
	}
}

// An alert's names are sealed with their users' keys: after one of them
// is erased, the recorded alert no longer holds that name.
func TestAlertCodecSealsNames(t *testing.T) {
	_, keys := openStore(t)
	s := domain.NewSealer(keys)
	ctx := context.Background()
	a := domain.Alert{Rule: domain.AlertLookalike, Room: "!r:x", User: "@eve:x", Name: "\u0410lice", Trigger: eventstore.Position{Commit: 9},
		At: time.UnixMilli(1767225600000).UTC(), Others: []domain.NamedMember{{User: "@alice:x", DisplayName: "Alice", Moderator: true}}, Moderator: true}
	data, err := domain.EncodeAlert(ctx, s, a)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := domain.EncodeAlert(ctx, s, a); again.ID != data.ID {
		t.Error("one alert got two event ids")
	}
	rec := eventstore.RecordedEvent{EventData: data, Stream: domain.AlertStream}
	got, erased, err := domain.DecodeAlert(ctx, s, rec)
	if err != nil || erased || got.Name != a.Name || got.Others[0].DisplayName != "Alice" || got.Trigger != a.Trigger || !got.At.Equal(a.At) {
		t.Fatalf("round trip: %+v %v %v", got, erased, err)
	}
	if err := keys.Destroy(ctx, "@eve:x"); err != nil {
		t.Fatal(err)
	}
	s.Forget("@eve:x")
	got, erased, err = domain.DecodeAlert(ctx, s, rec)
	if err != nil || !erased || got.Name != "" || got.Others[0].DisplayName != "Alice" {
		t.Fatalf("after erasing eve: %+v %v %v", got, erased, err)
	}
}

func TestFirstKeyGone(t *testing.T) {
	_, keys := openStore(t)
	s := domain.NewSealer(keys)
	ctx := context.Background()
	check := func(when string, want bool) {
		t.Helper()
		got, err := s.FirstKeyGone(ctx, "@u:x")
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", when, got, err, want)
		}
	}
	check("never keyed", true)
	if _, err := s.Seal(ctx, "@u:x", []byte(`"U"`)); err != nil {
		t.Fatal(err)
	}
	check("keyed", false)
	if err := keys.Destroy(ctx, "@u:x"); err != nil {
		t.Fatal(err)
	}
	s.Forget("@u:x")
	if _, err := s.Seal(ctx, "@u:x", []byte(`"U again"`)); err != nil {
		t.Fatal(err)
	}
	check("erased, then keyed again", true)

	// A check builds no cipher: a history page checks every user on it.
	fresh := domain.NewSealer(keys)
	for i := range 50 {
		user := domain.UserID(fmt.Sprintf("@c%d:x", i))
		if _, err := keys.Current(ctx, string(user)); err != nil {
			t.Fatal(err)
		}
		if gone, err := fresh.FirstKeyGone(ctx, user); err != nil || gone {
			t.Fatalf("%s, keyed: gone %v %v", user, gone, err)
		}
	}
	if n := fresh.CachedCiphers(); n != 0 {
		t.Errorf("50 checks left %d ciphers in the Sealer", n)
	}
}

// plainKeyring hides the bolt keyring's LiveKeys: FirstKeysGone then asks
// one user at a time.
type plainKeyring struct{ eventstore.Keyring }

// FirstKeysGone answers as FirstKeyGone does for each user, with the bolt
// keyring's one read and with a keyring that has none, whether the user's
// cipher is cached or not.
func TestFirstKeysGone(t *testing.T) {
	_, keys := openStore(t)
	ctx := context.Background()
	writer := domain.NewSealer(keys)
	for _, u := range []domain.UserID{"@sealed:x", "@keyed:x", "@erased:x"} {
		if _, err := writer.Seal(ctx, u, []byte(`"v"`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := keys.Destroy(ctx, "@erased:x"); err != nil {
		t.Fatal(err)
	}
	writer.Forget("@erased:x")
	if _, err := writer.Seal(ctx, "@erased:x", []byte(`"again"`)); err != nil {
		t.Fatal(err)
	}
	users := []domain.UserID{"@sealed:x", "@keyed:x", "@erased:x", "@never:x", "@sealed:x"}
	want := []bool{false, false, true, true, false}
	for _, tc := range []struct {
		name   string
		sealer *domain.Sealer
	}{
		{"one read, ciphers cached", writer},
		{"one read, nothing cached", domain.NewSealer(keys)},
		{"one user at a time", domain.NewSealer(plainKeyring{keys})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone, err := tc.sealer.FirstKeysGone(ctx, users)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range users {
				one, err := tc.sealer.FirstKeyGone(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				if gone[i] != want[i] || one != want[i] {
					t.Errorf("%s: FirstKeysGone %v, FirstKeyGone %v, want %v", u, gone[i], one, want[i])
				}
			}
		})
	}
}

package domain

import (
	"testing"

	"github.com/profilestore/profilestore/eventstore"
)

func ptr(s string) *string { return &s }

// decide runs a decision and folds its events into the room, as the service does.
func decide(t *testing.T, r *Room, evs []Event, err error) []Event {
	t.Helper()
	for i := range evs {
		r.Apply(&evs[i])
	}
	return evs
}

func member(t *testing.T, r *Room, u UserID, m string, actor UserID) ([]Event, error) {
	t.Helper()
	evs, err := DecideMembership(r, ChangeMembership{Room: "!r:x", User: u, Membership: m, DisplayName: ptr("N"), Meta: Metadata{Actor: actor}}, DefaultLimits)
	return decide(t, r, evs, err), err
}

func TestDecideMembershipTransitions(t *testing.T) {
	var r Room
	steps := []struct {
		membership string
		wantEvents int
		wantCode   string
		wantState  string
	}{
		{MembershipLeave, 0, "", MembershipLeave}, // leaving a room never joined changes nothing
		{MembershipKick, 0, "", MembershipLeave},
		{MembershipInvite, 1, "", MembershipInvite},
		{MembershipInvite, 0, "", MembershipInvite},
		{MembershipJoin, 1, "", MembershipJoin},
		{MembershipJoin, 0, "", MembershipJoin},
		{MembershipInvite, 0, ErrCodeForbidden, MembershipJoin},
		{MembershipKick, 1, "", MembershipLeave},
		{MembershipBan, 1, "", MembershipBan},
		{MembershipJoin, 0, ErrCodeForbidden, MembershipBan},
		{MembershipInvite, 0, ErrCodeForbidden, MembershipBan},
		{MembershipBan, 0, "", MembershipBan},
		{MembershipLeave, 1, "", MembershipLeave}, // unban
		{MembershipJoin, 1, "", MembershipJoin},
		{"knock", 0, ErrCodeInvalidParam, MembershipJoin},
	}
	for i, st := range steps {
		evs, err := member(t, &r, "@a:x", st.membership, "@mod:x")
		if ErrorCode(err) != st.wantCode || len(evs) != st.wantEvents {
			t.Fatalf("step %d (%s): %d events, err %v; want %d events, code %q", i, st.membership, len(evs), err, st.wantEvents, st.wantCode)
		}
		if got := r.Membership("@a:x"); got != st.wantState {
			t.Fatalf("step %d (%s): state %s, want %s", i, st.membership, got, st.wantState)
		}
	}
}

func TestDecideMembershipEvents(t *testing.T) {
	var r Room
	evs, _ := DecideMembership(&r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipJoin,
		DisplayName: ptr("  Alice "), AvatarURL: ptr(""), Meta: Metadata{Actor: "@a:x"}}, DefaultLimits)
	if len(evs) != 1 || evs[0].Type != TypeMemberJoined || evs[0].DisplayName == nil || *evs[0].DisplayName != "Alice" || evs[0].AvatarURL != nil {
		t.Fatalf("join event = %+v; want trimmed name and no avatar", evs)
	}
	decide(t, &r, evs, nil)
	evs, _ = DecideMembership(&r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipKick, Meta: Metadata{Actor: "@mod:x"}}, DefaultLimits)
	if len(evs) != 1 || evs[0].Type != TypeMemberLeft || evs[0].Membership != MembershipKick || evs[0].By != "@mod:x" {
		t.Fatalf("kick event = %+v", evs)
	}
	for _, bad := range []ChangeMembership{
		{User: "@b:x", Membership: MembershipJoin, AvatarURL: ptr("http://x/y")},
		{User: "@b:x", Membership: MembershipJoin, DisplayName: ptr("a\x00b")},
		{User: "@b:x", Membership: MembershipInvite, DisplayName: ptr(string(make([]rune, 300)))},
	} {
		if _, err := DecideMembership(&r, bad, DefaultLimits); ErrorCode(err) == "" {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestDecideMemberProfile(t *testing.T) {
	var r Room
	set := func(u UserID, field, v string) ([]Event, error) {
		evs, err := DecideSetMemberProfile(&r, SetMemberProfile{Room: "!r:x", User: u, Field: field, Value: v}, DefaultLimits)
		return decide(t, &r, evs, err), err
	}
	if _, err := set("@a:x", KeyDisplayName, "Nick"); ErrorCode(err) != ErrCodeForbidden {
		t.Fatalf("override by a non-member: %v, want M_FORBIDDEN", err)
	}
	member(t, &r, "@a:x", MembershipJoin, "@a:x")
	if evs, err := set("@a:x", KeyDisplayName, "Nick"); err != nil || len(evs) != 1 || string(evs[0].Value) != `"Nick"` {
		t.Fatalf("override: %+v %v", evs, err)
	}
	if evs, _ := set("@a:x", KeyDisplayName, " Nick "); len(evs) != 0 {
		t.Error("setting the same override again appended an event")
	}
	if _, err := set("@a:x", "m.tz", "Europe/Paris"); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("override of m.tz: %v, want M_INVALID_PARAM", err)
	}
	if _, err := set("@a:x", KeyAvatarURL, "https://x/y"); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("override with a non-mxc avatar: %v", err)
	}
	// An empty value clears, and clearing twice changes nothing.
	if evs, _ := set("@a:x", KeyDisplayName, ""); len(evs) != 1 || evs[0].Type != TypeMemberProfileGone {
		t.Fatalf("empty override = %+v, want a clear", evs)
	}
	if evs, _ := DecideClearMemberProfile(&r, ClearMemberProfile{User: "@a:x", Field: KeyDisplayName}); len(evs) != 0 {
		t.Error("clearing a missing override appended an event")
	}
	// Leaving drops overrides: a new membership starts without them.
	set("@a:x", KeyAvatarURL, "mxc://x/abc")
	member(t, &r, "@a:x", MembershipLeave, "@a:x")
	member(t, &r, "@a:x", MembershipJoin, "@a:x")
	if len(r.Members["@a:x"].Overrides) != 0 {
		t.Errorf("overrides survived a leave: %v", r.Members["@a:x"].Overrides)
	}
}

func TestDecideRoomSettings(t *testing.T) {
	var r Room
	if evs, _ := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: VisibilityShared}); len(evs) != 0 {
		t.Error("setting the default visibility appended an event")
	}
	if _, err := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: "public"}); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("bad visibility: %v", err)
	}
	evs, _ := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: VisibilityJoined})
	decide(t, &r, evs, nil)
	if r.Visibility() != VisibilityJoined {
		t.Errorf("visibility = %s", r.Visibility())
	}
	pl := PowerLevels{Users: map[UserID]int{"@mod:x": 50}, Kick: 50}
	evs, _ = DecidePowerLevels(&r, SetPowerLevels{PowerLevels: pl})
	decide(t, &r, evs, nil)
	if len(evs) != 1 || !r.PowerLevels.IsModerator("@mod:x") || r.PowerLevels.IsModerator("@a:x") {
		t.Fatalf("power levels: %+v", r.PowerLevels)
	}
	if evs, _ := DecidePowerLevels(&r, SetPowerLevels{PowerLevels: PowerLevels{Users: map[UserID]int{"@mod:x": 50}, Kick: 50}}); len(evs) != 0 {
		t.Error("the same power levels appended an event")
	}
	if _, err := DecidePowerLevels(&r, SetPowerLevels{PowerLevels: PowerLevels{Users: map[UserID]int{"mod": 50}}}); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("bad user in power levels: %v", err)
	}
}

func TestOverrideClearedByPropagateAll(t *testing.T) {
	var r Room
	member(t, &r, "@a:x", MembershipJoin, "@a:x")
	evs, _ := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick"}, DefaultLimits)
	evs[0].Position = eventstore.Position{Commit: 5, Prepare: 5}
	decide(t, &r, evs, nil)
	all := eventstore.Position{Commit: 7, Prepare: 7} // a later global change with propagate_to all
	if evs, _ := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick", ClearedAt: all}, DefaultLimits); len(evs) != 1 {
		t.Error("re-setting an override that propagate_to=all cleared appended nothing; the room would keep the global name")
	}
	if evs, _ := DecideClearMemberProfile(&r, ClearMemberProfile{User: "@a:x", Field: KeyDisplayName, ClearedAt: all}); len(evs) != 0 {
		t.Error("clearing an override that propagate_to=all already cleared appended an event")
	}
	if evs, _ := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick", ClearedAt: eventstore.Position{Commit: 3, Prepare: 3}}, DefaultLimits); len(evs) != 0 {
		t.Error("an override newer than the last propagate_to=all change was treated as cleared")
	}
}

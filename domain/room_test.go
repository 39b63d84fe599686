package domain

import (
	"testing"

	"github.com/profilestore/profilestore/eventstore"
)

func ptr(s string) *string { return &s }

// decide folds a decision's events into the room, as the service does. A
// decision that fails must return no events.
func decide(t *testing.T, r *Room, evs []Event, err error) []Event {
	t.Helper()
	if err != nil && len(evs) != 0 {
		t.Fatalf("a failed decision (%v) returned events %+v", err, evs)
	}
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

// mustMember changes u's membership by u's own hand, which must succeed.
func mustMember(t *testing.T, r *Room, u UserID, m string) {
	t.Helper()
	if _, err := member(t, r, u, m, u); err != nil {
		t.Fatalf("%s %s: %v", u, m, err)
	}
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
	evs, err := DecideMembership(&r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipJoin,
		DisplayName: ptr("  Alice "), AvatarURL: ptr(""), Meta: Metadata{Actor: "@a:x"}}, DefaultLimits)
	if err != nil || len(evs) != 1 || evs[0].Type != TypeMemberJoined || evs[0].DisplayName == nil || *evs[0].DisplayName != "Alice" || evs[0].AvatarURL != nil {
		t.Fatalf("join event = %+v; want trimmed name and no avatar", evs)
	}
	decide(t, &r, evs, err)
	evs, err = DecideMembership(&r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipKick, Meta: Metadata{Actor: "@mod:x"}}, DefaultLimits)
	if err != nil || len(evs) != 1 || evs[0].Type != TypeMemberLeft || evs[0].Membership != MembershipKick || evs[0].By != "@mod:x" {
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
	// Clearing is refused to a non-member too, as setting is.
	if _, err := set("@a:x", KeyDisplayName, ""); ErrorCode(err) != ErrCodeForbidden {
		t.Errorf("empty override by a non-member: %v, want M_FORBIDDEN", err)
	}
	if _, err := DecideClearMemberProfile(&r, ClearMemberProfile{User: "@a:x", Field: KeyDisplayName}); ErrorCode(err) != ErrCodeForbidden {
		t.Errorf("clear by a non-member: %v, want M_FORBIDDEN", err)
	}
	mustMember(t, &r, "@a:x", MembershipJoin)
	if evs, err := set("@a:x", KeyDisplayName, "Nick"); err != nil || len(evs) != 1 || string(evs[0].Value) != `"Nick"` {
		t.Fatalf("override: %+v %v", evs, err)
	}
	if evs, err := set("@a:x", KeyDisplayName, " Nick "); err != nil || len(evs) != 0 {
		t.Errorf("setting the same override again: %+v %v, want no events and no error", evs, err)
	}
	if _, err := set("@a:x", "m.tz", "Europe/Paris"); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("override of m.tz: %v, want M_INVALID_PARAM", err)
	}
	if _, err := set("@a:x", KeyAvatarURL, "https://x/y"); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("override with a non-mxc avatar: %v", err)
	}
	// An empty value clears, and clearing twice changes nothing.
	if evs, err := set("@a:x", KeyDisplayName, ""); err != nil || len(evs) != 1 || evs[0].Type != TypeMemberProfileGone {
		t.Fatalf("empty override = %+v %v, want a clear", evs, err)
	}
	if evs, err := DecideClearMemberProfile(&r, ClearMemberProfile{User: "@a:x", Field: KeyDisplayName}); err != nil || len(evs) != 0 {
		t.Errorf("clearing a missing override: %+v %v, want no events and no error", evs, err)
	}
	// Leaving drops overrides: a new membership starts without them.
	if _, err := set("@a:x", KeyAvatarURL, "mxc://x/abc"); err != nil {
		t.Fatal(err)
	}
	mustMember(t, &r, "@a:x", MembershipLeave)
	mustMember(t, &r, "@a:x", MembershipJoin)
	if len(r.Members["@a:x"].Overrides) != 0 {
		t.Errorf("overrides survived a leave: %v", r.Members["@a:x"].Overrides)
	}
}

func TestDecideRoomSettings(t *testing.T) {
	var r Room
	if evs, err := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: VisibilityShared}); err != nil || len(evs) != 0 {
		t.Errorf("setting the default visibility: %+v %v, want no events and no error", evs, err)
	}
	if _, err := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: "public"}); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("bad visibility: %v", err)
	}
	evs, err := DecideHistoryVisibility(&r, SetHistoryVisibility{Visibility: VisibilityJoined})
	decide(t, &r, evs, err)
	if r.Visibility() != VisibilityJoined {
		t.Errorf("visibility = %s", r.Visibility())
	}
	pl := PowerLevels{Users: map[UserID]int{"@mod:x": 50}, Kick: 50}
	evs, err = DecidePowerLevels(&r, SetPowerLevels{PowerLevels: pl})
	decide(t, &r, evs, err)
	if len(evs) != 1 || !r.PowerLevels.IsModerator("@mod:x") || r.PowerLevels.IsModerator("@a:x") {
		t.Fatalf("power levels: %+v", r.PowerLevels)
	}
	if evs, err := DecidePowerLevels(&r, SetPowerLevels{PowerLevels: PowerLevels{Users: map[UserID]int{"@mod:x": 50}, Kick: 50}}); err != nil || len(evs) != 0 {
		t.Errorf("the same power levels: %+v %v, want no events and no error", evs, err)
	}
	if _, err := DecidePowerLevels(&r, SetPowerLevels{PowerLevels: PowerLevels{Users: map[UserID]int{"mod": 50}}}); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("bad user in power levels: %v", err)
	}
}

func TestOverrideClearedByPropagateAll(t *testing.T) {
	var r Room
	mustMember(t, &r, "@a:x", MembershipJoin)
	evs, err := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick"}, DefaultLimits)
	if err != nil || len(evs) != 1 {
		t.Fatalf("override: %+v %v", evs, err)
	}
	evs[0].Position = eventstore.Position{Commit: 5, Prepare: 5}
	decide(t, &r, evs, err)
	all := eventstore.Position{Commit: 7, Prepare: 7} // a later global change with propagate_to all
	if evs, err := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick", ClearedAt: all}, DefaultLimits); err != nil || len(evs) != 1 {
		t.Errorf("re-setting an override that propagate_to=all cleared: %+v %v; the room would keep the global name", evs, err)
	}
	if evs, err := DecideClearMemberProfile(&r, ClearMemberProfile{User: "@a:x", Field: KeyDisplayName, ClearedAt: all}); err != nil || len(evs) != 0 {
		t.Errorf("clearing an override that propagate_to=all already cleared: %+v %v, want no events and no error", evs, err)
	}
	if evs, err := DecideSetMemberProfile(&r, SetMemberProfile{User: "@a:x", Field: KeyDisplayName, Value: "Nick", ClearedAt: eventstore.Position{Commit: 3, Prepare: 3}}, DefaultLimits); err != nil || len(evs) != 0 {
		t.Errorf("an override newer than the last propagate_to=all change: %+v %v, want no events and no error", evs, err)
	}
}

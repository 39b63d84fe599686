package domain

import (
	"encoding/json"
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

// TestDecideMembershipTable checks every transition of Matrix's
// m.room.member table (from invite, join, leave, ban; by the user or by
// someone else) for the admin route (strict) and for mirror mode
// (FromHomeserver). "from knock" is "from leave": profilestore records no
// knocks. Each row starts from its own room.
func TestDecideMembershipTable(t *testing.T) {
	const u, mod = UserID("@u:x"), UserID("@mod:x")
	type want struct {
		result string // "", joined, invited, left:<membership>, or an errcode
		state  string
	}
	rows := []struct {
		from, cmd string
		byOther   bool
		strict    want // the admin route
		hs        want // mirror mode
	}{
		// from invite
		{MembershipInvite, MembershipInvite, true, want{"", MembershipInvite}, want{"", MembershipInvite}},
		{MembershipInvite, MembershipJoin, false, want{"joined", MembershipJoin}, want{"joined", MembershipJoin}},
		{MembershipInvite, MembershipLeave, false, want{"left:leave", MembershipLeave}, want{"left:leave", MembershipLeave}}, // rejected
		{MembershipInvite, MembershipKick, true, want{"left:kick", MembershipLeave}, want{"left:kick", MembershipLeave}},     // revoked
		{MembershipInvite, MembershipBan, true, want{"left:ban", MembershipBan}, want{"left:ban", MembershipBan}},            // banned
		{MembershipInvite, MembershipKnock, false, want{"left:leave", MembershipLeave}, want{"left:leave", MembershipLeave}}, // re-knocking
		{MembershipInvite, MembershipUnban, true, want{ErrCodeForbidden, MembershipInvite}, want{"", MembershipInvite}},      // not banned
		// from join
		{MembershipJoin, MembershipInvite, true, want{ErrCodeForbidden, MembershipJoin}, want{"invited", MembershipInvite}}, // must never happen
		{MembershipJoin, MembershipJoin, false, want{"", MembershipJoin}, want{"", MembershipJoin}},                         // same names: no change
		{MembershipJoin, MembershipLeave, false, want{"left:leave", MembershipLeave}, want{"left:leave", MembershipLeave}},
		{MembershipJoin, MembershipKick, true, want{"left:kick", MembershipLeave}, want{"left:kick", MembershipLeave}},
		{MembershipJoin, MembershipBan, true, want{"left:ban", MembershipBan}, want{"left:ban", MembershipBan}}, // kicked and banned
		{MembershipJoin, MembershipKnock, false, want{ErrCodeForbidden, MembershipJoin}, want{"left:leave", MembershipLeave}},
		{MembershipJoin, MembershipUnban, true, want{ErrCodeForbidden, MembershipJoin}, want{"", MembershipJoin}},
		// from leave (and from knock)
		{MembershipLeave, MembershipInvite, true, want{"invited", MembershipInvite}, want{"invited", MembershipInvite}},
		{MembershipLeave, MembershipJoin, false, want{"joined", MembershipJoin}, want{"joined", MembershipJoin}},
		{MembershipLeave, MembershipLeave, false, want{"", MembershipLeave}, want{"", MembershipLeave}},
		{MembershipLeave, MembershipKick, true, want{"", MembershipLeave}, want{"", MembershipLeave}},
		{MembershipLeave, MembershipBan, true, want{"left:ban", MembershipBan}, want{"left:ban", MembershipBan}},
		{MembershipLeave, MembershipKnock, false, want{"", MembershipLeave}, want{"", MembershipLeave}},
		{MembershipLeave, MembershipUnban, true, want{"", MembershipLeave}, want{"", MembershipLeave}},
		// from ban
		{MembershipBan, MembershipInvite, true, want{ErrCodeForbidden, MembershipBan}, want{"invited", MembershipInvite}},
		{MembershipBan, MembershipJoin, false, want{ErrCodeForbidden, MembershipBan}, want{"joined", MembershipJoin}},
		{MembershipBan, MembershipLeave, true, want{"left:leave", MembershipLeave}, want{"left:leave", MembershipLeave}}, // unbanned
		{MembershipBan, MembershipLeave, false, want{ErrCodeForbidden, MembershipBan}, want{"left:leave", MembershipLeave}},
		{MembershipBan, MembershipKick, true, want{ErrCodeForbidden, MembershipBan}, want{"left:leave", MembershipLeave}}, // the homeserver's unban
		{MembershipBan, MembershipUnban, true, want{"left:leave", MembershipLeave}, want{"left:leave", MembershipLeave}},
		{MembershipBan, MembershipBan, true, want{"", MembershipBan}, want{"", MembershipBan}},
		{MembershipBan, MembershipKnock, false, want{ErrCodeForbidden, MembershipBan}, want{"left:leave", MembershipLeave}},
	}
	setup := map[string][]string{
		MembershipInvite: {MembershipInvite}, MembershipJoin: {MembershipJoin},
		MembershipLeave: {MembershipJoin, MembershipLeave}, MembershipBan: {MembershipBan},
	}
	// The user's global name is the one every join here gives.
	global := Profile{Fields: map[string]json.RawMessage{KeyDisplayName: json.RawMessage(`"N"`)}}
	for _, row := range rows {
		for _, mode := range []struct {
			name string
			hs   bool
			want want
		}{{"admin", false, row.strict}, {"homeserver", true, row.hs}} {
			by := "self"
			if row.byOther {
				by = "other"
			}
			t.Run(row.from+"/"+row.cmd+"/by_"+by+"/"+mode.name, func(t *testing.T) {
				var r Room
				for _, m := range setup[row.from] {
					evs, err := DecideMembership(&r, ChangeMembership{Room: "!r:x", User: u, Membership: m, DisplayName: ptr("N"), Meta: Metadata{Actor: mod}}, DefaultLimits)
					decide(t, &r, evs, err)
					if err != nil {
						t.Fatalf("setup %s: %v", m, err)
					}
				}
				if r.Membership(u) != row.from {
					t.Fatalf("setup: state %s, want %s", r.Membership(u), row.from)
				}
				actor := u
				if row.byOther {
					actor = mod
				}
				evs, err := DecideMembership(&r, ChangeMembership{Room: "!r:x", User: u, Membership: row.cmd, DisplayName: ptr("N"), Global: global,
					FromHomeserver: mode.hs, Meta: Metadata{Actor: actor}}, DefaultLimits)
				decide(t, &r, evs, err)
				got := ErrorCode(err)
				if err == nil && len(evs) > 1 {
					t.Fatalf("%d events %+v, want at most one", len(evs), evs)
				}
				if err == nil && len(evs) == 1 {
					switch e := evs[0]; e.Type {
					case TypeMemberJoined:
						got = "joined"
					case TypeMemberInvited:
						got = "invited"
					case TypeMemberLeft:
						got = "left:" + e.Membership
						if row.byOther && e.By != mod {
							t.Errorf("by = %q, want %s", e.By, mod)
						}
					default:
						got = e.Type
					}
				}
				if got != mode.want.result {
					t.Errorf("result %q (err %v), want %q", got, err, mode.want.result)
				}
				if st := r.Membership(u); st != mode.want.state {
					t.Errorf("state %s, want %s", st, mode.want.state)
				}
			})
		}
	}
}

// TestDecideMembershipUnknown refuses memberships Matrix does not have.
func TestDecideMembershipUnknown(t *testing.T) {
	var r Room
	if _, err := DecideMembership(&r, ChangeMembership{User: "@a:x", Membership: "part"}, DefaultLimits); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("membership part: %v, want M_INVALID_PARAM", err)
	}
}

// TestDecideJoinOfJoinedMember: a join of a member already joined changes
// their names in the room; names not given are left alone.
func TestDecideJoinOfJoinedMember(t *testing.T) {
	var global Profile
	global.Fields = map[string]json.RawMessage{KeyDisplayName: json.RawMessage(`"Alice"`)}
	join := func(r *Room, dn, av *string) []Event {
		t.Helper()
		evs, err := DecideMembership(r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipJoin, DisplayName: dn, AvatarURL: av, Global: global, Meta: Metadata{Actor: "@a:x"}}, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		return decide(t, r, evs, err)
	}
	var r Room
	if evs := join(&r, nil, nil); len(evs) != 1 || evs[0].DisplayName == nil || *evs[0].DisplayName != "Alice" {
		t.Fatalf("first join without names = %+v, want the global name", evs)
	}
	if evs := join(&r, ptr("Captain"), nil); len(evs) != 1 || evs[0].Type != TypeMemberProfileSet || string(evs[0].Value) != `"Captain"` {
		t.Fatalf("join with a new name = %+v, want a per-room value", evs)
	}
	if evs := join(&r, nil, ptr("mxc://x/av")); len(evs) != 1 || evs[0].Key != KeyAvatarURL {
		t.Fatalf("join with a new avatar only = %+v, want the avatar alone", evs)
	}
	if got := string(r.Members["@a:x"].Overrides[KeyDisplayName]); got != `"Captain"` {
		t.Errorf("the name not given changed: %s", got)
	}
	if evs := join(&r, ptr("Captain"), nil); len(evs) != 0 {
		t.Errorf("the same name again = %+v, want nothing", evs)
	}
	if evs := join(&r, ptr("Alice"), ptr("")); len(evs) != 2 || evs[0].Type != TypeMemberProfileGone || evs[1].Type != TypeMemberProfileGone {
		t.Fatalf("join with the global name and no avatar = %+v, want both overrides cleared", evs)
	}
	if _, err := DecideMembership(&r, ChangeMembership{Room: "!r:x", User: "@a:x", Membership: MembershipJoin, AvatarURL: ptr("http://x/y"), Meta: Metadata{Actor: "@a:x"}}, DefaultLimits); ErrorCode(err) != ErrCodeInvalidParam {
		t.Errorf("join of a joined member with a bad avatar: %v, want M_INVALID_PARAM", err)
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

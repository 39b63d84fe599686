package domain_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
)

func pastMeta(key string, at time.Time) domain.Metadata {
	return domain.Metadata{OccurredAt: at, OrderTS: at.UnixMilli(), IdempotencyKey: key, Source: "backfill:test"}
}

func liveMeta(at time.Time) domain.Metadata {
	return domain.Metadata{OccurredAt: at, Source: "mirror:test"}
}

func TestBackfilledEventsNeverOverrideLiveState(t *testing.T) {
	ctx := context.Background()
	store, keys := openStore(t)
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	rooms := domain.NewRoomService(store, sealer, domain.DefaultPolicy, profiles)
	const room, alice, bob = domain.RoomID("!r:x"), domain.UserID("@alice:x"), domain.UserID("@bob:x")
	install := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	past := install.Add(-365 * 24 * time.Hour)
	name := func(s string) *string { return &s }

	// Before anything live: the newest backfilled change wins, whatever
	// order the backfill wrote them in.
	for _, c := range []struct {
		key  string
		at   time.Time
		name string
	}{{"b2", past.Add(2 * time.Hour), "Bob Two"}, {"b1", past.Add(time.Hour), "Bob One"}} {
		if _, err := profiles.RecordPast(ctx, domain.PastField{User: bob, Key: domain.KeyDisplayName, Value: name(c.name), Actor: domain.ServerActor, Meta: pastMeta(c.key, c.at)}); err != nil {
			t.Fatal(err)
		}
	}
	if p, _, err := profiles.Profile(ctx, bob); err != nil || p.DisplayName() != "Bob Two" {
		t.Fatalf("bob (backfilled only) = %q, %v; want the newest backfilled name, Bob Two", p.DisplayName(), err)
	}

	// Mirror mode since install day: alice joined and named live.
	v, _ := json.Marshal("Alice Live")
	if _, err := profiles.SetField(ctx, domain.SetField{User: alice, Actor: domain.ServerActor, Key: domain.KeyDisplayName, Value: v, Meta: liveMeta(install)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rooms.ChangeMembership(ctx, domain.ChangeMembership{Room: room, User: alice, Actor: domain.ServerActor, Membership: domain.MembershipJoin, FromHomeserver: true, Meta: liveMeta(install)}); err != nil {
		t.Fatal(err)
	}
	// The backfill then records her past: a leave, an old name, a ban of bob.
	for _, e := range []domain.PastRoomEvent{
		{Events: []domain.Event{domain.Event{Type: domain.TypeMemberJoined, User: alice, DisplayName: name("Alice")}}, Meta: pastMeta("a1", past)},
		{Events: []domain.Event{domain.Event{Type: domain.TypeMemberLeft, User: alice, Membership: domain.MembershipLeave}}, Meta: pastMeta("a2", past.Add(time.Hour))},
		{Events: []domain.Event{domain.Event{Type: domain.TypeMemberLeft, User: bob, Membership: domain.MembershipBan, By: alice}}, Meta: pastMeta("b3", past.Add(2*time.Hour))},
		{Events: []domain.Event{domain.Event{Type: domain.TypeHistoryVisibility, Visibility: domain.VisibilityJoined}}, Meta: pastMeta("v1", past)},
	} {
		e.Room, e.Actor = room, domain.ServerActor
		res, err := rooms.RecordPast(ctx, e)
		if err != nil || !res.Changed {
			t.Fatalf("RecordPast %s: %+v, %v", e.Events[0].Type, res, err)
		}
	}
	res, err := profiles.RecordPast(ctx, domain.PastField{User: alice, Key: domain.KeyDisplayName, Value: name("Alice Old"), Actor: domain.ServerActor, Meta: pastMeta("a3", past)})
	if err != nil || !res.Changed {
		t.Fatalf("alice's past name: %+v, %v", res, err)
	}
	if p, _, _ := profiles.Profile(ctx, alice); p.DisplayName() != "Alice Live" {
		t.Errorf("alice's profile after the backfill = %q, want the live Alice Live", p.DisplayName())
	}
	// Her live join stands; bob, never seen live, is banned as the past says.
	ban, _ := rooms.ChangeMembership(ctx, domain.ChangeMembership{Room: room, User: alice, Actor: domain.ServerActor, Membership: domain.MembershipJoin, FromHomeserver: true, Meta: liveMeta(install.Add(time.Minute))})
	if ban.Changed {
		t.Error("alice's join after the backfill changed something: the backfilled leave took over her live state")
	}
	if _, err := rooms.ChangeMembership(ctx, domain.ChangeMembership{Room: room, User: bob, Actor: domain.Actor{User: "@admin:x", Admin: true}, Membership: domain.MembershipJoin, Meta: liveMeta(install.Add(time.Minute))}); domain.ErrorCode(err) != domain.ErrCodeForbidden {
		t.Errorf("bob joining after a backfilled ban: %v, want M_FORBIDDEN (banned)", err)
	}

	// Events from the room's live time on are mirror mode's: nothing appended.
	for _, at := range []time.Time{install, install.Add(time.Hour)} {
		res, err := rooms.RecordPast(ctx, domain.PastRoomEvent{Room: room, Actor: domain.ServerActor,
			Events: []domain.Event{{Type: domain.TypeMemberLeft, User: alice, Membership: domain.MembershipLeave}}, Meta: pastMeta("late"+at.String(), at)})
		if err != nil || res.Changed {
			t.Errorf("a backfilled event at %v, after the room's first live one: %+v, %v; want nothing appended", at, res, err)
		}
	}
	if since, err := rooms.LiveSince(ctx, room); err != nil || since != install.UnixMilli() {
		t.Errorf("LiveSince = %d, %v; want %d", since, err, install.UnixMilli())
	}
}

func TestRecordPastRefusesWhatCommandsRefuse(t *testing.T) {
	ctx := context.Background()
	store, keys := openStore(t)
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	rooms := domain.NewRoomService(store, sealer, domain.DefaultPolicy, profiles)
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	long := string(make([]rune, 300))
	for name, cmd := range map[string]domain.PastRoomEvent{
		"no order":        {Events: []domain.Event{domain.Event{Type: domain.TypeMemberJoined, User: "@a:x"}}, Meta: domain.Metadata{IdempotencyKey: "k"}},
		"no key":          {Events: []domain.Event{domain.Event{Type: domain.TypeMemberJoined, User: "@a:x"}}, Meta: domain.Metadata{OrderTS: at.UnixMilli()}},
		"name too long":   {Events: []domain.Event{domain.Event{Type: domain.TypeMemberJoined, User: "@a:x", DisplayName: &long}}, Meta: pastMeta("k", at)},
		"bad user":        {Events: []domain.Event{domain.Event{Type: domain.TypeMemberJoined, User: "alice"}}, Meta: pastMeta("k", at)},
		"bad membership":  {Events: []domain.Event{domain.Event{Type: domain.TypeMemberLeft, User: "@a:x", Membership: "knock"}}, Meta: pastMeta("k", at)},
		"bad visibility":  {Events: []domain.Event{domain.Event{Type: domain.TypeHistoryVisibility, Visibility: "everyone"}}, Meta: pastMeta("k", at)},
		"nothing":         {Meta: pastMeta("k", at)},
		"a profile event": {Events: []domain.Event{domain.Event{Type: domain.TypeFieldSet, User: "@a:x"}}, Meta: pastMeta("k", at)},
	} {
		t.Run(name, func(t *testing.T) {
			cmd.Room, cmd.Actor = "!r:x", domain.ServerActor
			if _, err := rooms.RecordPast(ctx, cmd); domain.ErrorCode(err) == "" {
				t.Errorf("RecordPast = %v, want a Matrix error", err)
			}
		})
	}
	if _, err := rooms.RecordPast(ctx, domain.PastRoomEvent{Room: "!r:x", Actor: domain.Actor{}, Events: []domain.Event{{Type: domain.TypeMemberJoined, User: "@a:x"}}, Meta: pastMeta("k", at)}); domain.ErrorCode(err) != domain.ErrCodeForbidden {
		t.Errorf("RecordPast by nobody = %v, want M_FORBIDDEN", err)
	}
}

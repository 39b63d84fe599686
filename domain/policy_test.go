package domain

import (
	"testing"

	"github.com/profilestore/profilestore/eventstore"
)

func TestWritePolicy(t *testing.T) {
	const alice, bob = UserID("@alice:x"), UserID("@bob:x")
	user := Actor{User: alice}
	admin := Actor{User: "@admin:x", Admin: true}
	noFields := WritePolicy{Fields: ProfileFields{Disabled: true}}
	onlyTZ := WritePolicy{Fields: ProfileFields{Allowed: []string{KeyTimeZone}}}
	noAvatar := WritePolicy{Fields: ProfileFields{Disallowed: []string{KeyAvatarURL}}}
	cases := []struct {
		name   string
		policy WritePolicy
		check  func(WritePolicy) error
		allow  bool
	}{
		{"own profile", DefaultPolicy, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyDisplayName) }, true},
		{"another's profile", DefaultPolicy, func(p WritePolicy) error { return p.CheckProfileWrite(user, bob, KeyDisplayName) }, false},
		{"admin, another's profile", DefaultPolicy, func(p WritePolicy) error { return p.CheckProfileWrite(admin, bob, KeyDisplayName) }, true},
		{"nobody", DefaultPolicy, func(p WritePolicy) error { return p.CheckProfileWrite(Actor{}, "", KeyDisplayName) }, false},
		{"fields disabled", noFields, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyDisplayName) }, false},
		{"fields disabled, admin", noFields, func(p WritePolicy) error { return p.CheckProfileWrite(admin, alice, KeyDisplayName) }, false},
		{"fields disabled, server", noFields, func(p WritePolicy) error { return p.CheckProfileWrite(ServerActor, alice, KeyDisplayName) }, true},
		{"allowed key", onlyTZ, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyTimeZone) }, true},
		{"key not allowed", onlyTZ, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyDisplayName) }, false},
		{"disallowed key", noAvatar, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyAvatarURL) }, false},
		{"key not disallowed", noAvatar, func(p WritePolicy) error { return p.CheckProfileWrite(user, alice, KeyDisplayName) }, true},
		{"room write, user", DefaultPolicy, func(p WritePolicy) error { return p.CheckRoomWrite(user) }, false},
		{"room write, admin", DefaultPolicy, func(p WritePolicy) error { return p.CheckRoomWrite(admin) }, true},
		{"room write, server", DefaultPolicy, func(p WritePolicy) error { return p.CheckRoomWrite(ServerActor) }, true},
		{"hide own", DefaultPolicy, func(p WritePolicy) error { return p.CheckHide(user, alice) }, true},
		{"hide another's", DefaultPolicy, func(p WritePolicy) error { return p.CheckHide(user, bob) }, false},
		{"hide, admin", DefaultPolicy, func(p WritePolicy) error { return p.CheckHide(admin, bob) }, true},
		{"erase own", DefaultPolicy, func(p WritePolicy) error { return p.CheckErase(user, alice) }, true},
		{"erase another", DefaultPolicy, func(p WritePolicy) error { return p.CheckErase(user, bob) }, false},
		{"erase, admin", DefaultPolicy, func(p WritePolicy) error { return p.CheckErase(admin, bob) }, true},
		{"erase, nobody", DefaultPolicy, func(p WritePolicy) error { return p.CheckErase(Actor{}, "") }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.check(c.policy)
			if c.allow && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.allow && ErrorCode(err) != ErrCodeForbidden {
				t.Fatalf("got %v, want M_FORBIDDEN", err)
			}
		})
	}
}

func TestDecideHideEntry(t *testing.T) {
	var p Profile
	at := eventstore.Position{Commit: 4, Prepare: 4}
	cmd := HideEntry{User: "@a:x", Entry: at, Meta: Metadata{Actor: "@a:x"}}
	evs, err := DecideHideEntry(&p, cmd)
	if err != nil || len(evs) != 1 || evs[0].Type != TypeEntryHidden || evs[0].Hidden != at || evs[0].User != "@a:x" {
		t.Fatalf("hide: %+v %v", evs, err)
	}
	p.Apply(&evs[0])
	if evs, err := DecideHideEntry(&p, cmd); err != nil || len(evs) != 0 {
		t.Fatalf("hiding again: %+v %v, want no events and no error", evs, err)
	}
	other := cmd
	other.Entry = eventstore.Position{Commit: 5, Prepare: 5}
	if evs, err := DecideHideEntry(&p, other); err != nil || len(evs) != 1 {
		t.Fatalf("hiding another entry: %+v %v", evs, err)
	}
	if c := p.Clone(); !c.Hidden[at] {
		t.Fatal("Clone lost the hidden entries")
	}
}

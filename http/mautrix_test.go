package http_test

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestMautrixClient drives the service with a real Matrix client library,
// unchanged: it must see a v1.16 server and use the generic profile routes.
func TestMautrixClient(t *testing.T) {
	ts := newTestService(t)
	ctx := context.Background()
	cli, err := mautrix.NewClient(ts.URL, id.UserID(alice), ts.tokens[alice])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Versions(ctx); err != nil {
		t.Fatalf("versions: %v", err)
	}
	if !cli.SpecVersions.Supports(mautrix.FeatureArbitraryProfileFields) {
		t.Fatal("the client does not see support for arbitrary profile fields")
	}
	who, err := cli.Whoami(ctx)
	if err != nil || who.UserID != id.UserID(alice) {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	if err := cli.SetDisplayName(ctx, "Alice from mautrix"); err != nil {
		t.Fatalf("set displayname: %v", err)
	}
	avatar := id.ContentURI{Homeserver: "example.com", FileID: "mautrixAvatar1"}
	if err := cli.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatalf("set avatar: %v", err)
	}
	if err := cli.SetProfileField(ctx, "org.example.pronouns", []string{"she", "her"}); err != nil {
		t.Fatalf("set custom field: %v", err)
	}

	name, err := cli.GetDisplayName(ctx, id.UserID(alice))
	if err != nil || name.DisplayName != "Alice from mautrix" {
		t.Fatalf("get displayname: %+v %v", name, err)
	}
	got, err := cli.GetAvatarURL(ctx, id.UserID(alice))
	if err != nil || got != avatar {
		t.Fatalf("get avatar: %v %v", got, err)
	}
	var field map[string][]string
	if err := cli.GetProfileField(ctx, id.UserID(alice), "org.example.pronouns", &field); err != nil || len(field["org.example.pronouns"]) != 2 {
		t.Fatalf("get custom field: %v %v", field, err)
	}
	prof, err := cli.GetProfile(ctx, id.UserID(alice))
	if err != nil || prof.DisplayName != "Alice from mautrix" || prof.AvatarURL != avatar || prof.Extra["org.example.pronouns"] == nil {
		t.Fatalf("get profile: %+v %v", prof, err)
	}
	if err := cli.DeleteProfileField(ctx, "org.example.pronouns"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	err = cli.GetProfileField(ctx, id.UserID(alice), "org.example.pronouns", &field)
	if !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("deleted field: %v", err)
	}
	// Another user's profile is refused with the Matrix error the library knows.
	other, _ := mautrix.NewClient(ts.URL, id.UserID(bob), ts.tokens[alice])
	other.SpecVersions = cli.SpecVersions
	if err := other.SetDisplayName(ctx, "Not Bob"); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("writing another's profile: %v", err)
	}
	found, err := cli.SearchUserDirectory(ctx, "MAUTRIX", 5)
	if err != nil || len(found.Results) != 1 || found.Results[0].UserID != id.UserID(alice) {
		t.Fatalf("directory: %+v %v", found, err)
	}
}

package appservice_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
)

// specExample is the registration example of the appservice spec.
const specExample = `
id: "IRC Bridge"
url: "http://127.0.0.1:1234"
as_token: "30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46"
hs_token: "312df522183efd404ec1cd22d2ffa4bbc76a8c1ccf541dd692eef281356bb74e"
sender_localpart: "_irc_bot"
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
`

func TestParseRegistrationSpecExample(t *testing.T) {
	r, err := appservice.ParseRegistration([]byte(specExample))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "IRC Bridge" || r.BaseURL() != "http://127.0.0.1:1234" || r.SenderLocalpart != "_irc_bot" {
		t.Fatalf("parsed %+v", r)
	}
	if asked, _ := r.ProfileLookup(); asked {
		t.Fatal("profile lookup without the flag")
	}
	if !r.ExclusiveUser("@_irc_bridge_bob:example.org") {
		t.Fatal("exclusive namespace not matched")
	}
}

func TestNamespaceMatchingIsAnchoredAtTheStartOnly(t *testing.T) {
	r, err := appservice.ParseRegistration([]byte(strings.Replace(specExample, `"@_irc_bridge_.*"`, `"@bob"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[domain.UserID]bool{
		"@bob:example.org":       true,  // a prefix match, as Python's re.match
		"@bobby:example.org":     true,  // the end is not anchored
		"@notbob:example.org":    false, // the start is
		"@alice:bob.example.org": false,
	}
	for u, want := range cases {
		if got := r.MatchesUser(u); got != want {
			t.Errorf("MatchesUser(%s) = %v, want %v", u, got, want)
		}
	}
	// An alternation must not escape the anchor.
	r2, err := appservice.ParseRegistration([]byte(strings.Replace(specExample, `"@_irc_bridge_.*"`, `"@a|@b"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if r2.MatchesUser("@x:example.org@b") {
		t.Fatal("alternation matched after the start")
	}
	if !r2.MatchesUser("@b:example.org") {
		t.Fatal("second alternative not matched")
	}
}

func TestParseRegistrationRefusesBadDocuments(t *testing.T) {
	cases := map[string]string{
		"no id":       strings.Replace(specExample, `id: "IRC Bridge"`, ``, 1),
		"pipe in id":  strings.Replace(specExample, `id: "IRC Bridge"`, `id: "a|b"`, 1),
		"no hs_token": strings.Replace(specExample, `hs_token: "312df522183efd404ec1cd22d2ffa4bbc76a8c1ccf541dd692eef281356bb74e"`, ``, 1),
		"no as_token": strings.Replace(specExample, `as_token: "30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46"`, ``, 1),
		"bad regex":   strings.Replace(specExample, `"@_irc_bridge_.*"`, `"@(unclosed"`, 1),
		"look-ahead":  strings.Replace(specExample, `"@_irc_bridge_.*"`, `"@(?!admin).*"`, 1),
		"ftp url":     strings.Replace(specExample, `"http://127.0.0.1:1234"`, `"ftp://x"`, 1),
		"not yaml":    "id: [unclosed",
		"no sender":   strings.Replace(specExample, `sender_localpart: "_irc_bot"`, ``, 1),
	}
	for name, doc := range cases {
		if _, err := appservice.ParseRegistration([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// url: null is valid: the appservice takes no traffic.
	r, err := appservice.ParseRegistration([]byte(strings.Replace(specExample, `url: "http://127.0.0.1:1234"`, `url: null`, 1)))
	if err != nil || r.BaseURL() != "" {
		t.Fatalf("url null: %v %q", err, r.BaseURL())
	}
}

func TestProfileLookupFlags(t *testing.T) {
	stable, _ := appservice.ParseRegistration([]byte(specExample + "supports_profile_lookup: true\n"))
	unstable, _ := appservice.ParseRegistration([]byte(specExample + "msc4337_supports_profile_lookup: true\n"))
	both, _ := appservice.ParseRegistration([]byte(specExample + "supports_profile_lookup: true\nmsc4337_supports_profile_lookup: true\n"))
	for name, c := range map[string]struct {
		r                *appservice.Registration
		asked, unstabled bool
	}{"stable": {stable, true, false}, "unstable": {unstable, true, true}, "both": {both, true, false}} {
		if a, u := c.r.ProfileLookup(); a != c.asked || u != c.unstabled {
			t.Errorf("%s: ProfileLookup = %v, %v", name, a, u)
		}
	}
}

func TestNewRegistrationRoundTrip(t *testing.T) {
	r, err := appservice.NewRegistration("profilestore", "http://127.0.0.1:8008", "_profilestore", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := appservice.NewRegistration("profilestore", "http://127.0.0.1:8008", "_profilestore", "example.org")
	if r.ASToken == r.HSToken || r.ASToken == other.ASToken || len(r.HSToken) < 32 {
		t.Fatal("tokens are not random and distinct")
	}
	path := filepath.Join(t.TempDir(), "sub", "registration.yaml")
	if err := r.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registration file mode: %v %v", fi.Mode(), err)
	}
	back, err := appservice.LoadRegistration(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.HSToken != r.HSToken || back.ASToken != r.ASToken || back.BaseURL() != "http://127.0.0.1:8008" {
		t.Fatalf("round trip: %+v", back)
	}
	if !back.MatchesUser("@alice:example.org") || back.MatchesUser("@alice:example.org.evil") || back.MatchesUser("@alice:other.org") {
		t.Fatal("the users namespace does not cover exactly the server's users")
	}
	if back.ExclusiveUser("@alice:example.org") {
		t.Fatal("profilestore must not reserve the server's users")
	}
	if _, err := appservice.NewRegistration("x", "http://h", "_x", "not a server"); err == nil {
		t.Fatal("a bad server name was accepted")
	}
}

func TestLoadRegistrationsRefusesDuplicates(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	_ = os.WriteFile(a, []byte(specExample), 0o600)
	_ = os.WriteFile(b, []byte(strings.Replace(specExample, `"IRC Bridge"`, `"Other"`, 1)), 0o600)
	if _, err := appservice.LoadRegistrations([]string{a, b}); err == nil {
		t.Fatal("a shared as_token was accepted")
	}
	_ = os.WriteFile(b, []byte(strings.Replace(specExample, "30c05ae9", "40c05ae9", 1)), 0o600)
	if _, err := appservice.LoadRegistrations([]string{a, b}); err == nil {
		t.Fatal("a shared id was accepted")
	}
}

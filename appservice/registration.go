// Package appservice is profilestore's application-service side: Synapse-
// format registration files, namespace matching, incoming transactions from a
// homeserver (mirror mode: m.room.member and friends become profile and room
// events), and outgoing MSC4337 profile supplements from other appservices.
package appservice

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/profilestore/profilestore/domain"
	"gopkg.in/yaml.v3"
)

// Namespace is one entry of a registration's users, aliases or rooms list.
type Namespace struct {
	Regex     string `yaml:"regex"`
	Exclusive bool   `yaml:"exclusive"`

	re *regexp.Regexp
}

// Matches reports whether s matches the namespace's regex anchored at the
// start only, as Synapse's Python re.match does: "@_irc_.*" matches
// "@_irc_bob:example.org", and "@bob" matches "@bobby:example.org" too, so
// registrations should end their patterns with ":server\.name" or ".*".
// Patterns are RE2 (Go regexp); the Python-only constructs (look-around,
// back-references) are refused when the registration is loaded.
func (n *Namespace) Matches(s string) bool {
	return n.re != nil && n.re.MatchString(s)
}

func (n *Namespace) compile() error {
	re, err := regexp.Compile(`^(?:` + n.Regex + `)`)
	if err != nil {
		return fmt.Errorf("namespace regex %q: %w", n.Regex, err)
	}
	n.re = re
	return nil
}

// Namespaces are the three namespace lists of a registration.
type Namespaces struct {
	Users   []Namespace `yaml:"users,omitempty"`
	Aliases []Namespace `yaml:"aliases,omitempty"`
	Rooms   []Namespace `yaml:"rooms,omitempty"`
}

// Registration is an application service registration in the format Synapse
// and Dendrite read (application-service-api registration.yaml).
type Registration struct {
	ID              string     `yaml:"id"`
	URL             *string    `yaml:"url"`
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	RateLimited     *bool      `yaml:"rate_limited,omitempty"`
	Protocols       []string   `yaml:"protocols,omitempty"`
	// SupportsProfileLookup is MSC4337's stable flag; UnstableProfileLookup
	// its unstable one, which also selects the unstable endpoint.
	SupportsProfileLookup bool `yaml:"supports_profile_lookup,omitempty"`
	UnstableProfileLookup bool `yaml:"msc4337_supports_profile_lookup,omitempty"`
}

// ProfileLookup reports whether the appservice asked to supplement profiles
// (MSC4337) and whether it is to be called on the unstable path.
func (r *Registration) ProfileLookup() (asked, unstable bool) {
	if r.SupportsProfileLookup {
		return true, false
	}
	return r.UnstableProfileLookup, r.UnstableProfileLookup
}

// MatchesUser reports whether user is in one of the users namespaces.
func (r *Registration) MatchesUser(user domain.UserID) bool {
	for i := range r.Namespaces.Users {
		if r.Namespaces.Users[i].Matches(string(user)) {
			return true
		}
	}
	return false
}

// ExclusiveUser reports whether user is in one of the exclusive users namespaces.
func (r *Registration) ExclusiveUser(user domain.UserID) bool {
	for i := range r.Namespaces.Users {
		if r.Namespaces.Users[i].Exclusive && r.Namespaces.Users[i].Matches(string(user)) {
			return true
		}
	}
	return false
}

// BaseURL returns the appservice's URL without a trailing slash, "" when the
// registration has url: null (the appservice takes no traffic).
func (r *Registration) BaseURL() string {
	if r.URL == nil {
		return ""
	}
	return strings.TrimRight(*r.URL, "/")
}

// Validate checks the required fields and compiles the namespaces.
func (r *Registration) Validate() error {
	switch {
	case r.ID == "":
		return errors.New("registration: id is required")
	case strings.Contains(r.ID, "|"):
		return errors.New("registration: id may not contain '|'")
	case r.ASToken == "":
		return fmt.Errorf("registration %s: as_token is required", r.ID)
	case r.HSToken == "":
		return fmt.Errorf("registration %s: hs_token is required", r.ID)
	case r.SenderLocalpart == "":
		return fmt.Errorf("registration %s: sender_localpart is required", r.ID)
	}
	if u := r.BaseURL(); u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("registration %s: url must be http:// or https://", r.ID)
	}
	for _, list := range [][]Namespace{r.Namespaces.Users, r.Namespaces.Aliases, r.Namespaces.Rooms} {
		for i := range list {
			if err := list[i].compile(); err != nil {
				return fmt.Errorf("registration %s: %w", r.ID, err)
			}
		}
	}
	return nil
}

// ParseRegistration reads and validates a registration document.
func ParseRegistration(data []byte) (*Registration, error) {
	var r Registration
	if err := yaml.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// LoadRegistration reads the registration file at path.
func LoadRegistration(path string) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	r, err := ParseRegistration(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// LoadRegistrations reads several files in order, refusing duplicate ids and
// as_tokens as the appservice spec requires of homeservers.
func LoadRegistrations(paths []string) ([]*Registration, error) {
	var regs []*Registration
	ids, tokens := map[string]bool{}, map[string]bool{}
	for _, p := range paths {
		r, err := LoadRegistration(p)
		if err != nil {
			return nil, err
		}
		if ids[r.ID] {
			return nil, fmt.Errorf("%s: appservice id %q is used by an earlier registration", p, r.ID)
		}
		if tokens[r.ASToken] {
			return nil, fmt.Errorf("%s: as_token is used by an earlier registration", p)
		}
		ids[r.ID], tokens[r.ASToken] = true, true
		regs = append(regs, r)
	}
	return regs, nil
}

// NewRegistration returns profilestore's own registration for a homeserver
// named serverName: random tokens, a non-exclusive users namespace over the
// server's users (so the homeserver sends their member events without
// reserving any name), and no profile lookups.
func NewRegistration(id, url, senderLocalpart, serverName string) (*Registration, error) {
	if !domain.ValidServerName(serverName) {
		return nil, fmt.Errorf("registration: %q is not a server name", serverName)
	}
	as, err := randomToken()
	if err != nil {
		return nil, err
	}
	hs, err := randomToken()
	if err != nil {
		return nil, err
	}
	// "$" ends the pattern because Synapse only anchors the start.
	r := &Registration{
		ID: id, URL: &url, ASToken: as, HSToken: hs, SenderLocalpart: senderLocalpart,
		Namespaces: Namespaces{Users: []Namespace{{Regex: "@.*:" + regexp.QuoteMeta(serverName) + "$", Exclusive: false}}},
	}
	// Profile writes mirrored from the homeserver must not be throttled there.
	rl := false
	r.RateLimited = &rl
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// Marshal renders the registration as YAML for the homeserver.
func (r *Registration) Marshal() ([]byte, error) {
	return yaml.Marshal(r)
}

// WriteFile stores the registration at path with mode 0600 (it holds both
// tokens), atomically.
func (r *Registration) WriteFile(path string) error {
	data, err := r.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

package domain

// Actor is who asks for a command: the authenticated user and whether they
// are a server administrator. The zero Actor is nobody and may write nothing.
type Actor struct {
	User  UserID
	Admin bool
	// server marks ServerActor; only this package can set it.
	server bool
}

// ServerActor acts on the server's own authority or the homeserver's: the
// mirror of the homeserver's events, imports, benchmarks. No rule of users'
// writes applies to it; the decisions' validation still does.
var ServerActor = Actor{server: true}

// WritePolicy is every rule of who may write what: users change their own
// profile, admins anyone's; only admins change memberships and room
// settings; the server may forbid changing some profile keys at all
// (m.profile_fields). Limits bound the values written.
type WritePolicy struct {
	Limits
	// Fields says which profile keys users (admins too) may change.
	Fields ProfileFields
}

// DefaultPolicy has Synapse's limits and lets users change every key.
var DefaultPolicy = WritePolicy{Limits: DefaultLimits}

// ProfileFields is the m.profile_fields capability: which profile keys
// users may change. The zero ProfileFields permits every key.
type ProfileFields struct {
	Disabled   bool     `yaml:"disabled"`
	Allowed    []string `yaml:"allowed"`
	Disallowed []string `yaml:"disallowed"`
}

// Permits reports whether the key may be changed.
func (f ProfileFields) Permits(key string) bool {
	if f.Disabled {
		return false
	}
	if f.Allowed != nil {
		for _, k := range f.Allowed {
			if k == key {
				return true
			}
		}
		return false
	}
	for _, k := range f.Disallowed {
		if k == key {
			return false
		}
	}
	return true
}

// CheckProfileWrite allows a change of key in user's global profile, or of
// user's per-room value of key: by the user or an admin, for a key the
// server lets users change.
func (p WritePolicy) CheckProfileWrite(a Actor, user UserID, key string) error {
	if a.server {
		return nil
	}
	if err := ownOrAdmin(a, user, "You may only change your own profile"); err != nil {
		return err
	}
	if !p.Fields.Permits(key) {
		return Errorf(ErrCodeForbidden, "Changing %s is not permitted on this server", key)
	}
	return nil
}

// CheckRoomWrite allows a membership change or a room setting (history
// visibility, power levels): these mirror what a homeserver decided, so
// only admins (and the server) make them here.
func (p WritePolicy) CheckRoomWrite(a Actor) error {
	if a.server || a.Admin {
		return nil
	}
	return Errorf(ErrCodeForbidden, "Only server administrators may change memberships and room settings here")
}

// CheckHide allows hiding an entry of user's history: by the user or an admin.
func (p WritePolicy) CheckHide(a Actor, user UserID) error {
	if a.server {
		return nil
	}
	return ownOrAdmin(a, user, "Only the user or an admin may hide the user's entries")
}

// CheckErase allows erasing user: by the user (deactivating) or an admin.
func (p WritePolicy) CheckErase(a Actor, user UserID) error {
	if a.server {
		return nil
	}
	return ownOrAdmin(a, user, "Only an admin or the user may erase a profile")
}

// ownOrAdmin is the one rule of users' own data: theirs, or an admin's to change.
func ownOrAdmin(a Actor, user UserID, refusal string) error {
	if a.Admin || (a.User != "" && a.User == user) {
		return nil
	}
	return Errorf(ErrCodeForbidden, "%s", refusal)
}

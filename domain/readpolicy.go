package domain

// Reader is who reads the views: a user, and whether they are a server
// admin.
type Reader struct {
	User UserID
	// Admin sees everything (server administrators).
	Admin bool
}

// RoomFacts are what a room view knows of a room and one reader, now.
type RoomFacts struct {
	// Known is false for a room the view has nothing of.
	Known bool
	// ReaderModerates: the reader's power level is at least the room's kick
	// level.
	ReaderModerates bool
	// ReaderJoined: the reader is a joined member.
	ReaderJoined bool
}

// RoomAccess is what a reader may read of a room.
type RoomAccess int

const (
	// ReadsNothing: the reader may not read the room.
	ReadsNothing RoomAccess = iota
	// ReadsAsMember: the reader reads what history_visibility shows them.
	ReadsAsMember
	// ReadsAll: admins and the room's moderators read every entry, hidden
	// ones included, at any point in time.
	ReadsAll
)

// ReadPolicy is every rule of who may read what of the views; the views
// give it facts (membership, visibility, moderators) and apply what it
// answers. It is the read side's counterpart of WritePolicy.
type ReadPolicy struct{}

// Reads is the read policy profilestore serves.
var Reads ReadPolicy

// Room decides a reader's access to a room: admins and the room's
// moderators read all of it, members joined now read as members, anyone
// else is refused. An unknown room reads as forbidden to everyone but
// admins, so that room ids cannot be probed.
func (ReadPolicy) Room(r Reader, f RoomFacts) (RoomAccess, error) {
	switch {
	case r.Admin && !f.Known:
		return ReadsNothing, Errorf(ErrCodeNotFound, "Unknown room")
	case r.Admin:
		return ReadsAll, nil
	case !f.Known:
		return ReadsNothing, Errorf(ErrCodeForbidden, "You are not a member of this room")
	case f.ReaderModerates:
		return ReadsAll, nil
	case f.ReaderJoined:
		return ReadsAsMember, nil
	}
	return ReadsNothing, Errorf(ErrCodeForbidden, "You are not a member of this room")
}

// EntryVisible applies history_visibility at the time of an entry to a
// member: shared and world_readable show everything to current members;
// invited and joined only what happened while the reader was invited or
// joined (their own membership event counts with the state it set).
// membershipThen is the reader's membership at that time ("" before any).
func (ReadPolicy) EntryVisible(visibility, membershipThen string) bool {
	switch visibility {
	case VisibilityInvited:
		return membershipThen == MembershipJoin || membershipThen == MembershipInvite
	case VisibilityJoined:
		return membershipThen == MembershipJoin
	}
	return true
}

// OwnEntry says whether an entry of a room's history is about the reader:
// a member always sees those, whatever history_visibility hides around
// them (their own kick, ban or unban; an invite they received while the
// room showed only joined members' history). They are the reader's own, and
// homeservers show them too: Dendrite shows a user all of their own
// membership events, Synapse most of them (a leave after a join or invite,
// a ban after a join).
func (ReadPolicy) OwnEntry(r Reader, about UserID) bool {
	return r.User != "" && r.User == about
}

// WholeUserHistory says whether a reader sees every global and per-room
// change of a user: the user themself and admins. Moderators see the
// user's entries in the rooms they moderate (Room decides per room).
func (ReadPolicy) WholeUserHistory(r Reader, user UserID) bool {
	return r.Admin || r.User == user
}

// NameFilter says whether a reader may see one use of a name: hidden is
// whether its entry was hidden, room is where it was used ("" globally).
// A nil NameFilter lets everything through.
type NameFilter func(hidden bool, room RoomID) bool

// Names builds a reader's filter over the names index: admins see every
// use, hidden ones included (marked); everyone else sees the global names
// nobody hid, and the per-room names of the rooms they moderate now
// (moderates answers that).
func (ReadPolicy) Names(r Reader, moderates func(room RoomID, user UserID) bool) NameFilter {
	if r.Admin {
		return nil
	}
	return func(hidden bool, room RoomID) bool {
		switch {
		case hidden:
			return false
		case room == "":
			return true
		}
		return moderates != nil && moderates(room, r.User)
	}
}

package domain

import (
	"sort"
	"strings"
	"unicode"

	"go.mau.fi/util/confusable"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// FoldName is the case-insensitive form of a display name: NFKC, Unicode
// case folding, white space trimmed and runs of it collapsed to one space.
// Two names with the same fold read as the same name ("Alice" and "ALICE").
func FoldName(name string) string {
	s := cases.Fold().String(norm.NFKC.String(name))
	return strings.Join(strings.FieldsFunc(s, unicode.IsSpace), " ")
}

// NameSkeleton is the look-alike key of a display name: the Unicode TR39
// confusable skeleton of its fold, folded again (the skeleton maps to
// prototypes such as "O" for "0", and names here are case-insensitive).
// Names with the same skeleton are confusable ("Аdmin" with a Cyrillic А,
// "admin", "ADMIN"); a skeleton is never shown to anyone.
func NameSkeleton(name string) string {
	return FoldName(confusable.Skeleton(FoldName(name)))
}

// NamedMember is a room member as look-alike detection sees them.
type NamedMember struct {
	User        UserID
	DisplayName string
	// Moderator is true for room moderators and server admins: impersonating
	// them is what look-alike alerts exist for, so they sort first.
	Moderator bool
}

// LookalikeAlert is a group of two or more members whose display names are
// confusable with each other.
type LookalikeAlert struct {
	// Members share one skeleton; moderators first, then by user id.
	Members []NamedMember
	// Identical is true when the names are the same once case-folded, rather
	// than merely confusable.
	Identical bool
	// Moderator is true when a moderator's name is among them.
	Moderator bool
	// Differences[i] compares Members[0]'s name (A) with Members[i]'s (B):
	// the characters that tell them apart. Differences[0] is empty.
	Differences []NameDifference
}

// Lookalikes groups the members whose display names are confusable with
// another member's. Alerts that involve a moderator come first; members
// without a display name are never confusable.
func Lookalikes(members []NamedMember) []LookalikeAlert {
	groups := make(map[string][]NamedMember)
	for _, m := range members {
		if strings.TrimSpace(m.DisplayName) == "" {
			continue
		}
		k := NameSkeleton(m.DisplayName)
		groups[k] = append(groups[k], m)
	}
	var alerts []LookalikeAlert
	for _, g := range groups {
		users := make(map[UserID]bool, len(g))
		for _, m := range g {
			users[m.User] = true
		}
		if len(users) < 2 {
			continue // one user under one name in several entries is no impersonation
		}
		sort.Slice(g, func(i, j int) bool {
			if g[i].Moderator != g[j].Moderator {
				return g[i].Moderator
			}
			return g[i].User < g[j].User
		})
		a := LookalikeAlert{Members: g, Identical: true, Moderator: g[0].Moderator, Differences: make([]NameDifference, len(g))}
		for i, m := range g[1:] {
			d := CompareNames(g[0].DisplayName, m.DisplayName)
			a.Differences[i+1] = d
			a.Identical = a.Identical && d.Identical
		}
		alerts = append(alerts, a)
	}
	sort.Slice(alerts, func(i, j int) bool {
		if alerts[i].Moderator != alerts[j].Moderator {
			return alerts[i].Moderator
		}
		return alerts[i].Members[0].User < alerts[j].Members[0].User
	})
	return alerts
}

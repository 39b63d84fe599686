package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/profilestore/profilestore/domain"
)

// IdentityAsserter is implemented by authenticators that let some tokens act
// as another user, named by the request's user_id query parameter
// (application-service identity assertion). Tokens that may not act for
// others ignore user and authenticate as themselves.
type IdentityAsserter interface {
	AuthenticateAs(ctx context.Context, token string, user string) (Identity, error)
}

// AppserviceToken is an application service as the client API sees it.
type AppserviceToken struct {
	// ID is the registration's id; writes record source "appservice:<ID>".
	ID string
	// Token is the registration's as_token.
	Token string
	// Sender is @<sender_localpart>:<server_name>, whom the appservice acts
	// as without user_id.
	Sender domain.UserID
	// Exclusive reports whether user is in one of the appservice's
	// exclusive users namespaces: an appservice writes only users no human
	// or other appservice can hold.
	Exclusive func(user domain.UserID) bool
}

// AppserviceAuth accepts application services' as_tokens, with identity
// assertion, and hands every other token to the next authenticator.
type AppserviceAuth struct {
	serverName string
	services   []appserviceEntry
	next       Authenticator
}

type appserviceEntry struct {
	AppserviceToken
	sum [sha256.Size]byte
}

// NewAppserviceAuth returns an authenticator for the appservices of the
// homeserver named serverName in front of next (nil: only as_tokens are
// known). It refuses empty and duplicate tokens, as a homeserver must.
func NewAppserviceAuth(serverName string, services []AppserviceToken, next Authenticator) (*AppserviceAuth, error) {
	if !domain.ValidServerName(serverName) {
		return nil, fmt.Errorf("appservice auth: %q is not a server name", serverName)
	}
	a := &AppserviceAuth{serverName: serverName, next: next}
	seen := map[[sha256.Size]byte]bool{}
	for _, s := range services {
		if s.ID == "" || s.Token == "" || s.Exclusive == nil {
			return nil, fmt.Errorf("appservice auth: appservice %q needs an id, an as_token and its namespaces", s.ID)
		}
		if _, err := domain.ParseHistoricalUserID(string(s.Sender)); err != nil || s.Sender.ServerName() != serverName {
			return nil, fmt.Errorf("appservice auth: appservice %q: sender %q is not a user of %s", s.ID, s.Sender, serverName)
		}
		sum := sha256.Sum256([]byte(s.Token))
		if seen[sum] {
			return nil, fmt.Errorf("appservice auth: appservice %q reuses another appservice's as_token", s.ID)
		}
		seen[sum] = true
		a.services = append(a.services, appserviceEntry{AppserviceToken: s, sum: sum})
	}
	return a, nil
}

// Authenticate acts as the appservice's sender for an as_token and defers
// to the next authenticator for any other token.
func (a *AppserviceAuth) Authenticate(ctx context.Context, token string) (Identity, error) {
	if s, ok := a.lookup(token); ok {
		return Identity{User: s.Sender, Appservice: s.ID}, nil
	}
	return a.authenticateNext(ctx, token)
}

// AuthenticateAs lets an as_token act as user when user is the appservice's
// sender or a local user in one of its exclusive users namespaces; any other
// user is 403 M_EXCLUSIVE. Other tokens ignore user: only appservices may
// assert an identity.
func (a *AppserviceAuth) AuthenticateAs(ctx context.Context, token string, user string) (Identity, error) {
	s, ok := a.lookup(token)
	if !ok {
		return a.authenticateNext(ctx, token)
	}
	u, err := domain.ParseHistoricalUserID(user)
	if err != nil {
		return Identity{}, domain.Errorf(domain.ErrCodeInvalidParam, "user_id is not a user id")
	}
	// Namespaces cover local users only; the regexes alone would let
	// "@_bridge_.*" reach another server's users.
	if u != s.Sender && (u.ServerName() != a.serverName || !s.Exclusive(u)) {
		return Identity{}, domain.Errorf(domain.ErrCodeExclusive, "This application service may not act as %s: it is not in one of its exclusive users namespaces", u)
	}
	return Identity{User: u, Appservice: s.ID}, nil
}

// lookup compares the token's hash with every as_token's in constant time
// and without stopping early, so timing tells nothing about which
// appservice, if any, a guess came close to.
func (a *AppserviceAuth) lookup(token string) (AppserviceToken, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.services {
		if subtle.ConstantTimeCompare(sum[:], a.services[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return AppserviceToken{}, false
	}
	return a.services[found].AppserviceToken, true
}

func (a *AppserviceAuth) authenticateNext(ctx context.Context, token string) (Identity, error) {
	if a.next == nil {
		return Identity{}, domain.Errorf(domain.ErrCodeUnknownToken, "Unknown access token")
	}
	return a.next.Authenticate(ctx, token)
}

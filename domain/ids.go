package domain

import (
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxIdentifierBytes bounds user ids, room ids and event ids (Matrix appendix).
const MaxIdentifierBytes = 255

// UserID is a Matrix user id, "@localpart:server_name".
type UserID string

// ParseUserID validates a user id under the current grammar: a non-empty
// localpart of a-z 0-9 . _ = - / + and a valid server name, at most 255
// bytes in all.
func ParseUserID(s string) (UserID, error) {
	if err := checkUserID(s, false); err != nil {
		return "", err
	}
	return UserID(s), nil
}

// ParseHistoricalUserID also accepts the historical localparts that Matrix
// servers must still accept in events from federation (any Unicode code
// point but ':' and NUL, possibly empty; never invalid UTF-8).
func ParseHistoricalUserID(s string) (UserID, error) {
	if err := checkUserID(s, true); err != nil {
		return "", err
	}
	return UserID(s), nil
}

func checkUserID(s string, historical bool) error {
	if len(s) > MaxIdentifierBytes {
		return Errorf(ErrCodeInvalidParam, "User id is longer than %d bytes", MaxIdentifierBytes)
	}
	if !strings.HasPrefix(s, "@") {
		return Errorf(ErrCodeInvalidParam, "Invalid user id: it must start with '@'")
	}
	// Identifiers are compared as bytes: a string that is not UTF-8 (an
	// encoded surrogate, say) would be stored as given and shown as U+FFFD.
	if !utf8.ValidString(s) {
		return Errorf(ErrCodeInvalidParam, "Invalid user id: not valid UTF-8")
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok {
		return Errorf(ErrCodeInvalidParam, "Invalid user id: no server name")
	}
	if !ValidServerName(server) {
		return Errorf(ErrCodeInvalidParam, "Invalid user id: bad server name")
	}
	if historical {
		if strings.ContainsRune(local, 0) {
			return Errorf(ErrCodeInvalidParam, "Invalid user id: NUL in localpart")
		}
		return nil
	}
	if local == "" {
		return Errorf(ErrCodeInvalidParam, "Invalid user id: empty localpart")
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return Errorf(ErrCodeInvalidParam, "Invalid user id: localpart may only contain a-z, 0-9 and ._=-/+")
		}
	}
	return nil
}

// Localpart returns the part between '@' and the first ':'.
func (u UserID) Localpart() string {
	local, _, _ := strings.Cut(strings.TrimPrefix(string(u), "@"), ":")
	return local
}

// ServerName returns the part after the first ':'.
func (u UserID) ServerName() string {
	_, server, _ := strings.Cut(string(u), ":")
	return server
}

func (u UserID) String() string { return string(u) }

// ValidServerName reports whether s is hostname[:port] with hostname an IPv4
// literal, a bracketed IPv6 literal or a DNS name of [A-Za-z0-9.-].
func ValidServerName(s string) bool {
	if s == "" {
		return false
	}
	host := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		if ip := net.ParseIP(s[1:end]); ip == nil || ip.To4() != nil && !strings.Contains(s[1:end], ":") {
			return false
		}
		rest := s[end+1:]
		if rest == "" {
			return true
		}
		if !strings.HasPrefix(rest, ":") {
			return false
		}
		return validPort(rest[1:])
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		if !validPort(s[i+1:]) {
			return false
		}
	}
	if host == "" || len(host) > 255 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

// RoomID is a Matrix room id: "!opaque:domain" up to room version 11, or
// "!" + 43 characters of unpadded URL-safe base64 from room version 12.
type RoomID string

// ParseRoomID validates a room id of any room version.
func ParseRoomID(s string) (RoomID, error) {
	if len(s) > MaxIdentifierBytes {
		return "", Errorf(ErrCodeInvalidParam, "Room id is longer than %d bytes", MaxIdentifierBytes)
	}
	if len(s) < 2 || s[0] != '!' {
		return "", Errorf(ErrCodeInvalidParam, "Invalid room id: it must start with '!'")
	}
	if strings.ContainsRune(s, 0) {
		return "", Errorf(ErrCodeInvalidParam, "Invalid room id: NUL")
	}
	if !utf8.ValidString(s) {
		return "", Errorf(ErrCodeInvalidParam, "Invalid room id: not valid UTF-8")
	}
	local, server, hasServer := strings.Cut(s[1:], ":")
	if hasServer {
		if local == "" || !ValidServerName(server) {
			return "", Errorf(ErrCodeInvalidParam, "Invalid room id")
		}
		return RoomID(s), nil
	}
	// Room version 12: the create event's reference hash.
	if len(local) != 43 {
		return "", Errorf(ErrCodeInvalidParam, "Invalid room id: expected '!localpart:server' or a 43-character room v12 id")
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", Errorf(ErrCodeInvalidParam, "Invalid room id: not URL-safe base64")
		}
	}
	return RoomID(s), nil
}

func (r RoomID) String() string { return string(r) }

// MaxKeyBytes is the longest profile key name (profile.yaml).
const MaxKeyBytes = 255

// Standard profile keys.
const (
	KeyDisplayName = "displayname"
	KeyAvatarURL   = "avatar_url"
	KeyTimeZone    = "m.tz"
)

// ValidateKeyName checks a profile key: length first (M_KEY_TOO_LARGE over
// 255 bytes, as Synapse orders it), then the spec's key pattern
// ^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$.
// The grammar is applied as the Common Namespaced Identifier Grammar allows
// too: '-' inside a segment is accepted, so keys written by CNIG-following
// clients are not refused.
func ValidateKeyName(key string) error {
	if len(key) > MaxKeyBytes {
		return Errorf(ErrCodeKeyTooLarge, "Profile key is longer than %d bytes", MaxKeyBytes)
	}
	if key == "" {
		return Errorf(ErrCodeInvalidParam, "Profile key is empty")
	}
	switch key {
	case KeyDisplayName, KeyAvatarURL, KeyTimeZone:
		return nil
	}
	segments := strings.Split(key, ".")
	if len(segments) < 2 {
		return Errorf(ErrCodeInvalidParam, "Invalid profile key: custom keys are namespaced, like com.example.field")
	}
	for _, seg := range segments {
		if seg == "" || seg[0] < 'a' || seg[0] > 'z' {
			return Errorf(ErrCodeInvalidParam, "Invalid profile key: each dotted segment starts with a-z")
		}
		for i := 1; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return Errorf(ErrCodeInvalidParam, "Invalid profile key: only a-z, 0-9, '_', '-' and '.' are allowed")
			}
		}
	}
	return nil
}

// ValidateMXC checks an mxc://server-name/media-id URI, media id [A-Za-z0-9_-]+.
func ValidateMXC(s string) error {
	rest, ok := strings.CutPrefix(s, "mxc://")
	if !ok {
		return Errorf(ErrCodeInvalidParam, "avatar_url must be an mxc:// URI")
	}
	server, media, ok := strings.Cut(rest, "/")
	if !ok || !ValidServerName(server) || media == "" {
		return Errorf(ErrCodeInvalidParam, "avatar_url must be mxc://<server-name>/<media-id>")
	}
	for i := 0; i < len(media); i++ {
		c := media[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Errorf(ErrCodeInvalidParam, "avatar_url media id may only contain A-Z, a-z, 0-9, '-' and '_'")
		}
	}
	return nil
}

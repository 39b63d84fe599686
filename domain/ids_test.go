package domain

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseUserID(t *testing.T) {
	long := "@" + strings.Repeat("a", 255-len("@:example.com")) + ":example.com"
	cases := []struct {
		in         string
		ok         bool
		historical bool // accepted by ParseHistoricalUserID
	}{
		{"@alice:example.com", true, true},
		{"@a.b_c=d-e/f+g:example.com:8448", true, true},
		{"@alice:[::1]:8448", true, true},
		{"@alice:1.2.3.4", true, true},
		{long, true, true},
		{long[:len(long)-1] + "mx", false, false}, // 256 bytes
		{"alice", false, false},
		{"@alice", false, false},
		{"@:example.com", false, true},
		{"@Alice:example.com", false, true},
		{"@al ice:example.com", false, true},
		{"@alice:", false, false},
		{"@alice:exa_mple.com", false, false},
		{"@alice:example.com:99999x", false, false},
		{"@ali\x00ce:example.com", false, false},
		{"@Ünïcode:example.com", false, true},
		{"@x\xff:example.com", false, false},         // not UTF-8
		{"@x\xed\xa0\x80:example.com", false, false}, // an encoded surrogate
	}
	for _, c := range cases {
		_, err := ParseUserID(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseUserID(%q) error = %v, want ok=%v", c.in, err, c.ok)
		}
		if err != nil && ErrorCode(err) != ErrCodeInvalidParam {
			t.Errorf("ParseUserID(%q) errcode = %q", c.in, ErrorCode(err))
		}
		_, err = ParseHistoricalUserID(c.in)
		if (err == nil) != c.historical {
			t.Errorf("ParseHistoricalUserID(%q) error = %v, want ok=%v", c.in, err, c.historical)
		}
	}
	u := UserID("@alice:example.com:8448")
	if u.Localpart() != "alice" || u.ServerName() != "example.com:8448" {
		t.Errorf("parts of %s: %q %q", u, u.Localpart(), u.ServerName())
	}
}

func TestParseRoomID(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{"!abc:example.com", true},
		{"!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", true},  // room v12
		{"!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z", false},  // 42 chars
		{"!Rqnc+F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", false}, // not URL-safe
		{"abc:example.com", false},
		{"!:example.com", false},
		{"!", false},
		{"!" + strings.Repeat("a", 250) + ":e.com", false},
		{"!r\xc3\x28:example.com", false},     // not UTF-8
		{"!r\xed\xb0\x80:example.com", false}, // an encoded surrogate
		{"!rüm:example.com", true},
	}
	for _, c := range cases {
		if _, err := ParseRoomID(c.in); (err == nil) != c.ok {
			t.Errorf("ParseRoomID(%q) error = %v, want ok=%v", c.in, err, c.ok)
		}
	}
}

func TestValidateKeyName(t *testing.T) {
	key255 := "com." + strings.Repeat("a", 251)
	cases := []struct {
		key  string
		code string
	}{
		{"displayname", ""},
		{"avatar_url", ""},
		{"m.tz", ""},
		{"org.example.job_title", ""},
		{"m.example_field", ""},
		{key255, ""},
		{key255 + "a", ErrCodeKeyTooLarge},
		{strings.Repeat("A", 300), ErrCodeKeyTooLarge}, // length is checked first
		{"", ErrCodeInvalidParam},
		{"JobTitle", ErrCodeInvalidParam},
		{"jobtitle", ErrCodeInvalidParam},
		{"org..x", ErrCodeInvalidParam},
		{"org.Example", ErrCodeInvalidParam},
		{"org.1x", ErrCodeInvalidParam},
		{"org.ex ample", ErrCodeInvalidParam},
	}
	for _, c := range cases {
		err := ValidateKeyName(c.key)
		if ErrorCode(err) != c.code {
			t.Errorf("ValidateKeyName(%.20q…) = %v, want %q", c.key, err, c.code)
		}
	}
}

func TestValidateMXC(t *testing.T) {
	for in, ok := range map[string]bool{
		"mxc://example.com/abc_DEF-123": true,
		"mxc://example.com:8448/x":      true,
		"http://example.com/abc":        false,
		"mxc://example.com/":            false,
		"mxc://example.com":             false,
		"mxc://example.com/a/b":         false,
		"mxc:///abc":                    false,
	} {
		if err := ValidateMXC(in); (err == nil) != ok {
			t.Errorf("ValidateMXC(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}

func FuzzParseUserID(f *testing.F) {
	for _, s := range []string{"@alice:example.com", "@:x", "@a:[::1]:80", "!room:x", "@a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUserID(s)
		if err != nil {
			if ErrorCode(err) == "" {
				t.Fatalf("untyped error for %q: %v", s, err)
			}
			return
		}
		if len(s) > MaxIdentifierBytes || u.Localpart() == "" || !ValidServerName(u.ServerName()) {
			t.Fatalf("accepted invalid user id %q", s)
		}
		if _, err := ParseHistoricalUserID(s); err != nil {
			t.Fatalf("strict id %q refused by the historical grammar: %v", s, err)
		}
	})
}

func FuzzParseHistoricalUserID(f *testing.F) {
	for _, s := range []string{"@alice:example.com", "@Ünïcode:x", "@x\xff:example.com", "@x\xed\xa0\x80:example.com", "@:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseHistoricalUserID(s); err == nil && !utf8.ValidString(s) {
			t.Fatalf("accepted %q, which is not UTF-8", s)
		}
	})
}

func FuzzParseRoomID(f *testing.F) {
	for _, s := range []string{"!a:b", "!Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "!", "!:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoomID(s)
		if err != nil {
			if ErrorCode(err) == "" {
				t.Fatalf("untyped error for %q", s)
			}
			return
		}
		if len(r) > MaxIdentifierBytes || r[0] != '!' || !utf8.ValidString(s) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// keyNamePattern is the spec's key grammar with '-' allowed inside
// segments (see ValidateKeyName), written independently of it.
var keyNamePattern = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+)$`)

func FuzzValidateKeyName(f *testing.F) {
	for _, s := range []string{"displayname", "avatar_url", "m.tz", "com.example.x", "com.example-x.y_z", "com", "Com.example",
		"com..example", "com.example.", ".com", "com.1x", "m.tz.extra", "com.ex\u00e9", "a.b\x00", strings.Repeat("a.", 128)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKeyName(key)
		switch {
		case len(key) > MaxKeyBytes:
			if ErrorCode(err) != ErrCodeKeyTooLarge {
				t.Fatalf("%d-byte key: %v, want %s", len(key), err, ErrCodeKeyTooLarge)
			}
		case keyNamePattern.MatchString(key):
			if err != nil {
				t.Fatalf("valid key %q refused: %v", key, err)
			}
		default:
			if ErrorCode(err) != ErrCodeInvalidParam {
				t.Fatalf("invalid key %q: %v, want %s", key, err, ErrCodeInvalidParam)
			}
		}
	})
}

// mxcPattern is an mxc URI with a media id of [A-Za-z0-9_-]+; the server
// name is checked by ValidServerName, fuzzed through the user id parser.
var mxcPattern = regexp.MustCompile(`^mxc://([^/]*)/[A-Za-z0-9_-]+$`)

func FuzzValidateMXC(f *testing.F) {
	for _, s := range []string{"mxc://example.com/abc_DEF-123", "mxc://example.com:8448/x", "mxc://[::1]/x", "mxc://1.2.3.4:99999/x",
		"mxc://example.com/", "mxc://example.com", "mxc://example.com/a/b", "mxc:///abc", "MXC://example.com/a", "mxc://ex ample.com/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateMXC(s)
		m := mxcPattern.FindStringSubmatch(s)
		want := m != nil && ValidServerName(m[1])
		if want != (err == nil) {
			t.Fatalf("ValidateMXC(%q) = %v, want ok=%v", s, err, want)
		}
		if err != nil && ErrorCode(err) != ErrCodeInvalidParam {
			t.Fatalf("ValidateMXC(%q): untyped error %v", s, err)
		}
	})
}

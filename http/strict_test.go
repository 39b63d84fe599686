package http_test

import (
	"testing"
)

// TestVersionsAdvertiseExtendedProfiles: matrix-js-sdk before v39 enables
// extended profiles only when both MSC4133 flags are advertised.
func TestVersionsAdvertiseExtendedProfiles(t *testing.T) {
	ts := newTestService(t)
	features, _ := ts.do("GET", "/_matrix/client/versions", "", nil).json(t)["unstable_features"].(map[string]any)
	for _, flag := range []string{"uk.tcpip.msc4133", "uk.tcpip.msc4133.stable"} {
		if features[flag] != true {
			t.Errorf("unstable_features lacks %s: %v", flag, features)
		}
	}
}

// TestIdsInPathsMustBeUTF8: user and room ids (and every other path
// variable) with bytes that are not UTF-8 or with an encoded surrogate are
// 400 M_INVALID_PARAM on every route, and a refused write appends nothing.
func TestIdsInPathsMustBeUTF8(t *testing.T) {
	ts := newTestService(t)
	const room = "!r:example.com"
	if r := ts.do("PUT", "/_profilestore/v1/rooms/"+room+"/members/@admin:example.com", ts.tokens[admin], `{"membership":"join"}`); r.Status != 200 {
		t.Fatalf("setup: %d %s", r.Status, r.Body)
	}
	badUsers := []string{"@x%FF:example.com", "@x%ED%A0%80:example.com"}
	badRooms := []string{"!r%C3%28:example.com", "!r%ED%B0%80:example.com"}
	type req struct{ method, path, body string }
	var cases []req
	for _, u := range badUsers {
		cases = append(cases,
			req{"PUT", "/_matrix/client/v3/profile/" + u + "/displayname", `{"displayname":"X"}`},
			req{"DELETE", "/_matrix/client/v3/profile/" + u + "/displayname", ""},
			req{"GET", "/_matrix/client/v3/profile/" + u, ""},
			req{"GET", "/_matrix/client/v3/profile/" + u + "/displayname", ""},
			req{"POST", "/_profilestore/v1/users/" + u + "/erase", `{}`},
			req{"GET", "/_profilestore/v1/users/" + u + "/history", ""},
			req{"POST", "/_profilestore/v1/users/" + u + "/history/1/hide", `{}`},
			req{"PUT", "/_profilestore/v1/rooms/" + room + "/members/" + u, `{"membership":"join"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + room + "/members/" + u + "/profile/displayname", `{"displayname":"X"}`},
		)
	}
	for _, rm := range badRooms {
		cases = append(cases,
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/members/@admin:example.com", `{"membership":"join"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/members/@admin:example.com/profile/displayname", `{"displayname":"X"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/history_visibility", `{"history_visibility":"joined"}`},
			req{"PUT", "/_profilestore/v1/rooms/" + rm + "/power_levels", `{}`},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/members", ""},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/history", ""},
			req{"GET", "/_profilestore/v1/rooms/" + rm + "/lookalikes", ""},
			req{"GET", "/_matrix/client/v3/rooms/" + rm + "/joined_members", ""},
		)
	}
	cases = append(cases, req{"PUT", "/_matrix/client/v3/profile/@admin:example.com/com.example%FF", `{"com.example\u00ff":"X"}`})
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before := ts.head()
			var body any
			if c.body != "" {
				body = c.body
			}
			r := ts.do(c.method, c.path, ts.tokens[admin], body)
			if r.Status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
				t.Errorf("%d %s, want 400 M_INVALID_PARAM", r.Status, r.Body)
			}
			if after := ts.head(); after != before {
				t.Errorf("the log moved from %s to %s", before, after)
			}
		})
	}
}

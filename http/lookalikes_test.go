package http_test

import (
	"testing"
)

func TestRoomLookalikesNowAndAsOf(t *testing.T) {
	ts := newTestService(t)
	ts.ok("PUT", v1+"/power_levels", admin, map[string]any{"users": map[string]int{string(admin): 100}, "kick": 50})
	ts.ok("PUT", v1+"/members/"+string(admin), admin, map[string]string{"membership": "join", "displayname": "Admin"})
	before := ts.ok("PUT", v1+"/members/"+string(alice), admin, map[string]string{"membership": "join", "displayname": "Alice"}).Header.Get("X-Profilestore-Position")
	ts.ok("PUT", v1+"/members/"+string(bob), admin, map[string]string{"membership": "join", "displayname": "\u0410dmin"})

	r := ts.ok("GET", v1+"/lookalikes", admin, nil)
	assertJSONEqual(t, r.Body, `{"room_id":"!room:example.com","position":"`+r.json(t)["position"].(string)+`","alerts":[
		{"identical":false,"relation":"confusable","moderator":true,"members":[
			{"user_id":"@admin:example.com","displayname":"Admin","moderator":true,"scripts":["Latin"],
			 "differs":[{"index":0,"char":"A","code_point":"U+0041","name":"LATIN CAPITAL LETTER A","script":"Latin"}]},
			{"user_id":"@bob:example.com","displayname":"\u0410dmin","moderator":false,"scripts":["Cyrillic","Latin"],
			 "differs":[{"index":0,"char":"\u0410","code_point":"U+0410","name":"CYRILLIC CAPITAL LETTER A","script":"Cyrillic"}]}]}]}`)
	if r := ts.ok("GET", v1+"/lookalikes?at="+before, admin, nil); len(r.json(t)["alerts"].([]any)) != 0 {
		t.Errorf("as of before bob joined: %s", r.Body)
	}
	if r := ts.do("GET", v1+"/lookalikes", "", nil); r.Status != 401 {
		t.Errorf("no token: %d", r.Status)
	}
	if r := ts.do("GET", v1+"/lookalikes?at=nope", ts.tokens[admin], nil); r.Status != 400 {
		t.Errorf("bad position: %d", r.Status)
	}
}

package http_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestConsoleSignInAndRefusal(t *testing.T) {
	ts := newTestService(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	signIn := func(token string) *http.Response {
		resp, err := client.PostForm(ts.URL+"/console/signin", url.Values{"token": {token}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := signIn("wrong"); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Errorf("bad token: %d %v", r.StatusCode, r.Cookies())
	}
	if r := signIn(strings.Repeat("x", 513)); r.StatusCode != 400 {
		t.Errorf("513-byte token: %d", r.StatusCode)
	}
	r := signIn(ts.tokens[alice])
	if r.StatusCode != 303 || len(r.Cookies()) != 1 {
		t.Fatalf("sign in: %d", r.StatusCode)
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console/" {
		t.Errorf("cookie flags: %+v", c)
	}
	get := func(path string, cookie *http.Cookie) (int, string) {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	if status, body := get("/console/", c); status != 403 || !strings.Contains(body, "for server admins and room moderators") {
		t.Errorf("a plain user: %d %s", status, body)
	}
	if status, body := get("/console/", nil); status != 401 || !strings.Contains(body, `<label for="token">`) {
		t.Errorf("signed out: %d", status)
	}
	adminCookie := signIn(ts.tokens[admin]).Cookies()[0]
	if status, body := get("/console/", adminCookie); status != 200 || !strings.Contains(body, "<svg") || strings.Contains(body, "<script") {
		t.Errorf("admin overview: %d", status)
	}
	if status, _ := get("/console/names?q="+strings.Repeat("a", 257), adminCookie); status != 400 {
		t.Errorf("257-character query: %d", status)
	}
	if status, _ := get("/console/users/not-a-user", adminCookie); status != 400 {
		t.Errorf("bad user id: %d", status)
	}
	if status, body := get("/console/assets/style.css", nil); status != 200 || !strings.Contains(body, "body") {
		t.Errorf("assets: %d", status)
	}
}

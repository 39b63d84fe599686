package http_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/profilestore/profilestore/domain"
)

// artifactsDir is where the browser test leaves its screenshots:
// PROFILESTORE_ARTIFACTS, or a temporary directory.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("PROFILESTORE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "profilestore-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsoleInBrowser drives Debian's chromium through the console: sign
// in as an admin, search a name, find the look-alike, open the user; then
// sign in as a room moderator, open the room, read its history, move the
// moment (with the keyboard) and see a member who has since left, and find
// the room's look-alike alert. A missing chromium fails the test: CI
// installs it (.ci/run).
func TestConsoleInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (apt-get install -y chromium); the console's browser test needs it")
	}
	ts := newTestService(t)
	ts.setName(admin, "Admin")
	ts.setName(bob, "\u0410dmin") // Cyrillic А
	ts.setName(alice, "Alice")
	then := ts.moderatedRoom()
	ts.recordSampleAlerts()
	out := artifactsDir(t)

	profileDir, err := os.MkdirTemp("", "profilestore-chromium")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Chromium's helpers may write for a moment after it exits.
		for i := 0; i < 50 && os.RemoveAll(profileDir) != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profileDir),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first run starts the browser and must not carry a timeout (it
	// would stop the browser); later steps are bounded.
	if err := chromedp.Do(browser, chromedp.Navigate(ts.URL+"/console/")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	ctx, cancelT := context.WithTimeout(browser, 20*time.Second)
	defer cancelT()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.FullScreenshot(100)(ctx, tg) // quality 100 gives PNG
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(out, name), png, 0o644)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// signIn fills in the sign-in form with the user's token and sends it.
	signIn := func(user domain.UserID, then ...chromedp.Action[chromedp.Void]) []chromedp.Action[chromedp.Void] {
		return append([]chromedp.Action[chromedp.Void]{
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), ts.tokens[user]),
			chromedp.Submit(chromedp.ID("token")),
		}, then...)
	}
	step("sign in", signIn(admin,
		chromedp.WaitVisible(chromedp.CSS("svg[role=img]")),
		shot("console-overview.png"))...)
	heading := text("h1")
	cookieJS, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	step("search a look-alike",
		chromedp.Navigate(ts.URL+"/console/names"),
		chromedp.WaitVisible(chromedp.ID("q")),
		chromedp.SendKeys(chromedp.ID("q"), "admin"),
		chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.CSS("tr.match-lookalike")),
		shot("console-names-lookalike.png"))
	results := text("table")
	step("open the look-alike's user page",
		chromedp.Click(chromedp.CSS("tr.match-lookalike a")),
		chromedp.WaitVisible(chromedp.ID("names")),
		shot("console-user.png"))
	userPage := text("main")
	step("hide an entry from the user page",
		chromedp.Click(chromedp.CSS(`a[href$="/hide"]`)),
		chromedp.WaitVisible(chromedp.ID("reason")),
		shot("console-hide-confirm.png"),
		chromedp.SendKeys(chromedp.ID("reason"), "impersonation attempt"),
		chromedp.Submit(chromedp.ID("reason")),
		chromedp.WaitVisible(chromedp.CSS(`p.notice`)),
		shot("console-hidden.png"))
	hiddenNotice := text("p.notice")
	hiddenActions := text(`section[aria-labelledby=actions]`)
	step("erase a user",
		chromedp.Navigate(ts.URL+"/console/users/"+string(dave)),
		chromedp.Click(chromedp.CSS(`a.danger`)),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.SendKeys(chromedp.ID("reason"), "asked to be forgotten"),
		chromedp.SendKeys(chromedp.ID("confirm"), string(dave)),
		shot("console-erase-confirm.png"),
		chromedp.Submit(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS(`p.notice`)),
		shot("console-erased.png"))
	erasedPage := text("main")
	step("sign out", chromedp.Click(chromedp.CSS(`form[action="/console/signout"] button`)))
	step("sign in as the room's moderator", signIn(bob,
		chromedp.WaitVisible(chromedp.ID("yours")),
		shot("console-moderator-rooms.png"))...)
	roomsList := text("main")
	step("open the room",
		chromedp.Click(chromedp.CSS(`a[href="/console/rooms/!room:example.com"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[aria-labelledby=history] table`)),
		shot("console-room.png"))
	historyNow := text(`section[aria-labelledby=history] table`)
	membersNow := text(`section[aria-labelledby=members]`)
	alerts := text(`section[aria-labelledby=lookalikes]`)
	// Typing the position and Enter submits the moment form; the new page
	// carries the position as the field's value attribute.
	step("move the moment back to when carol was a member",
		chromedp.SendKeys(chromedp.ID("at"), then+"\r"),
		chromedp.WaitVisible(chromedp.CSS(`input#at[value="`+then+`"]`)),
		shot("console-room-as-of.png"))
	membersThen := text(`section[aria-labelledby=members]`)
	if heading != "Overview" {
		t.Errorf("after sign-in the heading is %q", heading)
	}
	if cookieJS != "" {
		t.Errorf("scripts can read the session cookie: %q", cookieJS)
	}
	if !strings.Contains(results, "confusable") || !strings.Contains(results, "U+0410 CYRILLIC CAPITAL LETTER A, Cyrillic script") || !strings.Contains(results, "@bob:example.com") || !strings.Contains(results, "@admin:example.com") {
		t.Errorf("search results: %q", results)
	}
	if !strings.Contains(userPage, "@bob:example.com") || !strings.Contains(userPage, "\u0410dmin") {
		t.Errorf("user page: %q", userPage)
	}
	if !strings.Contains(hiddenNotice, "is hidden") || !strings.Contains(hiddenActions, "because “impersonation attempt”") {
		t.Errorf("after hiding: %q / %q", hiddenNotice, hiddenActions)
	}
	if !strings.Contains(erasedPage, "profile data is erased") || strings.Contains(erasedPage, "Dave") || !strings.Contains(erasedPage, "because “asked to be forgotten”") {
		t.Errorf("after erasing: %q", erasedPage)
	}
	if !strings.Contains(roomsList, "!room:example.com") || strings.Contains(roomsList, "!other:example.com") {
		t.Errorf("the moderator's rooms: %q", roomsList)
	}
	if !strings.Contains(historyNow, "Alice → Ally") || !strings.Contains(historyNow, "hidden") || !strings.Contains(historyNow, "was Carol Old") {
		t.Errorf("room history: %q", historyNow)
	}
	if strings.Contains(membersNow, "Carol Old") || !strings.Contains(membersNow, "@mallory:example.com") {
		t.Errorf("members now: %q", membersNow)
	}
	if !strings.Contains(membersThen, "as of position "+then) || !strings.Contains(membersThen, "Carol Old") || strings.Contains(membersThen, "@mallory:example.com") {
		t.Errorf("members as of %s: %q", then, membersThen)
	}
	if !strings.Contains(alerts, "Confusable names (they look alike but are made of different characters), one of them a moderator's") ||
		!strings.Contains(alerts, "U+043E CYRILLIC SMALL LETTER O, Cyrillic script") || !strings.Contains(alerts, "B\u043eb") || !strings.Contains(alerts, "@mallory:example.com") {
		t.Errorf("look-alike alerts: %q", alerts)
	}

	step("read the room's alerts as its moderator",
		chromedp.Navigate(ts.URL+"/console/rooms/"+room),
		chromedp.Click(chromedp.CSS(`a[href^="/console/alerts?room="]`)),
		chromedp.WaitVisible(chromedp.CSS(`ol.alert-list`)),
		shot("console-alerts.png"))
	alertList := text("ol.alert-list")
	if !strings.Contains(alertList, "Possible impersonation of a moderator") || !strings.Contains(alertList, "U+043E CYRILLIC SMALL LETTER O, Cyrillic script") ||
		strings.Contains(alertList, "Protected name") {
		t.Errorf("the moderator's alerts: %q", alertList)
	}

	// On a 420 px phone screen every page fits: tables scroll inside
	// their own region, the page itself never scrolls sideways.
	for _, page := range []struct{ path, shot string }{
		{"/console/rooms/" + room, "console-room-420.png"},
		{"/console/users/" + string(mallory), "console-user-420.png"},
		{"/console/names?q=bob", "console-names-420.png"},
		{"/console/rooms", "console-rooms-420.png"},
		{"/console/alerts", "console-alerts-420.png"},
	} {
		step("open "+page.path+" at 420 px",
			chromedp.EmulateViewport(420, 900),
			chromedp.Navigate(ts.URL+page.path),
			chromedp.WaitVisible(chromedp.CSS("h1")),
			shot(page.shot))
		width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if width > 420 {
			t.Errorf("%s is %d px wide on a 420 px screen", page.path, width)
		}
	}
	t.Logf("screenshots in %s", out)
}

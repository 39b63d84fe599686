package http

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/projections"
)

// The console's templates and assets ship inside the binary; pages work
// without JavaScript and load nothing from elsewhere.
//
//go:embed console/*.tmpl console/assets
var consoleFiles embed.FS

// consoleCookie holds the access token the console signed in with. It is
// HttpOnly (scripts cannot read it), SameSite=Strict (other sites cannot
// make the browser send it, which also guards the console's POST forms),
// scoped to /console/, and Secure when the request came over TLS.
const consoleCookie = "profilestore_console"

// maxConsoleToken bounds the token a sign-in form may post.
const maxConsoleToken = 512

var consolePages = parseConsolePages()

func parseConsolePages() map[string]*template.Template {
	funcs := template.FuncMap{"inc": func(i int) int { return i + 1 }}
	layout := template.Must(template.New("layout.tmpl").Funcs(funcs).ParseFS(consoleFiles, "console/layout.tmpl"))
	pages := make(map[string]*template.Template)
	for _, name := range []string{"signin", "refused", "overview", "names", "user", "rooms", "room", "hide", "erase", "alerts"} {
		t := template.Must(layout.Clone())
		pages[name] = template.Must(t.ParseFS(consoleFiles, "console/"+name+".tmpl"))
	}
	return pages
}

// consolePage is what every page template gets.
type consolePage struct {
	Title string
	Who   domain.UserID
	// Admin decides whether the navigation offers the server-wide overview.
	Admin bool
	Error string
	// CSRF is the session's form token, which every POST form carries.
	CSRF string
	// Notice confirms an action just done (role=status).
	Notice string
}

// page is a signed-in reader's page.
func (s *Server) page(id Identity, title string) consolePage {
	return consolePage{Title: title, Who: id.User, Admin: id.Admin}
}

// renderError shows err as a page with its Matrix status (403, 404, 400);
// errors without an errcode are the server's, logged and not shown.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, id Identity, err error) {
	page := s.page(id, "Not available")
	status, ok := statusOf[domain.ErrorCode(err)]
	switch {
	case domain.ErrorCode(err) == "":
		requestLogger(r, s.log).WithError(err).Error("console")
		status, page.Error = http.StatusInternalServerError, "Something went wrong on the server."
	case !ok:
		status, page.Error = http.StatusBadRequest, domain.ErrorMessage(err)
	default:
		page.Error = domain.ErrorMessage(err)
	}
	if status == http.StatusBadRequest {
		page.Title = "Cannot show that"
	}
	s.render(w, r, status, "refused", page, nil)
}

func (s *Server) consoleRoutes() {
	r := s.router
	assets, _ := fs.Sub(consoleFiles, "console/assets")
	r.PathPrefix("/console/assets/").Handler(http.StripPrefix("/console/assets/", http.FileServer(http.FS(assets)))).Methods(http.MethodGet)
	r.Handle("/console", http.RedirectHandler("/console/", http.StatusMovedPermanently)).Methods(http.MethodGet)
	r.HandleFunc("/console/", s.consoleAuthed(s.handleConsoleOverview)).Methods(http.MethodGet)
	r.HandleFunc("/console/signin", s.handleConsoleSignIn).Methods(http.MethodPost)
	r.HandleFunc("/console/signout", s.handleConsoleSignOut).Methods(http.MethodPost)
	r.HandleFunc("/console/names", s.consoleAuthed(s.handleConsoleNames)).Methods(http.MethodGet)
	r.HandleFunc("/console/users/{userId}", s.consoleAuthed(s.handleConsoleUser)).Methods(http.MethodGet)
	s.consoleActionRoutes()
	r.HandleFunc("/console/alerts", s.consoleAuthed(s.handleConsoleAlerts)).Methods(http.MethodGet)
	s.consoleRoomRoutes()
}

// render writes a page; a template error is the server's bug, logged.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, page consolePage, data any) {
	if page.CSRF == "" && page.Who != "" {
		page.CSRF = s.csrfToken(r)
	}
	var buf bytes.Buffer
	if err := consolePages[name].ExecuteTemplate(&buf, name+".tmpl", struct {
		consolePage
		Data any
	}{page, data}); err != nil {
		requestLogger(r, s.log).WithError(err).Error("console: template")
		http.Error(w, "Internal server error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// consoleAuthed signs the request in from the console cookie and admits
// those the view rules let review something: admins, and moderators of at
// least one room. Anyone else gets a clear refusal.
func (s *Server) consoleAuthed(next func(http.ResponseWriter, *http.Request, Identity)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(consoleCookie)
		if err != nil || c.Value == "" || s.cfg.Auth == nil {
			s.render(w, r, http.StatusUnauthorized, "signin", consolePage{Title: "Sign in"}, nil)
			return
		}
		id, err := s.cfg.Auth.Authenticate(r.Context(), c.Value)
		if err != nil {
			clearConsoleCookie(w, r)
			s.render(w, r, http.StatusUnauthorized, "signin", consolePage{Title: "Sign in", Error: "Your session is no longer valid; sign in again."}, nil)
			return
		}
		// Who moderates what is read from the room view: let it catch up
		// with acknowledged writes first (a moderator made a moment ago).
		if err := s.waitForPosition(r); err != nil {
			s.renderError(w, r, id, err)
			return
		}
		if !s.consoleAllowed(id) {
			s.render(w, r, http.StatusForbidden, "refused", consolePage{Title: "Not available", Who: id.User,
				Error: "The console is for server admins and room moderators. Your account is neither, so there is nothing here for you to review."}, nil)
			return
		}
		next(w, r, id)
	}
}

// consoleAllowed admits admins and room moderators.
func (s *Server) consoleAllowed(id Identity) bool {
	return id.Admin || len(s.moderatedRooms(id.User)) > 0
}

func (s *Server) handleConsoleSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	// Another site must not sign the browser in to an account of its
	// choosing (login CSRF); there is no session yet to derive a token from.
	if !sameOrigin(r) {
		s.render(w, r, http.StatusForbidden, "signin", consolePage{Title: "Sign in", Error: crossSiteMessage}, nil)
		return
	}
	if err := r.ParseForm(); err != nil {
		s.render(w, r, http.StatusBadRequest, "signin", consolePage{Title: "Sign in", Error: "The form could not be read."}, nil)
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if token == "" || len(token) > maxConsoleToken || s.cfg.Auth == nil {
		s.render(w, r, http.StatusBadRequest, "signin", consolePage{Title: "Sign in", Error: "Enter an access token."}, nil)
		return
	}
	if _, err := s.cfg.Auth.Authenticate(r.Context(), token); err != nil {
		s.render(w, r, http.StatusUnauthorized, "signin", consolePage{Title: "Sign in", Error: "That access token is not valid."}, nil)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: token, Path: "/console/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int((12 * time.Hour).Seconds())})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (s *Server) handleConsoleSignOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if c, err := r.Cookie(consoleCookie); err != nil || c.Value == "" {
		http.Redirect(w, r, "/console/", http.StatusSeeOther) // nobody to sign out
		return
	}
	if err := s.checkCSRF(r); err != nil {
		s.render(w, r, http.StatusForbidden, "refused", consolePage{Title: "Not signed out", Error: crossSiteMessage}, nil)
		return
	}
	clearConsoleCookie(w, r)
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func clearConsoleCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: "", Path: "/console/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: -1})
}

// handleConsoleOverview shows admins the server's activity; moderators,
// whom the stats API does not serve, go to their rooms.
func (s *Server) handleConsoleOverview(w http.ResponseWriter, r *http.Request, id Identity) {
	if !id.Admin {
		http.Redirect(w, r, "/console/rooms", http.StatusSeeOther)
		return
	}
	const days = 30
	now := time.Now()
	var rep projections.ActivityReport
	if s.cfg.Stats != nil {
		rep = s.cfg.Stats.Report(now.AddDate(0, 0, -(days-1)), now, 10)
	}
	data := map[string]any{"Days": days, "Report": rep, "Chart": activityChart(rep.Days)}
	if s.cfg.Integrity != nil {
		data["Integrity"] = s.cfg.Integrity.Status()
	}
	if s.cfg.Backfill != nil {
		if st := s.cfg.Backfill.Status(); st.Started != nil {
			data["Backfill"] = st
		}
	}
	s.render(w, r, http.StatusOK, "overview", s.page(id, "Overview"), data)
}

func (s *Server) handleConsoleNames(w http.ResponseWriter, r *http.Request, id Identity) {
	q := r.URL.Query().Get("q")
	page := s.page(id, "Names")
	data := map[string]any{"Query": q}
	switch {
	case q == "" || s.cfg.Names == nil:
	case !utf8.ValidString(q) || utf8.RuneCountInString(q) > maxNameQueryChars:
		page.Error = fmt.Sprintf("A name has at most %d characters.", maxNameQueryChars)
		s.render(w, r, http.StatusBadRequest, "names", page, data)
		return
	default:
		results, more := s.cfg.Names.Search(q, maxNameResults, s.nameVisibility(id))
		shown := make([]consoleNameResult, len(results))
		for i, res := range results {
			shown[i] = consoleNameResult{NameMatch: res}
			if res.Match == projections.MatchLookalike {
				// Mark what tells the name from the one searched for.
				shown[i].Differs = domain.CompareNames(q, res.Name).B
				shown[i].Segments = segments(res.Name, shown[i].Differs)
			}
		}
		data["Results"], data["More"] = shown, more
	}
	s.render(w, r, http.StatusOK, "names", page, data)
}

// consoleNameResult is a names search result with, for a look-alike, the
// characters that differ from the name searched for.
type consoleNameResult struct {
	projections.NameMatch
	Differs  []domain.Char
	Segments []nameSegment
}

// handleConsoleUser shows a user's names over time and their history, as
// the view rules let the reader see them: admins everything; moderators
// the user's names and entries in the rooms they moderate, and a refusal
// when they share none with the user (as the user history API answers).
func (s *Server) handleConsoleUser(w http.ResponseWriter, r *http.Request, id Identity) {
	user, err := userVar(r)
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "refused", consolePage{Title: "Not a user id", Who: id.User, Admin: id.Admin, Error: "That is not a Matrix user id."}, nil)
		return
	}
	var hist consoleHistory
	if s.cfg.RoomView != nil {
		hq, err := s.consoleHistoryQuery(r, id)
		var page projections.HistoryPage
		if err == nil {
			page, err = s.cfg.RoomView.UserHistory(user, hq)
		}
		var profiles map[domain.UserID]domain.Profile
		if err == nil {
			profiles, err = s.historyFacts(r.Context(), page.Entries)
		}
		if err != nil {
			s.renderError(w, r, id, err)
			return
		}
		hist = consoleHistoryOf(page, hq, "/console/users/"+url.PathEscape(string(user)), r.URL.Query(), true, profiles)
		s.addActions(&hist, id, profiles)
	}
	var actions []consoleAction
	if s.cfg.Profiles != nil && (id.Admin || s.cfg.RoomView != nil && len(hist.Entries) > 0) {
		// The record of actions is shown to those who may review the user.
		p, _, err := s.cfg.Profiles.Profile(r.Context(), user)
		if err != nil {
			s.renderError(w, r, id, err)
			return
		}
		actions = consoleActions(p)
	}
	pg := s.page(id, string(user))
	switch r.URL.Query().Get("done") {
	case "hidden":
		pg.Notice = "The entry at position " + r.URL.Query().Get("position") + " is hidden. The action is recorded below."
	case "erased":
		pg.Notice = "The user's profile data is erased. The action is recorded below."
	}
	var uses []projections.NameUse
	if s.cfg.Names != nil {
		uses = s.cfg.Names.UserNames(user, s.consoleNameVisibility(id))
		slices.Reverse(uses) // newest first, as every console table
	}
	s.render(w, r, http.StatusOK, "user", pg, map[string]any{"User": user, "Uses": uses, "History": hist, "Actions": actions,
		"EraseLink": eraseLink(s.mayErase(id, user), user)})
}

func eraseLink(may bool, user domain.UserID) string {
	if !may {
		return ""
	}
	return consoleUserPath(user) + "/erase"
}

// consoleNameVisibility narrows names search's visibility for user pages:
// a moderator reviews a user in the rooms they moderate, so the page lists
// only the names used there (the global ones show in names search).
func (s *Server) consoleNameVisibility(id Identity) domain.NameFilter {
	vis := s.nameVisibility(id)
	if vis == nil {
		return nil
	}
	return func(hidden bool, room domain.RoomID) bool { return room != "" && vis(hidden, room) }
}

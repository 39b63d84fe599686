package http

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
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
	layout := template.Must(template.ParseFS(consoleFiles, "console/layout.tmpl"))
	pages := make(map[string]*template.Template)
	for _, name := range []string{"signin", "refused", "overview", "names", "user"} {
		t := template.Must(layout.Clone())
		pages[name] = template.Must(t.ParseFS(consoleFiles, "console/"+name+".tmpl"))
	}
	return pages
}

// consolePage is what every page template gets.
type consolePage struct {
	Title string
	Who   domain.UserID
	Error string
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
}

// render writes a page; a template error is the server's bug, logged.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, page consolePage, data any) {
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
// those the view rules let read something: admins, and room moderators
// once rooms are served. Anyone else gets a clear refusal.
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
		if !s.consoleAllowed(id) {
			s.render(w, r, http.StatusForbidden, "refused", consolePage{Title: "Not available", Who: id.User,
				Error: "The console is for server admins and room moderators. Your account is neither, so there is nothing here for you to review."}, nil)
			return
		}
		next(w, r, id)
	}
}

// consoleAllowed admits admins; room moderators join when rooms are served.
func (s *Server) consoleAllowed(id Identity) bool {
	return id.Admin
}

func (s *Server) handleConsoleSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
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
	clearConsoleCookie(w, r)
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func clearConsoleCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: "", Path: "/console/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: -1})
}

func (s *Server) handleConsoleOverview(w http.ResponseWriter, r *http.Request, id Identity) {
	const days = 30
	now := time.Now()
	var rep projections.ActivityReport
	if s.cfg.Stats != nil {
		rep = s.cfg.Stats.Report(now.AddDate(0, 0, -(days-1)), now, 10)
	}
	s.render(w, r, http.StatusOK, "overview", consolePage{Title: "Overview", Who: id.User}, map[string]any{
		"Days": days, "Report": rep, "Chart": activityChart(rep.Days),
	})
}

func (s *Server) handleConsoleNames(w http.ResponseWriter, r *http.Request, id Identity) {
	q := r.URL.Query().Get("q")
	page := consolePage{Title: "Names", Who: id.User}
	data := map[string]any{"Query": q}
	switch {
	case q == "" || s.cfg.Names == nil:
	case !utf8.ValidString(q) || utf8.RuneCountInString(q) > maxNameQueryChars:
		page.Error = fmt.Sprintf("A name has at most %d characters.", maxNameQueryChars)
		s.render(w, r, http.StatusBadRequest, "names", page, data)
		return
	default:
		results, more := s.cfg.Names.Search(q, maxNameResults, s.nameVisibility(id))
		data["Results"], data["More"] = results, more
	}
	s.render(w, r, http.StatusOK, "names", page, data)
}

func (s *Server) handleConsoleUser(w http.ResponseWriter, r *http.Request, id Identity) {
	raw, err := pathVar(r, "userId")
	var user domain.UserID
	if err == nil {
		user, err = domain.ParseHistoricalUserID(raw)
	}
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "refused", consolePage{Title: "Not a user id", Who: id.User, Error: "That is not a Matrix user id."}, nil)
		return
	}
	var uses []projections.NameUse
	if s.cfg.Names != nil {
		uses = s.cfg.Names.UserNames(user, s.nameVisibility(id))
	}
	s.render(w, r, http.StatusOK, "user", consolePage{Title: string(user), Who: id.User}, map[string]any{"Uses": uses})
}

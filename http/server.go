// Package http serves profilestore over HTTP: the Matrix client profile API,
// the application-service API a homeserver calls, profilestore's own routes,
// the change feed, the moderator console, health and metrics. It only
// translates: handlers parse a request, call the domain (which decides who
// may write what) or a view, and map errors to Matrix errors. It imports
// net/http itself, so callers alias one of the two.
package http

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
	"github.com/profilestore/profilestore/projections"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// Config is what the server needs to serve.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:8318"; ":0" picks a port.
	Addr string

	Store    eventstore.Store
	Profiles *domain.ProfileService
	Eraser   *domain.Eraser
	Runner   *projections.Runner
	// ProfileView is the global profile view: profile reads and the user
	// directory.
	ProfileView *projections.Profiles
	// Names and Stats back names search, look-alike alerts and the stats
	// endpoint; Sealer opens values for the change feed.
	Names  *projections.NameIndex
	Stats  *projections.Activity
	Sealer *domain.Sealer
	// RoomService and RoomView serve the per-room routes (http/rooms.go);
	// without them those routes are not registered.
	RoomService *domain.RoomService
	RoomView    *projections.Rooms
	Auth        Authenticator
	Logger      logrus.FieldLogger

	// DefaultPropagation applies when a request names none (default unchanged).
	DefaultPropagation domain.Propagation
	// RequireAuthForProfile makes profile reads need an access token.
	RequireAuthForProfile bool
	// WriteRate and WriteBurst limit writes per user (per second); 0 disables.
	WriteRate  float64
	WriteBurst int
	// ApplyWait bounds how long a write waits for the local projections and a
	// read waits for X-Profilestore-Min-Position (default 5 s).
	ApplyWait time.Duration
	// MaxBodyBytes caps request bodies (default 256 KiB).
	MaxBodyBytes int64
	// AnalyticsTokenHashes are hex SHA-256 hashes of tokens that may read
	// the change feed and the stats without being an admin.
	AnalyticsTokenHashes []string
	// FeedHeartbeat is how often an idle change feed sends a comment line
	// (default 15 s).
	FeedHeartbeat time.Duration

	// Integrity serves the integrity routes (http/integrity.go): the online
	// check and its trusted keys; SealKey is the public key seals are
	// signed with now, nil when this instance does not seal.
	Integrity *integrity.Checker
	SealKey   ed25519.PublicKey

	// Backfill, if set, serves /_profilestore/v1/backfill (http/backfill.go).
	Backfill Backfill

	// Appservice, if set, is served on /_matrix/app/v1 to the homeserver
	// (http/appservice.go).
	Appservice Appservice
	// ProfileLookup, if set with Appservice, serves MSC4337 to the
	// homeserver: profilestore as a supplier of profiles
	// (http/appservice_profile.go).
	ProfileLookup *ProfileLookup
	// Supplier, if set, adds appservice supplements (MSC4337) to every
	// client profile read.
	Supplier ProfileSupplier
	// Collectors are further Prometheus metrics served at /metrics (the
	// appservice side's), registered once on the server's registry.
	Collectors []prometheus.Collector
}

// ProfileSupplier supplements profile reads (MSC4337). It returns the keys
// to lay over the stored profile of user (only key when key is not ""),
// asked on behalf of requester ("" when unknown), or nil. It answers within
// its own deadline and never fails a read.
type ProfileSupplier interface {
	Supplement(ctx context.Context, user domain.UserID, key string, requester domain.UserID) map[string]json.RawMessage
}

// Server is profilestore's HTTP server.
type Server struct {
	cfg     Config
	log     logrus.FieldLogger
	router  *mux.Router
	handler http.Handler
	server  *http.Server
	ln      net.Listener
	limiter *writeLimiter
	metrics *Metrics
	// closing is closed by Close so that change feeds, which never end on
	// their own, let the server shut down.
	closing   chan struct{}
	closeOnce sync.Once
	// csrfKey keys the console's per-session form tokens (console_actions.go).
	csrfKey []byte
}

type requestInfoKey struct{}
type identityKey struct{}

// NewServer builds the routes; Open starts listening.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.DefaultPropagation == "" {
		cfg.DefaultPropagation = domain.PropagateUnchanged
	}
	if cfg.ApplyWait <= 0 {
		cfg.ApplyWait = 5 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 256 << 10
	}
	if cfg.FeedHeartbeat <= 0 {
		cfg.FeedHeartbeat = 15 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, router: mux.NewRouter().UseEncodedPath(), closing: make(chan struct{})}
	s.limiter = newWriteLimiter(cfg.WriteRate, cfg.WriteBurst)
	s.metrics = NewMetrics(cfg.Store, cfg.Runner)
	s.metrics.Registry.MustRegister(cfg.Collectors...)
	s.metrics.Registry.MustRegister(newCommandCaches(cfg.Profiles, cfg.RoomService))
	s.routes()
	s.router.Use(routeTemplate)
	s.handler = s.middleware(s.router)
	return s
}

// Handler returns the server's handler, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.handler }

// Open starts listening on the configured address.
func (s *Server) Open() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	s.ln = matrixErrorListener{ln}
	s.server = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := s.server.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.WithError(err).Error("http server stopped")
		}
	}()
	return nil
}

// Close stops accepting requests and waits up to 10 s for running ones.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	if s.server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.server.Shutdown(ctx)
}

// Port returns the port listened on.
func (s *Server) Port() int {
	if s.ln == nil {
		return 0
	}
	return s.ln.Addr().(*net.TCPAddr).Port
}

// URL returns the base URL of the server.
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

func (s *Server) routes() {
	r := s.router
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, matrixError{ErrCode: domain.ErrCodeUnrecognized, Error: "Unrecognized request"})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, matrixError{ErrCode: domain.ErrCodeUnrecognized, Error: "Method not allowed on this endpoint"})
	})

	r.HandleFunc("/_matrix/client/versions", s.handleVersions).Methods(http.MethodGet)
	// Full paths on the root router (no subrouters), so a wrong method on a
	// known path is 405, not 404.
	c := prefixed{r, "/_matrix/client/v3"}
	c.HandleFunc("/capabilities", s.authed(s.handleCapabilities)).Methods(http.MethodGet)
	c.HandleFunc("/account/whoami", s.authed(s.handleWhoami)).Methods(http.MethodGet)
	c.HandleFunc("/profile/{userId}", s.handleGetProfile).Methods(http.MethodGet)
	c.HandleFunc("/profile/{userId}/{keyName}", s.handleGetProfileField).Methods(http.MethodGet)
	c.HandleFunc("/profile/{userId}/{keyName}", s.authed(s.limited(s.handlePutProfileField))).Methods(http.MethodPut)
	c.HandleFunc("/profile/{userId}/{keyName}", s.authed(s.limited(s.handleDeleteProfileField))).Methods(http.MethodDelete)
	c.HandleFunc("/user_directory/search", s.authed(s.handleDirectorySearch)).Methods(http.MethodPost)

	ps := prefixed{r, "/_profilestore/v1"}
	ps.HandleFunc("/users/{userId}/erase", s.authed(s.handleErase)).Methods(http.MethodPost)
	ps.HandleFunc("/profiles/query", s.handleProfilesQuery).Methods(http.MethodPost)
	ps.HandleFunc("/events", s.handleFeed).Methods(http.MethodGet)
	if s.cfg.Integrity != nil {
		ps.HandleFunc("/integrity", s.handleIntegrity).Methods(http.MethodGet)
		ps.HandleFunc("/integrity/proof", s.handleIntegrityProof).Methods(http.MethodGet)
		ps.HandleFunc("/integrity/check", s.authed(s.handleIntegrityCheck)).Methods(http.MethodPost)
	}
	if s.cfg.Backfill != nil {
		ps.HandleFunc("/backfill", s.authed(s.handleBackfillStart)).Methods(http.MethodPost)
		ps.HandleFunc("/backfill", s.authed(s.handleBackfillStatus)).Methods(http.MethodGet)
	}
	if s.cfg.Names != nil {
		ps.HandleFunc("/names/search", s.authed(s.handleNamesSearch)).Methods(http.MethodGet)
	}
	if s.cfg.Stats != nil {
		ps.HandleFunc("/stats", s.handleStats).Methods(http.MethodGet)
	}
	if s.cfg.RoomView != nil {
		ps.HandleFunc("/rooms/{roomId}/lookalikes", s.authed(s.handleRoomLookalikes)).Methods(http.MethodGet)
	}
	ps.HandleFunc("/users/{userId}/history/{position}/hide", s.authed(s.limited(s.handleHide))).Methods(http.MethodPost)
	s.roomRoutes()
	s.appserviceRoutes()

	r.HandleFunc("/health", s.handleHealth).Methods(http.MethodGet)
	r.HandleFunc("/ready", s.handleReady).Methods(http.MethodGet)
	r.Handle("/metrics", s.metrics.Handler()).Methods(http.MethodGet)
	s.consoleRoutes()
}

// prefixed registers routes under a path prefix on the root router.
type prefixed struct {
	r      *mux.Router
	prefix string
}

func (p prefixed) HandleFunc(path string, f http.HandlerFunc) *mux.Route {
	return p.r.HandleFunc(p.prefix+path, f)
}

// statusRecorder remembers the status for logs and metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (Server-Sent Events) flush through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the writer to http.ResponseController.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// middleware adds CORS (as the Matrix spec asks of client-facing servers), a
// request id, a structured log line per request (never the token or query),
// and metrics by route template. The router matches the route once: its
// template reaches the log and the metrics through the request's info,
// filled in by routeTemplate once the router has chosen the route.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		// The values are shared, never changed: net/http only reads them.
		h[hdrAllowOrigin] = corsAllowOrigin
		h[hdrAllowMethods] = corsAllowMethods
		h[hdrAllowHeaders] = corsAllowHeaders
		h[hdrExposeHeaders] = corsExposeHeaders
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		reqID := r.Header.Get("X-Request-Id")
		if reqID == "" || len(reqID) > 64 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			reqID = hex.EncodeToString(b[:])
		}
		h[hdrRequestID] = []string{reqID}
		info := &requestInfo{base: s.log, id: reqID, method: r.Method, route: "unmatched"}
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		err := checkQuery(r)
		if err == nil {
			err = checkHeaders(r)
		}
		if err != nil {
			// Refused before routing: the metrics still count it under
			// its route.
			var match mux.RouteMatch
			if s.router.Match(r, &match) && match.Route != nil {
				if t, terr := match.Route.GetPathTemplate(); terr == nil {
					info.route = t
				}
			}
		}
		switch {
		case err != nil && isConsolePath(r.URL.Path):
			// People reading the console get the refusal as a page.
			s.renderError(rec, r, Identity{}, err)
		case err != nil:
			s.writeError(rec, r, err)
		default:
			next.ServeHTTP(rec, r)
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		elapsed := time.Since(start)
		s.metrics.observeRequest(info.route, r.Method, rec.status, elapsed)
		// The line is built only when it will be written: at the default
		// level a successful request logs nothing.
		if rec.status >= 500 || levelEnabled(s.log, logrus.DebugLevel) {
			entry := info.logger().WithFields(logrus.Fields{"status": rec.status, "duration_ms": float64(elapsed.Microseconds()) / 1000})
			if rec.status >= 500 {
				entry.Warn("request")
			} else {
				entry.Debug("request")
			}
		}
	})
}

// Response headers every answer carries, in canonical form.
const (
	hdrAllowOrigin   = "Access-Control-Allow-Origin"
	hdrAllowMethods  = "Access-Control-Allow-Methods"
	hdrAllowHeaders  = "Access-Control-Allow-Headers"
	hdrExposeHeaders = "Access-Control-Expose-Headers"
	hdrRequestID     = "X-Request-Id"
)

var (
	corsAllowOrigin   = []string{"*"}
	corsAllowMethods  = []string{"GET, POST, PUT, DELETE, OPTIONS"}
	corsAllowHeaders  = []string{"X-Requested-With, Content-Type, Authorization, If-Match, X-Profilestore-Min-Position, Last-Event-ID"}
	corsExposeHeaders = []string{"ETag, X-Profilestore-Position, Retry-After"}
)

// requestInfo is what the request's log lines carry, and who made it once
// authed has authenticated it. The logger is built only when something
// logs: most requests never do.
type requestInfo struct {
	base              logrus.FieldLogger
	id, method, route string
	// identity is who authed authenticated, when authenticated is true.
	identity      Identity
	authenticated bool
}

func (i *requestInfo) logger() logrus.FieldLogger {
	return i.base.WithFields(logrus.Fields{"request_id": i.id, "method": i.method, "route": i.route})
}

// routeTemplate is the router's middleware: it runs once the router has
// matched a route, and gives the request's info the route's template.
func routeTemplate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
			if route := mux.CurrentRoute(r); route != nil {
				if t, err := route.GetPathTemplate(); err == nil {
					info.route = t
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// levelEnabled reports whether l writes at level (true when it cannot tell).
func levelEnabled(l logrus.FieldLogger, level logrus.Level) bool {
	switch l := l.(type) {
	case *logrus.Logger:
		return l.IsLevelEnabled(level)
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(level)
	}
	return true
}

// authed requires an access token and puts the identity in the context.
func (s *Server) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
			// The request's info is in the context already: no new
			// context and request for the identity.
			info.identity, info.authenticated = id, true
			next(w, r)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	}
}

func (s *Server) authenticate(r *http.Request) (Identity, error) {
	token, ok := bearerToken(r)
	if !ok {
		return Identity{}, domain.Errorf(domain.ErrCodeMissingToken, "Missing access token")
	}
	if err := tokenConflict(r); err != nil {
		return Identity{}, err
	}
	if s.cfg.Auth == nil {
		return Identity{}, domain.Errorf(domain.ErrCodeUnknownToken, "No access tokens are configured")
	}
	if asserter, ok := s.cfg.Auth.(IdentityAsserter); ok {
		if users, asserted := r.URL.Query()["user_id"]; asserted {
			// Two values could be read differently by a proxy and by us.
			if len(users) != 1 {
				return Identity{}, domain.Errorf(domain.ErrCodeInvalidParam, "Give user_id once")
			}
			return asserter.AuthenticateAs(r.Context(), token, users[0])
		}
	}
	return s.cfg.Auth.Authenticate(r.Context(), token)
}

// identity returns the authenticated identity, if any.
func identity(r *http.Request) (Identity, bool) {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok && info.authenticated {
		return info.identity, true
	}
	id, ok := r.Context().Value(identityKey{}).(Identity)
	return id, ok
}

// limited applies the per-user write rate limit.
func (s *Server) limited(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _ := identity(r)
		if wait, ok := s.limiter.allow(id.User); !ok {
			writeRateLimited(w, wait.Milliseconds())
			return
		}
		next(w, r)
	}
}

// pathVar returns a decoded path variable (the router matches encoded paths
// so that ids containing '/' survive). Every identifier, key and token in a
// path is text: bytes that are not UTF-8 (an encoded surrogate included)
// are refused rather than stored and later shown as U+FFFD.
func pathVar(r *http.Request, name string) (string, error) {
	v, err := url.PathUnescape(mux.Vars(r)[name])
	if err != nil {
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "Malformed %s in the path", name)
	}
	if !utf8.ValidString(v) {
		return "", domain.Errorf(domain.ErrCodeInvalidParam, "%s in the path is not valid UTF-8", name)
	}
	return v, nil
}

// waitForPosition prepares a read of any view: it waits (bounded) for
// X-Profilestore-Min-Position if given, and for the deferred views (rooms,
// history, names) to catch up with every write acknowledged so far.
func (s *Server) waitForPosition(r *http.Request) error {
	if err := s.waitForMinPosition(r); err != nil {
		return err
	}
	if s.cfg.Runner == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyWait)
	defer cancel()
	if err := s.cfg.Runner.Settle(ctx); err != nil {
		return domain.Errorf(domain.ErrCodeNotReady, "This instance's views did not catch up within %s", s.cfg.ApplyWait)
	}
	return nil
}

// waitForMinPosition applies X-Profilestore-Min-Position to a read.
func (s *Server) waitForMinPosition(r *http.Request) error {
	tok := r.Header.Get("X-Profilestore-Min-Position")
	if tok == "" {
		return nil
	}
	pos, err := eventstore.ParsePosition(tok)
	if err != nil {
		return domain.Errorf(domain.ErrCodeInvalidParam, "X-Profilestore-Min-Position is not a position token")
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyWait)
	defer cancel()
	if err := s.cfg.Runner.WaitFor(ctx, pos); err != nil {
		return domain.Errorf(domain.ErrCodeNotReady, "This instance has not reached position %s within %s", tok, s.cfg.ApplyWait)
	}
	return nil
}

// afterWrite waits (bounded) until the local views show the write, so the
// writer reads it back, and reports the position.
func (s *Server) afterWrite(w http.ResponseWriter, r *http.Request, res domain.WriteResult) {
	s.answerWrite(w, r, res, s.cfg.Runner.WaitForAcknowledged)
}

// afterWriteSettled is afterWrite waiting for every view, deferred ones
// included, and the purge of the view store after an erasure: erasure is
// not done until no view and no file of the view store holds the values.
func (s *Server) afterWriteSettled(w http.ResponseWriter, r *http.Request, res domain.WriteResult) {
	s.answerWrite(w, r, res, s.cfg.Runner.WaitFor)
}

func (s *Server) answerWrite(w http.ResponseWriter, r *http.Request, res domain.WriteResult, wait func(context.Context, eventstore.Position) error) {
	w.Header().Set("X-Profilestore-Position", res.Position.String())
	w.Header().Set("ETag", etag(res.Revision, res.Exists))
	if res.Position.IsStart() || s.cfg.Runner == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyWait)
	defer cancel()
	if err := wait(ctx, res.Position); err != nil {
		// The write is durable; only its visibility here is late.
		requestLogger(r, s.log).WithField("position", res.Position.String()).Warn("write not yet applied to local views")
	}
}

// etag renders a profile stream revision as an entity tag.
func etag(revision uint64, exists bool) string {
	if !exists {
		return `"r-"`
	}
	return `"r` + strconv.FormatUint(revision, 10) + `"`
}

// ifMatch reads If-Match into a precondition (nil when absent).
func ifMatch(r *http.Request) (domain.Precondition, error) {
	h := r.Header.Get("If-Match")
	if h == "" || h == "*" {
		return nil, nil
	}
	if h == `"r-"` {
		e := eventstore.NoStream
		return &e, nil
	}
	if len(h) > 3 && h[0] == '"' && h[1] == 'r' && h[len(h)-1] == '"' {
		if rev, err := strconv.ParseUint(h[2:len(h)-1], 10, 64); err == nil {
			e := eventstore.Exact(rev)
			return &e, nil
		}
	}
	return nil, domain.Errorf(domain.ErrCodeConflict, "If-Match does not name a version of this profile")
}

package http

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// Limits of the change feed's query.
const (
	maxFeedTypes     = 16
	maxFeedParamLen  = 1024
	feedRetryMillis  = 2000
	feedCatchUpWait  = 5 * time.Second
	feedChannelDepth = 256
)

// feedReader is who reads the feed: an admin sees hidden entries, an
// analytics token sees them as hidden.
type feedReader struct {
	admin bool
}

// feedLine is one event of the change feed (docs/EVENTS.md, "Change feed"):
// the export's form, values opened, with two flags.
type feedLine struct {
	eventstore.JSONEvent
	Erased bool `json:"erased,omitempty"`
	Hidden bool `json:"hidden,omitempty"`
}

// feedAuth admits admins and holders of a configured analytics token.
func (s *Server) feedAuth(r *http.Request) (feedReader, error) {
	token, ok := bearerToken(r)
	if !ok {
		return feedReader{}, domain.Errorf(domain.ErrCodeMissingToken, "Missing access token")
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	for _, h := range s.cfg.AnalyticsTokenHashes {
		want, err := hex.DecodeString(h)
		if err == nil && len(want) == sha256.Size {
			match |= subtle.ConstantTimeCompare(sum[:], want)
		}
	}
	if match == 1 {
		return feedReader{}, nil
	}
	id, err := s.authenticate(r)
	if err != nil {
		return feedReader{}, err
	}
	if !id.Admin {
		return feedReader{}, domain.Errorf(domain.ErrCodeForbidden, "Only admins and analytics tokens may read this")
	}
	return feedReader{admin: true}, nil
}

// feedQuery is a parsed change-feed request.
type feedQuery struct {
	after  eventstore.Position
	filter eventstore.Filter
	types  map[string]bool
}

func parseFeedQuery(r *http.Request) (feedQuery, error) {
	q := feedQuery{}
	from := r.URL.Query().Get("from")
	// A reconnecting EventSource sends the last id it saw; it wins over from.
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		from = last
	}
	if from != "" {
		p, err := eventstore.ParsePosition(from)
		if err != nil {
			return q, domain.Errorf(domain.ErrCodeInvalidParam, "from / Last-Event-ID is not a position token")
		}
		q.after = p
	}
	for _, name := range []string{"category", "type"} {
		if len(r.URL.Query().Get(name)) > maxFeedParamLen {
			return q, domain.Errorf(domain.ErrCodeInvalidParam, "%s is longer than %d bytes", name, maxFeedParamLen)
		}
	}
	if c := r.URL.Query().Get("category"); c != "" {
		for _, cat := range strings.Split(c, ",") {
			switch cat {
			case "profile":
				q.filter.StreamPrefixes = append(q.filter.StreamPrefixes, domain.ProfileCategory)
			case "room":
				q.filter.StreamPrefixes = append(q.filter.StreamPrefixes, domain.RoomCategory)
			case "log":
				// Seals (log.sealed), so witnesses keep copies.
				q.filter.StreamPrefixes = append(q.filter.StreamPrefixes, integrity.SealStream)
			default:
				return q, domain.Errorf(domain.ErrCodeInvalidParam, "category must be profile, room or log")
			}
		}
	} else {
		q.filter.StreamPrefixes = []string{domain.ProfileCategory, domain.RoomCategory, integrity.SealStream}
	}
	if t := r.URL.Query().Get("type"); t != "" {
		parts := strings.Split(t, ",")
		if len(parts) > maxFeedTypes {
			return q, domain.Errorf(domain.ErrCodeInvalidParam, "at most %d event types", maxFeedTypes)
		}
		q.types = make(map[string]bool, len(parts))
		for _, p := range parts {
			// An unknown type, or one outside the chosen categories, would
			// match nothing and leave the feed idle for ever.
			if !slices.Contains(domain.EventTypes(), p) {
				return q, domain.Errorf(domain.ErrCodeInvalidParam, "type %q is not an event type (docs/EVENTS.md lists them)", p)
			}
			if !q.filter.Match(feedCategoryOf(p)) {
				return q, domain.Errorf(domain.ErrCodeInvalidParam, "type %s is not in the chosen categories", p)
			}
			q.types[p] = true
		}
	}
	return q, nil
}

// feedCategoryOf is the stream category an event type is written to:
// profile.* types to profile streams, room.* types to room streams.
func feedCategoryOf(eventType string) string {
	if strings.HasPrefix(eventType, "profile.") {
		return domain.ProfileCategory
	}
	return domain.RoomCategory
}

// handleFeed streams the log as Server-Sent Events: the stored events after
// the position, then live ones, each with its position as the event id, and
// a comment line when idle. Resuming with Last-Event-ID continues after that
// event, with no gap and no duplicate, on any instance over the same log.
func (s *Server) handleFeed(w http.ResponseWriter, r *http.Request) {
	reader, err := s.feedAuth(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q, err := parseFeedQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.Sealer == nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "The change feed is not enabled on this server"))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	// Hidden marks come from the names view: let it reach the head first, so
	// entries hidden before the request was made read as hidden.
	if s.cfg.Runner != nil {
		if head, err := s.cfg.Store.Head(ctx); err == nil {
			wctx, wcancel := context.WithTimeout(ctx, feedCatchUpWait)
			_ = s.cfg.Runner.WaitFor(wctx, head)
			wcancel()
		}
	}
	sub, err := s.cfg.Store.Subscribe(ctx, q.after, q.filter)
	if err != nil {
		requestLogger(r, s.log).WithError(err).Warn("change feed: subscribe failed")
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotReady, "The event log cannot be read right now"))
		return
	}
	defer sub.Close()

	events := make(chan eventstore.RecordedEvent, feedChannelDepth)
	failed := make(chan error, 1)
	go func() {
		defer close(events)
		for {
			rec, err := sub.Next(ctx)
			if err != nil {
				failed <- err
				return
			}
			select {
			case events <- rec:
			case <-ctx.Done():
				return
			}
		}
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx must not buffer the stream
	w.WriteHeader(http.StatusOK)
	out := bufio.NewWriterSize(w, 64<<10)
	flush := func() bool {
		if out.Flush() != nil {
			return false
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return true
	}
	out.WriteString("retry: " + strconv.Itoa(feedRetryMillis) + "\n\n")
	if !flush() {
		return
	}
	heartbeat := time.NewTicker(s.cfg.FeedHeartbeat)
	defer heartbeat.Stop()
	log := requestLogger(r, s.log)
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			out.WriteString(": heartbeat\n\n")
			if !flush() {
				return
			}
		case rec, ok := <-events:
			if !ok {
				if err := <-failed; ctx.Err() == nil {
					log.WithError(err).Warn("change feed: subscription failed")
				}
				return
			}
			if q.types != nil && !q.types[rec.Type] {
				continue
			}
			line, err := s.feedLine(ctx, reader, rec)
			if err != nil {
				log.WithError(err).WithField("position", rec.Position.String()).Warn("change feed: skipping an event that cannot be read")
				continue
			}
			data, _ := json.Marshal(line)
			out.WriteString("id: " + line.Position + "\nevent: " + rec.Type + "\ndata: ")
			out.Write(data)
			out.WriteString("\n\n")
			// Flush when caught up; during catch-up the buffer fills and
			// flushes itself, which is what makes replay fast.
			if len(events) == 0 && !flush() {
				return
			}
			heartbeat.Reset(s.cfg.FeedHeartbeat)
		}
	}
}

// feedLine renders one event for a reader: values opened, erased ones left
// out and flagged, hidden entries stripped for everyone but admins.
func (s *Server) feedLine(ctx context.Context, reader feedReader, rec eventstore.RecordedEvent) (feedLine, error) {
	opened, err := domain.OpenPayload(ctx, s.cfg.Sealer, rec)
	if err != nil {
		return feedLine{}, err
	}
	line := feedLine{JSONEvent: eventstore.NewJSONEvent(rec), Erased: opened.Erased}
	line.Data = opened.Data
	if s.cfg.Names != nil && opened.Subject != "" && s.cfg.Names.IsHidden(opened.Subject, rec.Position) {
		line.Hidden = true
		if !reader.admin {
			line.Data = domain.WithoutPersonalValues(line.Data)
		}
	}
	return line, nil
}

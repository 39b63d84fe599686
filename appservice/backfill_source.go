package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"golang.org/x/time/rate"
)

// HistorySource is where a backfill reads a homeserver's history from.
type HistorySource interface {
	// Name says which source it is, for reports ("client-server API", ...).
	Name() string
	// Rooms calls room for each room to backfill with the user to read it
	// as ("" when the source needs none), and skip for each user whose
	// rooms it could not list, with the reason; an error stops the listing.
	Rooms(ctx context.Context, room func(domain.RoomID, domain.UserID) error, skip func(domain.UserID, string)) error
	// Messages returns the next page of the room's member, history
	// visibility, power level and create events, oldest first, from token
	// from ("" is the room's start), and the token of the page after it
	// ("" when this was the last).
	Messages(ctx context.Context, room domain.RoomID, reader domain.UserID, from string, limit int) ([]HistoryEvent, string, error)
}

// HistoryEvent is a timeline event in the client format.
type HistoryEvent = clientEvent

// historyFilter asks for the events a backfill reads (a RoomEventFilter).
const historyFilter = `{"types":["m.room.create","m.room.member","m.room.history_visibility","m.room.power_levels"],"lazy_load_members":false}`

// HomeserverError is an answer of the homeserver that will not change by
// asking again: the room (or user) cannot be read this way.
type HomeserverError struct {
	Status  int
	Errcode string
	Message string
}

func (e *HomeserverError) Error() string {
	switch {
	case e.Errcode != "":
		return fmt.Sprintf("homeserver answered %d %s: %s", e.Status, e.Errcode, e.Message)
	case e.Message != "":
		return fmt.Sprintf("homeserver answered %d with %s", e.Status, e.Message)
	}
	return fmt.Sprintf("homeserver answered %d", e.Status)
}

// HomeserverClient calls a homeserver with one token, at most at the
// configured rate, waiting as long as a 429's retry_after_ms (or
// Retry-After) says and retrying transient failures with backoff.
type HomeserverClient struct {
	base    string
	token   string
	http    *http.Client
	limiter *rate.Limiter
	// Retries bounds the attempts after a transient failure (network,
	// 5xx), the first Backoff after it and doubling up to 30 s; 429s are
	// waited out up to RateLimitWaits times.
	Retries, RateLimitWaits int
	Backoff                 time.Duration
	// MaxBody bounds one answer (default 32 MiB): a bigger one fails.
	MaxBody int64
	// OnRateLimited, if set, is told of each 429 and the wait.
	OnRateLimited func(wait time.Duration)
}

// maxHistoryBody bounds one answer of the homeserver.
const maxHistoryBody = 32 << 20

// NewHomeserverClient calls base with token at most perSecond requests a
// second (≤ 0: no limit).
func NewHomeserverClient(base, token string, perSecond float64, client *http.Client) *HomeserverClient {
	if client == nil {
		client = &http.Client{Timeout: time.Minute}
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), 1)
	}
	return &HomeserverClient{base: strings.TrimRight(base, "/"), token: token, http: client, limiter: lim,
		Retries: 5, RateLimitWaits: 100, Backoff: 500 * time.Millisecond, MaxBody: maxHistoryBody}
}

// get reads path?query as JSON into out.
func (c *HomeserverClient) get(ctx context.Context, path string, query url.Values, out any) error {
	backoff := c.Backoff
	transient, waits := 0, 0
	for {
		if err := c.limiter.Wait(ctx); err != nil {
			return err
		}
		status, body, hdr, err := c.do(ctx, path, query)
		var final *HomeserverError
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &final):
			return err // asking again would get the same
		case err != nil || status >= 500:
			if transient++; transient > c.Retries {
				if err == nil {
					err = &HomeserverError{Status: status}
				}
				return fmt.Errorf("after %d attempts: %w", transient, err)
			}
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(backoff*2, 30*time.Second)
		case status == http.StatusTooManyRequests:
			if waits++; waits > c.RateLimitWaits {
				return fmt.Errorf("still rate limited after %d waits: %w", waits-1, &HomeserverError{Status: status, Errcode: "M_LIMIT_EXCEEDED"})
			}
			wait := retryAfter(body, hdr)
			if c.OnRateLimited != nil {
				c.OnRateLimited(wait)
			}
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		case status != http.StatusOK:
			var e struct {
				Errcode string `json:"errcode"`
				Error   string `json:"error"`
			}
			_ = json.Unmarshal(body, &e)
			return &HomeserverError{Status: status, Errcode: e.Errcode, Message: e.Error}
		default:
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("homeserver answered %s with invalid JSON: %w", path, err)
			}
			return nil
		}
	}
}

func (c *HomeserverClient) do(ctx context.Context, path string, query url.Values) (int, []byte, http.Header, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.MaxBody+1))
	if err != nil {
		return 0, nil, nil, err
	}
	if int64(len(body)) > c.MaxBody {
		return 0, nil, nil, &HomeserverError{Status: resp.StatusCode, Message: fmt.Sprintf("an answer over %d bytes", c.MaxBody)}
	}
	return resp.StatusCode, body, resp.Header, nil
}

// retryAfter is how long a 429 asks to wait: retry_after_ms in the body
// (Matrix), else Retry-After in seconds (HTTP), else a second; at most 10
// minutes, so a broken answer cannot stall a backfill for ever.
func retryAfter(body []byte, hdr http.Header) time.Duration {
	var e struct {
		RetryAfterMS *int64 `json:"retry_after_ms"`
	}
	wait := time.Second
	if json.Unmarshal(body, &e) == nil && e.RetryAfterMS != nil && *e.RetryAfterMS >= 0 {
		wait = time.Duration(*e.RetryAfterMS) * time.Millisecond
	} else if s, err := strconv.Atoi(strings.TrimSpace(hdr.Get("Retry-After"))); err == nil && s >= 0 {
		wait = time.Duration(s) * time.Second
	}
	return min(wait, 10*time.Minute)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ClientHistory reads history through the client-server API as the
// appservice: for each local user, their joined rooms, then each room's
// timeline from its start, acting as a member of it (user_id=). It works
// on every homeserver, within what that member may see.
type ClientHistory struct {
	Client *HomeserverClient
	// Users are local users whose rooms are backfilled.
	Users []domain.UserID
	// Known, if set, pages through more users (those profilestore knows):
	// up to limit after the given one, in order. Local keeps the users the
	// appservice may act as.
	Known func(after domain.UserID, limit int) ([]domain.UserID, error)
	Local func(domain.UserID) bool
}

// Name implements HistorySource.
func (s *ClientHistory) Name() string { return "client-server API" }

// Rooms implements HistorySource: each joined room, read as the first of
// Users joined to it.
func (s *ClientHistory) Rooms(ctx context.Context, room func(domain.RoomID, domain.UserID) error, skip func(domain.UserID, string)) error {
	if err := s.roomsOf(ctx, s.Users, room, skip); err != nil {
		return err
	}
	for after := domain.UserID(""); s.Known != nil; {
		users, err := s.Known(after, 256)
		if err != nil || len(users) == 0 {
			return err
		}
		after = users[len(users)-1]
		local := users[:0]
		for _, u := range users {
			if s.Local == nil || s.Local(u) {
				local = append(local, u)
			}
		}
		if err := s.roomsOf(ctx, local, room, skip); err != nil {
			return err
		}
	}
	return nil
}

func (s *ClientHistory) roomsOf(ctx context.Context, users []domain.UserID, room func(domain.RoomID, domain.UserID) error, skip func(domain.UserID, string)) error {
	for _, u := range users {
		var body struct {
			JoinedRooms []string `json:"joined_rooms"`
		}
		err := s.Client.get(ctx, "/_matrix/client/v3/joined_rooms", url.Values{"user_id": {string(u)}}, &body)
		var he *HomeserverError
		switch {
		case errors.As(err, &he):
			skip(u, fmt.Sprintf("cannot list their rooms as them: %v", err))
			continue
		case err != nil:
			return err
		}
		skip(u, "")
		for _, r := range body.JoinedRooms {
			id, err := domain.ParseRoomID(r)
			if err != nil {
				continue
			}
			if err := room(id, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// Messages implements HistorySource with GET /rooms/{roomId}/messages,
// dir=f, the member-state filter, as reader.
func (s *ClientHistory) Messages(ctx context.Context, room domain.RoomID, reader domain.UserID, from string, limit int) ([]HistoryEvent, string, error) {
	q := url.Values{"dir": {"f"}, "limit": {strconv.Itoa(limit)}, "filter": {historyFilter}, "user_id": {string(reader)}}
	if from != "" {
		q.Set("from", from)
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/messages"
	events, next, err := messagesPage(ctx, s.Client, path, q, from)
	var he *HomeserverError
	if from == "" && errors.As(err, &he) && he.Status == http.StatusBadRequest {
		// Dendrite (v0.15.2) refuses dir=f without from ("malformed sync
		// token": its token for the room's start prints as ""); its
		// topology token before the first event is t0_0.
		q.Set("from", dendriteStart)
		return messagesPage(ctx, s.Client, path, q, dendriteStart)
	}
	return events, next, err
}

// dendriteStart is Dendrite's topology token before a room's first event.
const dendriteStart = "t0_0"

// messagesPage reads a /messages answer ({chunk, start, end}).
func messagesPage(ctx context.Context, c *HomeserverClient, path string, q url.Values, from string) ([]HistoryEvent, string, error) {
	var body struct {
		Chunk []json.RawMessage `json:"chunk"`
		End   string            `json:"end"`
	}
	if err := c.get(ctx, path, q, &body); err != nil {
		return nil, "", err
	}
	events := make([]HistoryEvent, 0, len(body.Chunk))
	for _, raw := range body.Chunk {
		var ev HistoryEvent
		if json.Unmarshal(raw, &ev) != nil || ev.EventID == "" {
			continue // counted by the caller as nothing read
		}
		events = append(events, ev)
	}
	next := body.End
	// The end of the timeline (or of what the reader may see): no end
	// token (Dendrite sends "" after the last event), or one that does not
	// move on. An empty page with another token is not the end (Synapse
	// filters after fetching): paging goes on.
	if next == from {
		next = ""
	}
	return events, next, nil
}

// SynapseAdminHistory reads history through Synapse's admin API with a
// server admin's access token: every room the server knows (GET
// /_synapse/admin/v1/rooms), and each room's timeline regardless of
// membership and history visibility (GET /_synapse/admin/v1/rooms/{roomId}/messages,
// which takes /messages' parameters).
type SynapseAdminHistory struct {
	Client *HomeserverClient
}

// Name implements HistorySource.
func (s *SynapseAdminHistory) Name() string { return "Synapse admin API" }

// Rooms implements HistorySource: the room list, page by page (next_batch,
// which older releases call next_token, until neither is present).
func (s *SynapseAdminHistory) Rooms(ctx context.Context, room func(domain.RoomID, domain.UserID) error, _ func(domain.UserID, string)) error {
	from := ""
	for range 1 << 20 {
		q := url.Values{"limit": {"500"}, "order_by": {"name"}}
		if from != "" {
			q.Set("from", from)
		}
		var body struct {
			Rooms []struct {
				RoomID string `json:"room_id"`
			} `json:"rooms"`
			NextBatch json.RawMessage `json:"next_batch"`
			NextToken json.RawMessage `json:"next_token"`
		}
		if err := s.Client.get(ctx, "/_synapse/admin/v1/rooms", q, &body); err != nil {
			return fmt.Errorf("the Synapse admin API's room list: %w", err)
		}
		for _, r := range body.Rooms {
			id, err := domain.ParseRoomID(r.RoomID)
			if err != nil {
				continue
			}
			if err := room(id, ""); err != nil {
				return err
			}
		}
		next := batchToken(body.NextBatch)
		if next == "" {
			next = batchToken(body.NextToken)
		}
		if next == "" || next == from || len(body.Rooms) == 0 {
			return nil
		}
		from = next
	}
	return errors.New("the Synapse admin API's room list does not end")
}

// batchToken reads a room list token: a number (as Synapse sends it) or a string.
func batchToken(raw json.RawMessage) string {
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// Messages implements HistorySource.
func (s *SynapseAdminHistory) Messages(ctx context.Context, room domain.RoomID, _ domain.UserID, from string, limit int) ([]HistoryEvent, string, error) {
	q := url.Values{"dir": {"f"}, "limit": {strconv.Itoa(limit)}, "filter": {historyFilter}}
	if from != "" {
		q.Set("from", from)
	}
	return messagesPage(ctx, s.Client, "/_synapse/admin/v1/rooms/"+url.PathEscape(string(room))+"/messages", q, from)
}

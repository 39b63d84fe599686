package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
)

// Sink delivers alerts to one destination. Deliver must be safe to repeat
// for the same alert: the outbox retries until it succeeds, and a crash
// between a delivery and its checkpoint repeats the last one, so sinks
// carry the alert's id for the receiver to recognise it.
type Sink interface {
	// Name identifies the sink in the delivery checkpoint and in metrics.
	Name() string
	Deliver(ctx context.Context, a Recorded) error
}

// MatrixSink posts alerts as m.notice messages to moderation rooms, as the
// appservice's bot user (Authorization: the as_token, ?user_id= the bot).
type MatrixSink struct {
	// HomeserverURL is the client-server API base, e.g. http://localhost:8008.
	HomeserverURL string
	ASToken       string
	Bot           domain.UserID
	// Room receives every alert; RoomFor, if it names a room for the
	// alert's room, receives that room's alerts instead.
	Room    domain.RoomID
	RoomFor map[domain.RoomID]domain.RoomID
	Notice  Notice
	Client  *http.Client
}

// Name is "matrix".
func (m *MatrixSink) Name() string { return "matrix" }

func (m *MatrixSink) target(a Recorded) domain.RoomID {
	if r, ok := m.RoomFor[a.Room]; ok && a.Room != "" {
		return r
	}
	return m.Room
}

// Deliver sends the notice with a transaction id derived from the alert's
// id: the homeserver answers a repeat with the event it already sent, so a
// retry never posts the notice twice. If the bot is not in the room yet
// (403), it joins and sends again.
func (m *MatrixSink) Deliver(ctx context.Context, a Recorded) error {
	room := m.target(a)
	if room == "" {
		return nil // nowhere configured for this alert
	}
	plain, formatted := m.Notice.Text(a)
	body, _ := json.Marshal(map[string]string{"msgtype": "m.notice", "body": plain, "format": "org.matrix.custom.html", "formatted_body": formatted})
	send := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/send/m.room.message/" + url.PathEscape("ps-alert-"+a.ID)
	status, err := m.call(ctx, http.MethodPut, send, body)
	if err == nil && status == http.StatusForbidden {
		if status, err = m.call(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(string(room)), []byte("{}")); err == nil && status == http.StatusOK {
			status, err = m.call(ctx, http.MethodPut, send, body)
		}
	}
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("homeserver answered %d", status)
	}
	return nil
}

func (m *MatrixSink) call(ctx context.Context, method, path string, body []byte) (int, error) {
	u := strings.TrimRight(m.HomeserverURL, "/") + path + "?user_id=" + url.QueryEscape(string(m.Bot))
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+m.ASToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client(m.Client).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

func client(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// WebhookSink posts alerts as JSON to a URL, signed with HMAC-SHA-256.
type WebhookSink struct {
	URL string
	// Secret keys the signature; receivers hold the same secret.
	Secret string
	Notice Notice
	Client *http.Client
	// Now is the clock for the signature's timestamp (tests).
	Now func() time.Time
}

// Name is "webhook:" and the URL's host and path (never its query, which
// may hold a token).
func (h *WebhookSink) Name() string {
	u, err := url.Parse(h.URL)
	if err != nil {
		return "webhook"
	}
	return "webhook:" + u.Host + u.Path
}

// Signature is the X-Profilestore-Signature value of a body sent at ts:
// "sha256=" and the hex HMAC-SHA-256, keyed with the secret, of
// "<ts>.<body>" (the timestamp is signed so an old delivery cannot be
// replayed as new).
func Signature(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Deliver posts the alert; any 2xx answer is a delivery.
func (h *WebhookSink) Deliver(ctx context.Context, a Recorded) error {
	body, err := json.Marshal(h.Notice.Payload(a))
	if err != nil {
		return err
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	ts := now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "profilestore-alerts")
	req.Header.Set("X-Profilestore-Alert-Id", a.ID)
	req.Header.Set("X-Profilestore-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Profilestore-Signature", Signature(h.Secret, ts, body))
	resp, err := client(h.Client).Do(req)
	if err != nil {
		// net/http's error names the URL, query and all; the query may hold
		// a token, and the error is logged.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("post to %s: %w", h.Name(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

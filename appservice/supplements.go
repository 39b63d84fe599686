package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// MSC4337 paths, relative to an appservice's URL.
const (
	stableProfilePath   = "/_matrix/app/v1/profile/"
	unstableProfilePath = "/_matrix/app/uk.half-shot.msc4337/profile/"
)

// SupplierOptions configure a Supplier.
type SupplierOptions struct {
	// Registrations are asked in this order; later ones win a key both set.
	// Only those with (msc4337_)supports_profile_lookup and a url are used.
	Registrations []*Registration
	// Deadline bounds each appservice's answer, body included (default 500 ms).
	Deadline time.Duration
	// MaxResponseBytes caps an answer's body (default 64 KiB, a whole profile).
	MaxResponseBytes int64
	// FailureThreshold consecutive failures open an appservice's circuit
	// (default 5); it stays open for Cooldown (default 30 s), then one probe
	// decides whether it closes again.
	FailureThreshold int
	Cooldown         time.Duration
	// Client makes the calls (default: a client that follows no redirects).
	Client *http.Client
	Logger logrus.FieldLogger
}

// Supplier implements MSC4337 for profile reads: it asks every appservice
// whose users namespace matches the profile's user, in parallel and each
// under its own deadline, and merges their answers per top-level key.
// Nothing is cached: answers may depend on the requester and may change at
// any moment (MSC4337 §Caching).
type Supplier struct {
	opts     SupplierOptions
	log      logrus.FieldLogger
	services []*supplierService
	metrics  *supplierMetrics
}

type supplierService struct {
	reg      *Registration
	base     string
	path     string
	breakers breaker
}

// NewSupplier returns a Supplier over the registrations that support lookups.
func NewSupplier(opts SupplierOptions) *Supplier {
	if opts.Deadline <= 0 {
		opts.Deadline = 500 * time.Millisecond
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = domain.MaxProfileBytes
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = 5
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = 30 * time.Second
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			// A redirect would be a misconfiguration; following it could carry
			// the hs_token to a host the operator never registered.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second},
		}
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	s := &Supplier{opts: opts, log: opts.Logger, metrics: newSupplierMetrics()}
	for _, r := range opts.Registrations {
		asked, unstable := r.ProfileLookup()
		if !asked || r.BaseURL() == "" {
			continue
		}
		svc := &supplierService{reg: r, base: r.BaseURL(), path: stableProfilePath}
		if unstable {
			svc.path = unstableProfilePath
		}
		svc.breakers = breaker{threshold: opts.FailureThreshold, cooldown: opts.Cooldown}
		s.services = append(s.services, svc)
		s.metrics.circuitOpen.WithLabelValues(r.ID).Set(0)
	}
	return s
}

// Collectors returns the Supplier's Prometheus metrics for registration.
func (s *Supplier) Collectors() []prometheus.Collector { return s.metrics.collectors() }

// Outcomes of one supplement call, as counted in the metrics.
const (
	outcomeOK          = "ok"
	outcomeNotFound    = "not_found"
	outcomeTimeout     = "timeout"
	outcomeStatus      = "bad_status"
	outcomeMalformed   = "malformed"
	outcomeOversized   = "oversized"
	outcomeTransport   = "transport_error"
	outcomeCircuitOpen = "circuit_open"
)

// Supplement returns the keys the matching appservices supply for user's
// profile, merged in registration order (a later appservice overrides an
// earlier one's key); key "" asks for the full profile, otherwise only that
// key is taken from the answers. requester, when not "", is sent as
// from_user_id. It never fails: an appservice that does not answer well in
// time contributes nothing. The result is nil when nothing was supplied.
func (s *Supplier) Supplement(ctx context.Context, user domain.UserID, key string, requester domain.UserID) map[string]json.RawMessage {
	var asked []*supplierService
	for _, svc := range s.services {
		if svc.reg.MatchesUser(user) {
			asked = append(asked, svc)
		}
	}
	if len(asked) == 0 {
		return nil
	}
	answers := make([]map[string]json.RawMessage, len(asked))
	var wg sync.WaitGroup
	for i, svc := range asked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = s.ask(ctx, svc, user, key, requester)
		}()
	}
	wg.Wait()
	var merged map[string]json.RawMessage
	for _, a := range answers {
		for k, v := range a {
			if merged == nil {
				merged = make(map[string]json.RawMessage)
			}
			merged[k] = v
		}
	}
	return merged
}

// ask calls one appservice and returns its validated contribution.
func (s *Supplier) ask(ctx context.Context, svc *supplierService, user domain.UserID, key string, requester domain.UserID) map[string]json.RawMessage {
	id := svc.reg.ID
	if !svc.breakers.allow(time.Now()) {
		s.metrics.requests.WithLabelValues(id, outcomeCircuitOpen).Inc()
		return nil
	}
	start := time.Now()
	answer, outcome := s.call(ctx, svc, user, key, requester)
	s.metrics.duration.WithLabelValues(id).Observe(time.Since(start).Seconds())
	s.metrics.requests.WithLabelValues(id, outcome).Inc()
	// A 404 is an answer ("nothing for this user"), not a failure. A reader
	// who hung up is not the appservice's fault either.
	failed := outcome != outcomeOK && outcome != outcomeNotFound && ctx.Err() == nil
	if opened := svc.breakers.record(time.Now(), !failed); opened {
		s.log.WithFields(logrus.Fields{"appservice": id, "outcome": outcome}).Warn("msc4337: appservice keeps failing; not asking it for a while")
	}
	if svc.breakers.isOpen(time.Now()) {
		s.metrics.circuitOpen.WithLabelValues(id).Set(1)
	} else {
		s.metrics.circuitOpen.WithLabelValues(id).Set(0)
	}
	if failed {
		s.log.WithFields(logrus.Fields{"appservice": id, "outcome": outcome}).Debug("msc4337: no contribution")
	}
	return answer
}

func (s *Supplier) call(ctx context.Context, svc *supplierService, user domain.UserID, key string, requester domain.UserID) (map[string]json.RawMessage, string) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Deadline)
	defer cancel()
	u := svc.base + svc.path + url.PathEscape(string(user))
	if key != "" {
		u += "/" + url.PathEscape(key)
	}
	if requester != "" {
		u += "?from_user_id=" + url.QueryEscape(string(requester))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, outcomeTransport
	}
	req.Header.Set("Authorization", "Bearer "+svc.reg.HSToken)
	req.Header.Set("Accept", "application/json")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, outcomeTimeout
		}
		return nil, outcomeTransport
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, outcomeNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, outcomeStatus
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.opts.MaxResponseBytes+1))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, outcomeTimeout
		}
		return nil, outcomeTransport
	}
	if int64(len(body)) > s.opts.MaxResponseBytes {
		return nil, outcomeOversized
	}
	answer, ok := validateSupplement(body, key)
	if !ok {
		return nil, outcomeMalformed
	}
	return answer, outcomeOK
}

// validateSupplement keeps what a profile may hold: a JSON object whose keys
// are valid profile keys (only the asked key when one was asked) and whose
// standard fields are strings (mxc:// for avatar_url). Bad keys are dropped
// one by one; a body that is not one JSON object is refused whole.
func validateSupplement(body []byte, key string) (map[string]json.RawMessage, bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, false
	}
	out := make(map[string]json.RawMessage, len(obj))
	for k, raw := range obj {
		if key != "" && k != key {
			continue
		}
		if domain.ValidateKeyName(k) != nil {
			continue
		}
		v, err := domain.CanonicalJSON(raw)
		if err != nil {
			continue
		}
		switch k {
		case domain.KeyDisplayName, domain.KeyAvatarURL, domain.KeyTimeZone:
			var str string
			if json.Unmarshal(v, &str) != nil || bytes.Equal(v, []byte("null")) {
				continue
			}
			if k == domain.KeyAvatarURL && domain.ValidateMXC(str) != nil {
				continue
			}
		}
		out[k] = v
	}
	return out, true
}

// breaker is a consecutive-failure circuit breaker: closed, open for a
// cooldown after threshold failures, then half-open for a single probe.
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	failures  int
	openUntil time.Time
	probing   bool
}

// allow reports whether a call may go out now.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
		return true
	}
	if now.Before(b.openUntil) || b.probing {
		return false
	}
	b.probing = true // half-open: this caller is the probe
	return true
}

// record notes a call's result and reports whether it opened the circuit.
func (b *breaker) record(now time.Time, ok bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	if ok {
		b.failures = 0
		return false
	}
	b.failures++
	if b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
		return b.failures == b.threshold
	}
	return false
}

func (b *breaker) isOpen(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures >= b.threshold && now.Before(b.openUntil)
}

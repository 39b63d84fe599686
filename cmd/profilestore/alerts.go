package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/alerts"
	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
)

// AlertsConfig configures moderation alerts (docs/ALERTS.md): the rules,
// server-wide and per room, and where alerts are delivered.
type AlertsConfig struct {
	Enabled bool `yaml:"enabled"`
	// The rules: lookalike, rename_burst, protected_names, rooms.
	domain.AlertConfig `yaml:",inline"`
	// ConsoleURL is the console's public base URL for links in alerts.
	ConsoleURL string `yaml:"console_url"`
	// Matrix posts alerts to moderation rooms as the appservice's bot.
	Matrix MatrixAlertsConfig `yaml:"matrix"`
	// Webhooks receive every alert as signed JSON.
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// MaxRoomsPerRename bounds the rooms a global rename is checked in.
	MaxRoomsPerRename int `yaml:"max_rooms_per_rename"`
}

// MatrixAlertsConfig names the moderation rooms.
type MatrixAlertsConfig struct {
	// Room receives every alert.
	Room domain.RoomID `yaml:"room"`
	// Rooms send the alerts of a room to its own moderation room instead.
	Rooms map[domain.RoomID]domain.RoomID `yaml:"rooms"`
}

// WebhookConfig is one webhook: its URL and the HMAC secret (inline or in
// a file, which keeps it out of the configuration).
type WebhookConfig struct {
	URL        string `yaml:"url"`
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
}

// minWebhookSecret is the shortest secret accepted: a guessable key makes
// the signature worthless.
const minWebhookSecret = 16

// alerting runs the watcher and the outbox for serve.
type alerting struct {
	watcher *alerts.Watcher
	outbox  *alerts.Outbox
	wg      sync.WaitGroup
}

// withAlerts builds the alerting from the configuration and registers its
// metrics; nil when alerts are off.
func (a *app) withAlerts(cfg *pshttp.Config) (*alerting, error) {
	ac := a.cfg.Alerts
	if !ac.Enabled {
		return nil, nil
	}
	if err := ac.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	notice := alerts.Notice{ConsoleURL: ac.ConsoleURL}
	if ac.ConsoleURL != "" {
		if u, err := url.Parse(ac.ConsoleURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("config: alerts.console_url %q is not an http(s) URL like https://profiles.example.com", ac.ConsoleURL)
		}
	}
	var sinks []alerts.Sink
	if ac.Matrix.Room != "" || len(ac.Matrix.Rooms) > 0 {
		sink, err := a.matrixSink(ac.Matrix, notice)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, sink)
	}
	names := map[string]bool{}
	for i, h := range ac.Webhooks {
		sink, err := webhookSink(i, h, notice)
		if err != nil {
			return nil, err
		}
		if names[sink.Name()] {
			return nil, fmt.Errorf("config: alerts.webhooks[%d]: %s is configured twice", i, sink.Name())
		}
		names[sink.Name()] = true
		sinks = append(sinks, sink)
	}
	if len(sinks) == 0 {
		a.log.Warn("alerts are enabled with nowhere to deliver them (alerts.matrix.room, alerts.webhooks): they are recorded only")
	}
	metrics := alerts.NewMetrics()
	cfg.Collectors = append(cfg.Collectors, metrics.Collectors()...)
	box := alerts.NewOutbox(alerts.OutboxOptions{Store: a.Store, Sealer: a.Sealer, Sinks: sinks,
		Checkpoint: filepath.Join(a.cfg.DataDir, "alerts-delivered.json"), Metrics: metrics, Logger: a.log})
	w := alerts.NewWatcher(alerts.WatcherOptions{Store: a.Store, Sealer: a.Sealer, Rooms: a.RoomView, Views: a.Runner, Config: ac.AlertConfig,
		Checkpoint: filepath.Join(a.cfg.DataDir, "alerts-watched.json"), Raised: box.Wake, Metrics: metrics, Logger: a.log,
		MaxRoomsPerRename: ac.MaxRoomsPerRename})
	return &alerting{watcher: w, outbox: box}, nil
}

// matrixSink posts as profilestore's own appservice bot.
func (a *app) matrixSink(mc MatrixAlertsConfig, notice alerts.Notice) (*alerts.MatrixSink, error) {
	as := a.cfg.Appservice
	if !as.Enabled {
		return nil, errors.New("config: alerts.matrix needs appservice.enabled: the alerts are posted by profilestore's appservice bot")
	}
	if as.ServerName == "" {
		return nil, errors.New("config: alerts.matrix needs appservice.server_name (the bot's user id is @<sender_localpart>:<server_name>)")
	}
	hs := as.HomeserverURL
	if hs == "" {
		hs = a.cfg.Auth.HomeserverURL
	}
	if hs == "" {
		return nil, errors.New("config: alerts.matrix needs appservice.homeserver_url (or auth.homeserver_url) to post to")
	}
	for _, r := range append([]domain.RoomID{mc.Room}, mapValues(mc.Rooms)...) {
		if r == "" {
			continue
		}
		if _, err := domain.ParseRoomID(string(r)); err != nil {
			return nil, fmt.Errorf("config: alerts.matrix: %q is not a room id like !abc:example.com", r)
		}
	}
	reg, err := appservice.LoadRegistration(as.registrationPath(a.cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("alerts.matrix: %w (create it with: profilestore appservice register)", err)
	}
	return &alerts.MatrixSink{HomeserverURL: hs, ASToken: reg.ASToken, Bot: domain.UserID("@" + reg.SenderLocalpart + ":" + as.ServerName),
		Room: mc.Room, RoomFor: mc.Rooms, Notice: notice}, nil
}

func mapValues(m map[domain.RoomID]domain.RoomID) []domain.RoomID {
	out := make([]domain.RoomID, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func webhookSink(i int, h WebhookConfig, notice alerts.Notice) (*alerts.WebhookSink, error) {
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("config: alerts.webhooks[%d].url %q is not an http(s) URL", i, h.URL)
	}
	secret := h.Secret
	if h.SecretFile != "" {
		if secret != "" {
			return nil, fmt.Errorf("config: alerts.webhooks[%d]: give secret or secret_file, not both", i)
		}
		raw, err := os.ReadFile(h.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("config: alerts.webhooks[%d].secret_file: %w", i, err)
		}
		secret = strings.TrimSpace(string(raw))
	}
	if len(secret) < minWebhookSecret {
		return nil, fmt.Errorf("config: alerts.webhooks[%d] needs a secret of at least %d characters (for example: openssl rand -hex 32)", i, minWebhookSecret)
	}
	return &alerts.WebhookSink{URL: h.URL, Secret: secret, Notice: notice}, nil
}

// alertsRetry is how long the watcher or the outbox waits before starting
// again after an error (the store failing, say).
const alertsRetry = 5 * time.Second

// start runs the watcher and the outbox until ctx ends. Either one that
// stops on an error is logged and started again from its checkpoint, so
// nothing is skipped; serving goes on meanwhile.
func (al *alerting) start(ctx context.Context, a *app) {
	if al == nil {
		return
	}
	keep := func(what string, run func(context.Context) error) {
		defer al.wg.Done()
		for {
			err := run(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				a.log.WithError(err).Errorf("alerts: the %s stopped; starting it again in %s", what, alertsRetry)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(alertsRetry):
			}
		}
	}
	al.wg.Add(2)
	go keep("watcher", al.watcher.Run)
	go keep("outbox", al.outbox.Run)
}

// wait returns once both have stopped.
func (al *alerting) wait() {
	if al != nil {
		al.wg.Wait()
	}
}

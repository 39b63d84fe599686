package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"
)

// Config is profilestore's configuration: defaults, then the YAML file, then
// PROFILESTORE_* environment variables, then command-line flags.
type Config struct {
	Listen  string `yaml:"listen"`
	DataDir string `yaml:"data_dir"`
	// Store is "bolt" (embedded, default) or "esdb".
	Store   string `yaml:"store"`
	ESDBURL string `yaml:"esdb_url"`

	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`

	Auth      AuthConfig      `yaml:"auth"`
	Profile   ProfileConfig   `yaml:"profile"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	Feed      FeedConfig      `yaml:"feed"`
	// Appservice runs profilestore beside a homeserver (docs/APPSERVICE.md).
	Appservice AppserviceConfig `yaml:"appservice"`

	// Integrity configures seals (docs/INTEGRITY.md).
	Integrity IntegrityConfig `yaml:"integrity"`

	// Alerts raises and delivers moderation alerts (docs/ALERTS.md).
	Alerts AlertsConfig `yaml:"alerts"`

	// Views sizes the view store's caches.
	Views ViewsConfig `yaml:"views"`

	// ApplyWait bounds read-your-writes waits.
	ApplyWait time.Duration `yaml:"apply_wait"`

	// CommandCache bounds the state the command side keeps in memory.
	CommandCache CommandCacheConfig `yaml:"command_cache"`
}

// ViewsConfig sizes the memory the views use; the views themselves live on
// disk in the data directory's views/ folder.
type ViewsConfig struct {
	// CacheEntries is how many decoded objects each view cache keeps
	// (profiles; room users, rooms, members and changes each).
	CacheEntries int `yaml:"cache_entries"`
	// BlockCacheMB is the view store's block cache.
	BlockCacheMB int `yaml:"block_cache_mb"`
}

// AuthConfig chooses how client access tokens are checked.
type AuthConfig struct {
	// Mode is "tokens" (a tokens file, default) or "homeserver" (whoami).
	Mode          string        `yaml:"mode"`
	TokensFile    string        `yaml:"tokens_file"`
	HomeserverURL string        `yaml:"homeserver_url"`
	CacheTTL      time.Duration `yaml:"cache_ttl"`
	NegativeTTL   time.Duration `yaml:"negative_cache_ttl"`
	// Admins are granted admin rights in homeserver mode.
	Admins []domain.UserID `yaml:"admins"`
}

// ProfileConfig holds profile write rules.
type ProfileConfig struct {
	DefaultPropagation  domain.Propagation   `yaml:"default_propagation"`
	MaxDisplayNameChars int                  `yaml:"max_displayname_chars"`
	MaxAvatarURLBytes   int                  `yaml:"max_avatar_url_bytes"`
	RequireAuth         bool                 `yaml:"require_auth"`
	Fields              domain.ProfileFields `yaml:"fields"`
}

// FeedConfig configures the change feed and the stats endpoint.
type FeedConfig struct {
	// AnalyticsTokenSHA256 are hex SHA-256 hashes of tokens that may read
	// the feed and the stats without being admins (sha256sum of the token).
	AnalyticsTokenSHA256 []string `yaml:"analytics_token_sha256"`
	// Heartbeat is how often an idle feed sends a comment line.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// CommandCacheConfig sizes the command side's caches: how many users' and
// rooms' states stay in memory for deciding writes (least recently used go
// first; a state not cached is read from the store when a write needs it).
type CommandCacheConfig struct {
	Profiles int `yaml:"profiles"`
	Rooms    int `yaml:"rooms"`
}

// RateLimitConfig limits writes per user.
type RateLimitConfig struct {
	WritesPerSecond float64 `yaml:"writes_per_second"`
	Burst           int     `yaml:"burst"`
}

// defaultListen is the default address. Not 8008 or 8448 (Synapse,
// Dendrite and conduwuit, which profilestore runs beside), 8009 (the
// sliding-sync proxy), 8080/8081 (Element Web, the Matrix Authentication
// Service), 8090 (ma1sd), 6167 (Conduit), 9000-9002 (hookshot) or 29xxx
// (the mautrix bridges); see docs/DECISIONS.md.
const defaultListen = "127.0.0.1:8318"

func defaultConfig() Config {
	return Config{
		Listen:    defaultListen,
		DataDir:   "./data",
		Store:     "bolt",
		LogLevel:  "info",
		LogFormat: "text",
		Auth:      AuthConfig{Mode: "tokens", CacheTTL: 30 * time.Second, NegativeTTL: 5 * time.Second},
		Profile: ProfileConfig{
			DefaultPropagation:  domain.PropagateUnchanged,
			MaxDisplayNameChars: domain.DefaultLimits.MaxDisplayNameChars,
			MaxAvatarURLBytes:   domain.DefaultLimits.MaxAvatarURLBytes,
		},
		RateLimit:    RateLimitConfig{WritesPerSecond: 10, Burst: 30},
		ApplyWait:    5 * time.Second,
		Views:        ViewsConfig{CacheEntries: 20_000, BlockCacheMB: 64},
		Feed:         FeedConfig{Heartbeat: 15 * time.Second},
		Integrity:    IntegrityConfig{SealEvery: 1000, SealInterval: 10 * time.Second},
		Alerts:       AlertsConfig{AlertConfig: domain.AlertConfig{AlertRules: domain.DefaultAlertRules}},
		CommandCache: CommandCacheConfig{Profiles: domain.DefaultCachedProfiles, Rooms: domain.DefaultCachedRooms},
	}
}

// loadConfig reads the file at path (if any) and the environment over the defaults.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		path = os.Getenv("PROFILESTORE_CONFIG")
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(data, &cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	env := func(name string, dst *string) {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			*dst = v
		}
	}
	env("PROFILESTORE_LISTEN", &cfg.Listen)
	env("PROFILESTORE_DATA_DIR", &cfg.DataDir)
	env("PROFILESTORE_STORE", &cfg.Store)
	env("PROFILESTORE_ESDB_URL", &cfg.ESDBURL)
	env("PROFILESTORE_LOG_LEVEL", &cfg.LogLevel)
	env("PROFILESTORE_LOG_FORMAT", &cfg.LogFormat)
	env("PROFILESTORE_AUTH_MODE", &cfg.Auth.Mode)
	env("PROFILESTORE_TOKENS_FILE", &cfg.Auth.TokensFile)
	env("PROFILESTORE_HOMESERVER_URL", &cfg.Auth.HomeserverURL)
	env("PROFILESTORE_INTEGRITY_SIGNING_KEY", &cfg.Integrity.SigningKey)
	if v := os.Getenv("PROFILESTORE_WRITES_PER_SECOND"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return cfg, fmt.Errorf("PROFILESTORE_WRITES_PER_SECOND=%q is not a number of writes per second (like 10 or 0.5; 0 turns the limit off)", v)
		}
		cfg.RateLimit.WritesPerSecond = f
	}
	for name, dst := range map[string]*int{"PROFILESTORE_COMMAND_CACHE_PROFILES": &cfg.CommandCache.Profiles, "PROFILESTORE_COMMAND_CACHE_ROOMS": &cfg.CommandCache.Rooms,
		"PROFILESTORE_VIEW_CACHE_ENTRIES": &cfg.Views.CacheEntries, "PROFILESTORE_VIEW_BLOCK_CACHE_MB": &cfg.Views.BlockCacheMB} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return cfg, fmt.Errorf("%s=%q is not a whole number (like 50000)", name, v)
			}
			*dst = n
		}
	}
	return cfg, nil
}

// validate checks the configuration and fills derived defaults.
func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("config: data_dir is empty")
	}
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil || !slices.Contains(logLevels, c.LogLevel) {
		return fmt.Errorf("config: log_level %q is not one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("config: log_format %q is not text or json", c.LogFormat)
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return fmt.Errorf("config: listen %q is not a host:port address (like %s, or :8318 for every interface)", c.Listen, defaultListen)
	}
	for name, u := range map[string]string{"auth.homeserver_url": c.Auth.HomeserverURL, "appservice.homeserver_url": c.Appservice.HomeserverURL} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("config: %s %q is not an http(s) URL (like https://matrix.example.com)", name, u)
		}
	}
	for name, d := range map[string]time.Duration{"apply_wait": c.ApplyWait, "auth.cache_ttl": c.Auth.CacheTTL,
		"auth.negative_cache_ttl": c.Auth.NegativeTTL, "feed.heartbeat": c.Feed.Heartbeat,
		"appservice.profile_cache_ttl": c.Appservice.ProfileCacheTTL, "appservice.supplements.deadline": c.Appservice.Supplements.Deadline} {
		if d < 0 {
			return fmt.Errorf("config: %s is negative (%s)", name, d)
		}
	}
	if c.RateLimit.WritesPerSecond < 0 || c.RateLimit.Burst < 0 {
		return errors.New("config: rate_limit.writes_per_second and rate_limit.burst cannot be negative (0 turns the limit off)")
	}
	if c.Profile.MaxDisplayNameChars < 1 || c.Profile.MaxAvatarURLBytes < 1 {
		return errors.New("config: profile.max_displayname_chars and profile.max_avatar_url_bytes must be at least 1")
	}
	if c.CommandCache.Profiles < 1 || c.CommandCache.Rooms < 1 {
		return fmt.Errorf("config: command_cache.profiles and command_cache.rooms must be at least 1 (states kept in memory; they are %d and %d)", c.CommandCache.Profiles, c.CommandCache.Rooms)
	}
	if c.Views.CacheEntries < 1 || c.Views.BlockCacheMB < 1 {
		return fmt.Errorf("config: views.cache_entries and views.block_cache_mb must be at least 1 (memory the views keep; they are %d and %d)", c.Views.CacheEntries, c.Views.BlockCacheMB)
	}
	if c.Appservice.MaxTransactionBytes < 0 {
		return errors.New("config: appservice.max_transaction_bytes cannot be negative")
	}
	if err := c.Appservice.Backfill.validate(); err != nil {
		return err
	}
	if c.Auth.TokensFile == "" {
		c.Auth.TokensFile = filepath.Join(c.DataDir, "tokens.yaml")
	}
	switch c.Store {
	case "bolt":
	case "esdb":
		if c.ESDBURL == "" {
			return errors.New("config: store esdb needs esdb_url (PROFILESTORE_ESDB_URL)")
		}
	default:
		return fmt.Errorf("config: store must be bolt or esdb, not %q", c.Store)
	}
	switch c.Auth.Mode {
	case "tokens":
	case "homeserver":
		if c.Auth.HomeserverURL == "" {
			return errors.New("config: auth mode homeserver needs auth.homeserver_url")
		}
	default:
		return fmt.Errorf("config: auth.mode must be tokens or homeserver, not %q", c.Auth.Mode)
	}
	if _, err := domain.ParsePropagation(string(c.Profile.DefaultPropagation)); err != nil {
		return fmt.Errorf("config: profile.default_propagation %q is not one of all, unchanged, none", c.Profile.DefaultPropagation)
	}
	for i, u := range c.Auth.Admins {
		if _, err := domain.ParseHistoricalUserID(string(u)); err != nil {
			return fmt.Errorf("config: auth.admins[%d] %q is not a Matrix user id (@name:server)", i, u)
		}
	}
	if err := c.Integrity.validate(c.DataDir); err != nil {
		return err
	}
	for i, h := range c.Feed.AnalyticsTokenSHA256 {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("config: feed.analytics_token_sha256[%d] is not 64 hex digits", i)
		}
	}
	return nil
}

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// newLogger builds the configured logger.
func newLogger(cfg Config) (*logrus.Logger, error) {
	if !slices.Contains(logLevels, cfg.LogLevel) {
		return nil, fmt.Errorf("log level %q is not one of %s", cfg.LogLevel, strings.Join(logLevels, ", "))
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return nil, fmt.Errorf("log format %q is not text or json", cfg.LogFormat)
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	if cfg.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	level, _ := logrus.ParseLevel(cfg.LogLevel)
	log.SetLevel(level)
	return log, nil
}

// decodeConfig decodes a YAML configuration strictly: a key the
// configuration does not have (a typo like "listn") is an error naming the
// key and its line, and so is a value of the wrong kind, instead of being
// silently ignored.
func decodeConfig(data []byte, cfg *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return humanYAML(err, nil)
	}
	keys := map[int]string{} // line -> dotted key defined on that line
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := prefix + n.Content[i].Value
				keys[n.Content[i].Line] = k
				if n.Content[i+1].Line != n.Content[i].Line {
					keys[n.Content[i+1].Line] = k
				}
				walk(n.Content[i+1], k+".")
			}
		}
	}
	walk(&doc, "")
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && err.Error() != "EOF" {
		return humanYAML(err, keys)
	}
	return nil
}

var (
	yamlLine     = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknown  = regexp.MustCompile(`^field (\S+) not found in type`)
	yamlWrongVal = regexp.MustCompile("^cannot unmarshal !!\\w+ `(.*)` into (\\S+)$")
)

// kinds names Go types the way the configuration documentation does.
var kinds = map[string]string{
	"time.Duration": "a duration (like 30s, 5m or 1h)",
	"int":           "a whole number", "int64": "a whole number",
	"float64": "a number", "bool": "true or false", "string": "a string",
}

// humanYAML rewrites yaml.v3's messages ("line 3: field listn not found in
// type main.Config", "cannot unmarshal !!str `x` into time.Duration") as
// "line 3: unknown setting "listn"" and "line 4: apply_wait: "x" is not a
// duration (like 30s...)".
func humanYAML(err error, keys map[int]string) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := yamlLine.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, e)
			continue
		}
		line, msg := m[1], m[2]
		n, _ := strconv.Atoi(line)
		key := keys[n]
		if u := yamlUnknown.FindStringSubmatch(msg); u != nil {
			if key == "" {
				key = u[1]
			}
			msgs = append(msgs, fmt.Sprintf("line %s: unknown setting %q (README.md lists the settings)", line, key))
			continue
		}
		if w := yamlWrongVal.FindStringSubmatch(msg); w != nil {
			kind, ok := kinds[w[2]]
			if !ok {
				kind = describeKind(w[2])
			}
			msgs = append(msgs, fmt.Sprintf("line %s: %s: %q is not %s", line, key, w[1], kind))
			continue
		}
		msgs = append(msgs, fmt.Sprintf("line %s: %s: %s", line, key, msg))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// describeKind names the other types a setting can have.
func describeKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "main."), strings.HasPrefix(goType, "http."):
		return "a section of settings"
	}
	return "valid here (" + goType + ")"
}

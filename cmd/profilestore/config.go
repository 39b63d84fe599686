package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/profilestore/profilestore/domain"
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

	// ApplyWait bounds read-your-writes waits.
	ApplyWait time.Duration `yaml:"apply_wait"`
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

// RateLimitConfig limits writes per user.
type RateLimitConfig struct {
	WritesPerSecond float64 `yaml:"writes_per_second"`
	Burst           int     `yaml:"burst"`
}

func defaultConfig() Config {
	return Config{
		Listen:    "127.0.0.1:8008",
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
		RateLimit: RateLimitConfig{WritesPerSecond: 10, Burst: 30},
		ApplyWait: 5 * time.Second,
		Feed:      FeedConfig{Heartbeat: 15 * time.Second},
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
		if err := yaml.Unmarshal(data, &cfg); err != nil {
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
	if v := os.Getenv("PROFILESTORE_WRITES_PER_SECOND"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return cfg, fmt.Errorf("PROFILESTORE_WRITES_PER_SECOND: %w", err)
		}
		cfg.RateLimit.WritesPerSecond = f
	}
	return cfg, nil
}

// validate checks the configuration and fills derived defaults.
func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("config: data_dir is empty")
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
		return fmt.Errorf("config: profile.default_propagation: %v", err)
	}
	for i, h := range c.Feed.AnalyticsTokenSHA256 {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("config: feed.analytics_token_sha256[%d] is not 64 hex digits", i)
		}
	}
	return nil
}

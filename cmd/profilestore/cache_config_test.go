package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
)

// TestCommandCacheConfig: the command side's cache sizes come from the
// defaults, the file, the environment and the serve flags, in that order,
// and a size below 1 or not a number is an error that names the setting.
func TestCommandCacheConfig(t *testing.T) {
	t.Setenv("PROFILESTORE_ESDB_URL", "")
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CommandCache != (CommandCacheConfig{Profiles: domain.DefaultCachedProfiles, Rooms: domain.DefaultCachedRooms}) {
		t.Errorf("defaults %+v", cfg.CommandCache)
	}
	write("command_cache:\n  profiles: 10\n  rooms: 3\n")
	t.Run("file and environment", func(t *testing.T) {
		t.Setenv("PROFILESTORE_COMMAND_CACHE_ROOMS", "7")
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.CommandCache != (CommandCacheConfig{Profiles: 10, Rooms: 7}) {
			t.Errorf("got %+v, want profiles 10 from the file, rooms 7 from the environment", cfg.CommandCache)
		}
		if err := cfg.validate(); err != nil {
			t.Error(err)
		}
	})
	t.Run("environment not a number", func(t *testing.T) {
		t.Setenv("PROFILESTORE_COMMAND_CACHE_PROFILES", "many")
		if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "PROFILESTORE_COMMAND_CACHE_PROFILES") {
			t.Errorf("error %v, want one naming PROFILESTORE_COMMAND_CACHE_PROFILES", err)
		}
	})
	t.Run("zero in the file", func(t *testing.T) {
		write("command_cache:\n  profiles: 0\n")
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "command_cache.profiles") {
			t.Errorf("error %v, want one naming command_cache.profiles", err)
		}
	})
	t.Run("flag", func(t *testing.T) {
		_, _, err := run2(t, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--command-cache-rooms", "-1")
		if err == nil || !strings.Contains(err.Error(), "command_cache.rooms") {
			t.Errorf("serve --command-cache-rooms -1: %v, want an error naming command_cache.rooms", err)
		}
	})
}

// TestViewCacheConfig: the views' memory comes from the defaults, the file
// and the environment, reaches the running views (their caches' capacity
// in /metrics is the views' business; here the config), and a size below 1
// or not a number names the setting.
func TestViewCacheConfig(t *testing.T) {
	t.Setenv("PROFILESTORE_ESDB_URL", "")
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("views:\n  cache_entries: 500\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, env, value string
		want             ViewsConfig
		wantErr          string
	}{
		{name: "file", want: ViewsConfig{CacheEntries: 500, BlockCacheMB: 64}},
		{name: "environment", env: "PROFILESTORE_VIEW_BLOCK_CACHE_MB", value: "16", want: ViewsConfig{CacheEntries: 500, BlockCacheMB: 16}},
		{name: "not a number", env: "PROFILESTORE_VIEW_CACHE_ENTRIES", value: "lots", wantErr: "PROFILESTORE_VIEW_CACHE_ENTRIES"},
		{name: "zero", env: "PROFILESTORE_VIEW_CACHE_ENTRIES", value: "0", wantErr: "views.cache_entries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv(c.env, c.value)
			}
			cfg, err := loadConfig(path)
			if err == nil {
				err = cfg.validate()
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Views != c.want {
				t.Errorf("got %+v, want %+v", cfg.Views, c.want)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/sirupsen/logrus"
)

// run2 runs the CLI and returns standard output and standard error.
func run2(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := rootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestOfflineCommandsNeedDataDir: a mistyped --data-dir is an error that
// creates nothing, instead of a fresh empty store that "succeeds".
func TestOfflineCommandsNeedDataDir(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	for _, args := range [][]string{{"rebuild"}, {"export"}, {"import", "/dev/null"}, {"verify"}, {"integrity", "seal"}} {
		t.Run(args[0], func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "typo")
			_, _, err := run2(t, append(args, "--data-dir", dir)...)
			if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), dir) {
				t.Fatalf("%v: %v, want a missing data directory error", args, err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%v created %s", args, dir)
			}
		})
	}
}

// TestTokenIssueSaysItCreatesTheDataDir: the commands that may create a data
// directory say so.
func TestTokenIssueSaysItCreatesTheDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	_, stderr, err := run2(t, "token", "issue", "--data-dir", dir, "@alice:example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "created a new data directory "+dir) {
		t.Errorf("stderr %q does not say the data directory was created", stderr)
	}
	_, stderr, err = run2(t, "token", "issue", "--data-dir", dir, "@bob:example.com")
	if err != nil || strings.Contains(stderr, "created") {
		t.Errorf("second issue: %q %v", stderr, err)
	}
}

// TestUnexpectedArguments: extra words are errors that show the usage, not
// silently ignored.
func TestUnexpectedArguments(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"rebuild", "extra"}, {"export", "extra"}, {"serve", "extra"}, {"import", "a", "b"},
		{"token"}, {"token", "bogus"}, {"token", "issue"}, {"appservice", "bogus"},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			_, _, err := run2(t, append(args, "--config", filepath.Join(dir, "none.yaml"))...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("%v: %v, want a usage error", args, err)
			}
		})
	}
}

// TestDataDirInUse: an offline command on the directory of a running server
// says so at once and points at backup.
func TestDataDirInUse(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	dir := t.TempDir()
	s, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, args := range [][]string{{"rebuild"}, {"import", "/dev/null"}} {
		_, _, err := run2(t, append(args, "--data-dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), "in use by a running profilestore") || !strings.Contains(err.Error(), "backup") {
			t.Errorf("%v: %v", args, err)
		}
	}
	// export and backup ask the server over its socket; this holder has none.
	for _, args := range [][]string{{"export"}, {"backup", filepath.Join(t.TempDir(), "b")}} {
		_, _, err := run2(t, append(args, "--data-dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), "is in use, but the server's control socket") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestConfigStrict(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	for _, c := range []struct{ name, yaml, want, not string }{
		{"unknown key", "listen: 127.0.0.1:1\nlistn: 127.0.0.1:2\n", `line 2: unknown setting "listn"`, ""},
		{"unknown nested key", "auth:\n  mode: tokens\n  mdoe: homeserver\n", `line 3: unknown setting "auth.mdoe"`, ""},
		{"log format", "log_format: xml\n", `log_format "xml" is not text or json`, ""},
		{"log level", "log_level: verbose\n", `log_level "verbose" is not one of`, "logrus"},
		{"duration", "apply_wait: soon\n", `line 1: apply_wait: "soon" is not a duration`, "unmarshal"},
		{"number", "rate_limit:\n  burst: many\n", `line 2: rate_limit.burst: "many" is not a whole number`, "!!str"},
		{"negative", "rate_limit:\n  writes_per_second: -1\n", "cannot be negative", ""},
		{"propagation", "profile:\n  default_propagation: some\n", `"some" is not one of all, unchanged, none`, "M_"},
		{"admin", "auth:\n  admins: [alice]\n", `auth.admins[0] "alice" is not a Matrix user id`, "M_"},
		{"yaml", "listen: [\n", "not valid YAML", ""},
		{"listen", "listen: localhost\n", `listen "localhost" is not a host:port address`, ""},
		{"homeserver url", "auth:\n  mode: homeserver\n  homeserver_url: matrix.example.com\n", `auth.homeserver_url "matrix.example.com" is not an http(s) URL`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(path)
			if err == nil {
				err = cfg.validate()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || c.not != "" && strings.Contains(err.Error(), c.not) {
				t.Fatalf("%q: %v, want %q", c.yaml, err, c.want)
			}
		})
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("PROFILESTORE_WRITES_PER_SECOND", "fast")
		_, err := loadConfig("")
		if err == nil || strings.Contains(err.Error(), "strconv") || !strings.Contains(err.Error(), `"fast"`) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("flag", func(t *testing.T) {
		_, _, err := run2(t, "rebuild", "--log-format", "xml", "--data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), `"xml" is not text or json`) {
			t.Fatalf("%v", err)
		}
	})
}

func TestExportBoundsErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "12", "--to", "10"}, "--to 10 is before --from 12"},
		{[]string{"--since", "yesterday"}, `--since "yesterday" is not a time like`},
		{[]string{"--from", "x"}, `--from "x" is not a position`},
		{[]string{"--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"}, "is not after --since"},
	} {
		t.Run(c.want, func(t *testing.T) {
			_, _, err := run2(t, append([]string{"export", "--data-dir", dir}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "2006") {
				t.Fatalf("%v: %v", c.args, err)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run2(t, "--version")
	if err != nil || !strings.HasPrefix(out, "profilestore version ") {
		t.Fatalf("%q %v", out, err)
	}
}

// TestHelpShowsOnlyFlagsThatApply: global flags that a command ignores are
// not in its help.
func TestHelpShowsOnlyFlagsThatApply(t *testing.T) {
	for _, c := range []struct {
		args    []string
		has     []string
		hasNone []string
	}{
		{[]string{"export", "--help"}, []string{"--data-dir", "--store", "--config"}, []string{"--listen", "--tokens-file"}},
		{[]string{"token", "issue", "--help"}, []string{"--data-dir", "--tokens-file"}, []string{"--listen", "--store", "--esdb-url"}},
		{[]string{"serve", "--help"}, []string{"--listen", "--data-dir", "--log-format"}, nil},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			out, _, err := run2(t, c.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range c.has {
				if !strings.Contains(out, f) {
					t.Errorf("help lacks %s", f)
				}
			}
			for _, f := range c.hasNone {
				if strings.Contains(out, f) {
					t.Errorf("help shows %s, which does not apply", f)
				}
			}
		})
	}
}

// TestDefaultPortBesideMatrix: the default address collides with none of the
// services profilestore runs beside.
func TestDefaultPortBesideMatrix(t *testing.T) {
	_, port, err := net.SplitHostPort(defaultConfig().Listen)
	if err != nil {
		t.Fatal(err)
	}
	taken := map[string]string{"8008": "Synapse/Dendrite client", "8448": "federation", "8009": "sliding sync",
		"8080": "Element Web", "8081": "MAS", "8090": "ma1sd", "6167": "Conduit", "9000": "hookshot", "29317": "mautrix"}
	if who, ok := taken[port]; ok {
		t.Errorf("default port %s is %s's", port, who)
	}
}

// TestStartupLog names the console, the store, the auth mode and the
// appservice mode, without the store's password.
func TestStartupLog(t *testing.T) {
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	cfg := defaultConfig()
	cfg.Store, cfg.ESDBURL = "esdb", "esdb://admin:secret@db.example:2113?tls=false"
	cfg.Auth.Mode, cfg.Auth.HomeserverURL = "homeserver", "http://127.0.0.1:8008"
	cfg.Appservice.Enabled = true
	logStartup(log, cfg, "http://127.0.0.1:8318")
	out := buf.String()
	for _, want := range []string{`console="http://127.0.0.1:8318/console/"`, "store=\"esdb esdb://admin:xxxxx@db.example:2113", `auth="homeserver http://127.0.0.1:8008"`, `appservice="on, homeserver http://127.0.0.1:8008"`} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Error("the start-up log shows the store password")
	}
}

// TestStartupLogNamesTheDefaultTokensFile: serve logs the configuration the
// app runs with, so a tokens file left to its default is named (it read
// "tokens file " with nothing after it).
func TestStartupLogNamesTheDefaultTokensFile(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DataDir = dir
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	a, err := openApp(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	a.logStartup("http://127.0.0.1:8318")
	if want := fmt.Sprintf("auth=\"tokens file %s\"", filepath.Join(dir, "tokens.yaml")); !strings.Contains(buf.String(), want) {
		t.Errorf("start-up log lacks %s:\n%s", want, buf.String())
	}
}

func TestTokenListAndRevoke(t *testing.T) {
	dir := t.TempDir()
	a, _, err := run2(t, "token", "issue", "--data-dir", dir, "--comment", "laptop", "--expires", "720h", "@alice:example.com")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := run2(t, "token", "issue", "--data-dir", dir, "--admin", "@bob:example.com")
	if err != nil {
		t.Fatal(err)
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	out, _, err := run2(t, "token", "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "@alice:example.com") || !strings.Contains(lines[1], "laptop") ||
		strings.Contains(lines[1], "never") || !strings.Contains(lines[2], "yes") || !strings.Contains(lines[2], "never") {
		t.Fatalf("token list:\n%s", out)
	}
	if strings.Contains(out, a) || strings.Contains(out, b) {
		t.Fatal("token list shows a token")
	}
	bobHash := strings.Fields(lines[2])[0]
	if out, _, err := run2(t, "token", "revoke", "--data-dir", dir, bobHash[:8]); err != nil || !strings.Contains(out, "revoked "+bobHash+" of @bob:example.com") {
		t.Fatalf("revoke by prefix: %q %v", out, err)
	}
	if out, _, err := run2(t, "token", "revoke", "--data-dir", dir, a); err != nil || !strings.Contains(out, "of @alice:example.com") {
		t.Fatalf("revoke by token: %q %v", out, err)
	}
	if _, _, err := run2(t, "token", "revoke", "--data-dir", dir, "--user", "@alice:example.com"); err == nil || !strings.Contains(err.Error(), "no token matches") {
		t.Fatalf("revoke with nothing left: %v", err)
	}
	var ue usageError
	if _, _, err := run2(t, "token", "revoke", "--data-dir", dir, "--user", "@alice:example.com", "abcdef"); !errors.As(err, &ue) {
		t.Errorf("revoke with a prefix and --user: %v", err)
	}
	if _, _, err := run2(t, "token", "issue", "--data-dir", dir, "--expires", "30 days", "@c:example.com"); err == nil || !strings.Contains(err.Error(), "like 720h") {
		t.Errorf("bad --expires: %v", err)
	}
}

// TestOfflineCommandsNeedAStore: an existing directory without events.db
// (the parent of the data directory, say) is not exported, rebuilt or
// backed up as an empty store, and nothing is created in it.
func TestOfflineCommandsNeedAStore(t *testing.T) {
	t.Setenv("PROFILESTORE_LOG_LEVEL", "error")
	for _, args := range [][]string{{"rebuild"}, {"export"}, {"backup", filepath.Join(t.TempDir(), "b")}} {
		t.Run(args[0], func(t *testing.T) {
			dir := t.TempDir()
			_, _, err := run2(t, append(args, "--data-dir", dir)...)
			if err == nil || !strings.Contains(err.Error(), "holds no events.db") {
				t.Fatalf("%v: %v", args, err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%v created %v", args, entries)
			}
		})
	}
}

// TestArgumentMessages are words, not cobra's "accepts 1 arg(s)".
func TestArgumentMessages(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rebuild", "extra"}, `profilestore rebuild takes no arguments (got "extra")`},
		{[]string{"token", "issue"}, "profilestore token issue needs @user:server"},
		{[]string{"backup"}, "profilestore backup needs DIR"},
		{[]string{"token", "bogus"}, `unknown command "bogus" for "profilestore token"`},
	} {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			_, _, err := run2(t, c.args...)
			if err == nil || err.Error() != c.want {
				t.Fatalf("%v: %v, want %q", c.args, err, c.want)
			}
		})
	}
}

func TestHumanErrorDropsErrcodes(t *testing.T) {
	err := fmt.Errorf("registration: %w", domain.Errorf(domain.ErrCodeInvalidParam, "Invalid server name"))
	if got := humanError(err); got != "registration: Invalid server name" {
		t.Errorf("humanError: %q", got)
	}
}

func TestAppserviceRegisterSaysItCreatesTheDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	_, stderr, err := run2(t, "appservice", "register", "--server-name", "example.org", "--data-dir", dir)
	if err != nil || !strings.Contains(stderr, "created a new data directory "+dir) {
		t.Fatalf("%q %v", stderr, err)
	}
}

// TestAppserviceRegisterAsksForProfileLookups: the registration carries
// MSC4337's flags, stable and unstable, unless --profile-lookup=false.
func TestAppserviceRegisterAsksForProfileLookups(t *testing.T) {
	for _, on := range []bool{true, false} {
		args := []string{"appservice", "register", "--server-name", "example.org", "--data-dir", t.TempDir()}
		if !on {
			args = append(args, "--profile-lookup=false")
		}
		stdout, stderr, err := run2(t, args...)
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		for _, flag := range []string{"supports_profile_lookup: true", "msc4337_supports_profile_lookup: true"} {
			if strings.Contains(stdout, flag) != on {
				t.Errorf("--profile-lookup=%v: %q in the registration: %v\n%s", on, flag, !on, stdout)
			}
		}
	}
}

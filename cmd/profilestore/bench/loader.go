package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// The HTTP measurements run their clients in a child process: a loader in
// the server's own process shares its scheduler, heap and garbage collector
// and flatters it. The bench re-executes its own binary with the hidden
// `bench load` sub-command, which prints one benchResult as JSON.

// LoaderEnv is set in the loader child's environment. A test binary that
// runs the bench checks it in TestMain and runs the command line instead of
// the tests (the child of a test binary is the test binary).
const LoaderEnv = "PROFILESTORE_BENCH_LOADER"

// Loader scenarios: what each client sends.
const (
	scenarioNoop        = "noop"         // GET the no-op handler
	scenarioPutOwn      = "put-own"      // client i renames user i
	scenarioPutOneUser  = "put-one-user" // every client renames user 0
	scenarioGetProfile  = "get-profile"  // client i reads user i's profile
	maxLoaderClients    = 4096
	loaderRequestTimout = 30 * time.Second
)

// loadSpec is one run of the loader child.
type loadSpec struct {
	Name     string        `json:"name"`
	Scenario string        `json:"scenario"`
	URL      string        `json:"url"`
	Clients  int           `json:"clients"`
	Duration time.Duration `json:"duration"`
	// Tokens are the bench users' access tokens, user i's at index i.
	Tokens []string `json:"tokens"`
}

// loadCommand is the hidden loader sub-command: it reads a loadSpec from the
// file named by --spec and prints the result.
func loadCommand() *cobra.Command {
	var specPath string
	cmd := &cobra.Command{
		Use:    "load",
		Short:  "Run one HTTP load of the bench (started by the bench itself)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(specPath)
			if err != nil {
				return err
			}
			var spec loadSpec
			if err := json.Unmarshal(data, &spec); err != nil {
				return fmt.Errorf("loader spec %s: %w", specPath, err)
			}
			request, err := spec.requests()
			if err != nil {
				return err
			}
			res := httpLoad(spec.Name, spec.Clients, spec.Duration, request)
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		},
	}
	cmd.Flags().StringVar(&specPath, "spec", "", "JSON file describing the load")
	_ = cmd.MarkFlagRequired("spec")
	return cmd
}

// requests returns the request maker of the spec's scenario.
func (s loadSpec) requests() (func(worker int, n int64) *http.Request, error) {
	if s.Clients < 1 || s.Clients > maxLoaderClients {
		return nil, fmt.Errorf("loader: clients must be 1 to %d, not %d", maxLoaderClients, s.Clients)
	}
	needTokens := s.Clients
	if s.Scenario == scenarioPutOneUser {
		needTokens = 1
	}
	put := func(user int, body string) *http.Request {
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/_matrix/client/v3/profile/"+benchUser(user)+"/displayname", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Tokens[user])
		return req
	}
	switch s.Scenario {
	case scenarioNoop:
		return func(int, int64) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/noop", nil)
			return req
		}, nil
	case scenarioGetProfile:
		return func(i int, _ int64) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/_matrix/client/v3/profile/"+benchUser(i), nil)
			return req
		}, nil
	case scenarioPutOwn, scenarioPutOneUser:
		if len(s.Tokens) < needTokens {
			return nil, fmt.Errorf("loader: scenario %s with %d clients needs %d tokens, has %d", s.Scenario, s.Clients, needTokens, len(s.Tokens))
		}
		if s.Scenario == scenarioPutOneUser {
			// Every request names a new value, so none is a no-op decision.
			return func(i int, n int64) *http.Request {
				return put(0, fmt.Sprintf(`{"displayname":"Bench user 0 client %d change %d"}`, i, n))
			}, nil
		}
		return func(i int, n int64) *http.Request {
			return put(i, fmt.Sprintf(`{"displayname":"Bench user %d change %d"}`, i, n))
		}, nil
	}
	return nil, fmt.Errorf("loader: unknown scenario %q", s.Scenario)
}

// httpLoad sends requests from clients goroutines, one connection each, for d.
func httpLoad(name string, clients int, d time.Duration, request func(worker int, n int64) *http.Request) benchResult {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: loaderRequestTimout}
	return measure(name, clients, d, func(w int, n int64) error {
		resp, err := client.Do(request(w, n))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// remoteLoad runs one load in a loader child process and returns its result.
func (b *bench) remoteLoad(ctx context.Context, spec loadSpec) (benchResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench: find own binary for the loader: %w", err)
	}
	spec.Duration = b.duration
	data, err := json.Marshal(spec)
	if err != nil {
		return benchResult{}, err
	}
	specPath := filepath.Join(b.dir, "loader-"+strconv.Itoa(os.Getpid())+".json")
	if err := os.WriteFile(specPath, data, 0o600); err != nil { // tokens: owner only
		return benchResult{}, err
	}
	defer os.Remove(specPath)
	cmd := exec.CommandContext(ctx, exe, "bench", "load", "--spec", specPath)
	cmd.Env = append(os.Environ(), LoaderEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cpu0 := processCPU()
	if err := cmd.Run(); err != nil {
		return benchResult{}, fmt.Errorf("bench: loader %s: %w: %s", spec.Name, err, strings.TrimSpace(stderr.String()))
	}
	var res benchResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return benchResult{}, fmt.Errorf("bench: loader %s printed %q: %w", spec.Name, stdout.String(), err)
	}
	// Both include the loader's start and exit, a few milliseconds
	// against a load of seconds.
	res.ServerCPU = processCPU() - cpu0
	res.LoaderCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/profilestore/profilestore/eventstore/esdb"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// The rows of the HTTP measurements.
const (
	rowNoop       = "no-op handler GET"
	rowPutOwn     = "PUT displayname, a user per client (durable)"
	rowPutOneUser = "PUT displayname, all clients on one user (durable)"
	rowGetProfile = "GET profile"
)

// benchResult is one row of the bench table.
type benchResult struct {
	// Exported for the loader child, which prints it as JSON.
	Name        string
	Concurrency int
	Ops         int64
	Elapsed     time.Duration
	P50, P99    time.Duration
	Errors      int64
	// ServerCPU is the CPU time the bench process (the server under
	// load) used during an HTTP load, LoaderCPU the loader child's; both
	// are 0 for the in-process measurements.
	ServerCPU, LoaderCPU time.Duration
}

func (r benchResult) perSecond() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// cpuPerOp is the server's and the loader's CPU time per operation, "—"
// when not measured. Less sensitive than throughput to what else runs on
// a shared machine: it says what a request costs, not how much of the
// cores it got.
func (r benchResult) cpuPerOp() string {
	if r.ServerCPU <= 0 || r.Ops == 0 {
		return "—"
	}
	return fmtDur(r.ServerCPU/time.Duration(r.Ops)) + " / " + fmtDur(r.LoaderCPU/time.Duration(r.Ops))
}

// Command is `profilestore bench`; env reads the configuration when it runs.
func Command(env func() (Env, error)) *cobra.Command {
	var duration time.Duration
	var levels string
	var out, dir string
	var rb roomsBench
	var cpuProfile, memProfile, httpRows string
	sealing := true
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure fsync, store appends, HTTP writes and reads against a no-op handler, and write docs/PERFORMANCE.md's table",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := env()
			if err != nil {
				return err
			}
			log := cfg.Log
			log.SetLevel(logrus.WarnLevel)
			if cfg.Store == "esdb" && cfg.ESDBURL == "" {
				return fmt.Errorf("bench: --store esdb needs --esdb-url")
			}
			var conc []int
			for _, f := range strings.Split(levels, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 1 {
					return fmt.Errorf("--concurrency: %q is not a positive number", f)
				}
				conc = append(conc, n)
			}
			// The bench works in a fresh directory of its own, inside --dir
			// when given, and removes only that: a data directory left by an
			// earlier run would be measured as if new (its users already
			// joined and renamed), and whatever else --dir holds is not the
			// bench's to touch.
			if dir, err = os.MkdirTemp(dir, "profilestore-bench-"); err != nil {
				return fmt.Errorf("--dir: %w (give an existing directory the bench may write in)", err)
			}
			defer os.RemoveAll(dir)
			rows, err := parseHTTPRows(httpRows)
			if err != nil {
				return err
			}
			b := &bench{log: log, dir: dir, duration: duration, conc: conc, w: cmd.ErrOrStderr(), rooms: rb,
				store: cfg.Store, esdbURL: cfg.ESDBURL, open: cfg.Open, cpuProfile: cpuProfile, memProfile: memProfile,
				httpRows: rows, sealing: sealing}
			if b.store == "esdb" {
				// The room and rebuild measurements build their data sets
				// through the store; on EventStoreDB they measure the server.
				b.rooms.rooms, b.rooms.restartUsers = 0, 0
			}
			report, err := b.run(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), report)
			if out != "" {
				return writeBenchSection(out, report)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 3*time.Second, "how long each measurement runs")
	cmd.Flags().StringVar(&levels, "concurrency", "1,16,64,256", "comma-separated client counts")
	cmd.Flags().StringVar(&out, "out", "", "write the report into this markdown file (between bench markers)")
	cmd.Flags().IntVar(&rb.rooms, "rooms", 10_000, "rooms the busy user of the rename measurement is in (0 skips the room measurements)")
	cmd.Flags().IntVar(&rb.renames, "renames", 300, "renames measured per user")
	cmd.Flags().IntVar(&rb.historyMembers, "history-members", 100_000, "members of the big room of the history measurement")
	cmd.Flags().IntVar(&rb.historyEntries, "history-entries", 1_000_000, "history entries of the big room")
	cmd.Flags().IntVar(&rb.restartUsers, "restart-users", 1_000_000, "users of the rebuild and restart measurement (0 skips it)")
	cmd.Flags().StringVar(&dir, "dir", "", "directory on the disk to measure: the bench works in a fresh subdirectory of it and removes that when done (default: the system's temporary directory)")
	cmd.Flags().BoolVar(&sealing, "sealing", true, "measure the cost of sealing (pairs of PUT runs with the seal writer off and on; --sealing=false skips them)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write the server's CPU profile during the HTTP measurements to this file (go tool pprof)")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write the server's allocation profile (go tool pprof -sample_index=alloc_space) after the HTTP measurements to this file")
	cmd.Flags().StringVar(&httpRows, "http-rows", strings.Join(httpScenarios, ","), "comma-separated HTTP loads to run: "+strings.Join(httpScenarios, ", "))
	cmd.AddCommand(loadCommand(), scaleCommand(env))
	return cmd
}

type bench struct {
	log      *logrus.Logger
	dir      string
	duration time.Duration
	conc     []int
	w        io.Writer
	rooms    roomsBench
	// store is "bolt" or "esdb" (then esdbURL names the server).
	store   string
	esdbURL string
	open    func(ctx context.Context, dataDir, store string) (*App, error)
	// cpuProfile, if set, receives the server process's CPU profile
	// during the HTTP measurements (the loader runs apart).
	cpuProfile string
	// memProfile, if set, receives the server process's allocation
	// profile after the HTTP measurements (the set-up's allocations
	// included, a small part of seconds of load).
	memProfile string
	// httpRows are the scenarios of the HTTP loads to run.
	httpRows map[string]bool
	// sealing runs the sealing on/off pairs.
	sealing bool
}

// httpScenarios are the HTTP loads, in the order they run at each concurrency.
var httpScenarios = []string{scenarioNoop, scenarioPutOwn, scenarioPutOneUser, scenarioGetProfile}

// parseHTTPRows reads --http-rows.
func parseHTTPRows(list string) (map[string]bool, error) {
	rows := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(httpScenarios, f) {
			return nil, fmt.Errorf("--http-rows: %q is none of %s", f, strings.Join(httpScenarios, ", "))
		}
		rows[f] = true
	}
	return rows, nil
}

func (b *bench) progress(format string, args ...any) { fmt.Fprintf(b.w, format+"\n", args...) }

func (b *bench) run(ctx context.Context) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	var rows []benchResult
	b.progress("fsync baseline…")
	fsyncs, err := bolt.MeasureFsync(b.dir, b.duration)
	if err != nil {
		return "", err
	}
	for _, c := range b.conc {
		b.progress("%s appends, %d writers…", b.store, c)
		r, err := b.storeAppends(ctx, c)
		if err != nil {
			return "", err
		}
		rows = append(rows, r)
	}
	noop, err := b.serveNoop()
	if err != nil {
		return "", err
	}
	defer noop.Close()
	a, srv, tokens, err := b.startService(ctx, maxOf(b.conc))
	if err != nil {
		return "", err
	}
	defer func() { srv.Close(); a.Runner.Close(); a.Close() }()
	if b.cpuProfile != "" {
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return "", err
		}
		defer pprof.StopCPUProfile()
	}
	if b.memProfile != "" {
		defer func() {
			runtime.GC()
			if f, err := os.Create(b.memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	for _, c := range b.conc {
		for _, l := range []loadSpec{
			{Name: rowNoop, Scenario: scenarioNoop, URL: noop.url},
			{Name: rowPutOwn, Scenario: scenarioPutOwn, URL: srv.URL(), Tokens: tokens},
			{Name: rowPutOneUser, Scenario: scenarioPutOneUser, URL: srv.URL(), Tokens: tokens[:1]},
			{Name: rowGetProfile, Scenario: scenarioGetProfile, URL: srv.URL()},
		} {
			if !b.httpRows[l.Scenario] {
				continue
			}
			b.progress("HTTP %s, %d clients (loader process)…", l.Name, c)
			l.Clients = c
			r, err := b.remoteLoad(ctx, l)
			if err != nil {
				return "", err
			}
			rows = append(rows, r)
		}
	}
	report := b.report(fsyncs, rows)
	if b.sealing {
		sealing, err := b.sealingBench(ctx, a, srv, tokens)
		if err != nil {
			return "", err
		}
		report += sealing
	}
	if b.rooms.rooms > 0 {
		roomsReport, err := b.runRooms(ctx, a, srv, b.rooms)
		if err != nil {
			return "", err
		}
		report += roomsReport
	}
	if b.rooms.restartUsers > 0 {
		rebuildReport, err := b.rebuildBench(ctx, b.rooms.restartUsers)
		if err != nil {
			return "", err
		}
		report += rebuildReport
	}
	return report, nil
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func benchUser(i int) string { return fmt.Sprintf("@bench%d:bench.example", i) }

// storeAppends appends one event per call from writers goroutines, each to
// its own stream, to a fresh embedded store or to the EventStoreDB server.
func (b *bench) storeAppends(ctx context.Context, writers int) (benchResult, error) {
	var store eventstore.Store
	var err error
	name := "bolt append (durable)"
	if b.store == "esdb" {
		name = "esdb append"
		store, err = esdb.Open(ctx, b.esdbURL, esdb.Options{Logger: b.log, Namespace: fmt.Sprintf("bench%d-%d-", time.Now().UnixNano(), writers)})
	} else {
		path := filepath.Join(b.dir, fmt.Sprintf("append-%d.db", writers))
		defer os.Remove(path)
		store, err = bolt.Open(path, bolt.Options{Logger: b.log})
	}
	if err != nil {
		return benchResult{}, err
	}
	defer store.Close()
	data := []byte(`{"v":1,"key":"displayname","value":"s1.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`)
	return measure(name, writers, b.duration, func(i int, n int64) error {
		_, err := store.Append(ctx, fmt.Sprintf("profile-@w%d:bench", i), eventstore.Any,
			[]eventstore.EventData{{ID: uuid.New(), Type: "profile.field_set", Data: data}})
		return err
	}), nil
}

// measure runs op from n goroutines for d and collects latencies.
func measure(name string, n int, d time.Duration, op func(worker int, iteration int64) error) benchResult {
	var ops, errs atomic.Int64
	lat := make([][]time.Duration, n)
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for it := int64(0); time.Now().Before(deadline); it++ {
				t0 := time.Now()
				if err := op(w, it); err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				ops.Add(1)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := benchResult{Name: name, Concurrency: n, Ops: ops.Load(), Elapsed: elapsed, Errors: errs.Load()}
	if len(all) > 0 {
		r.P50 = all[len(all)/2]
		r.P99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return r
}

type noopServer struct {
	url string
	srv *http.Server
}

func (n *noopServer) Close() { n.srv.Close() }

// serveNoop is the baseline: the same net/http stack answering {} at once.
func (b *bench) serveNoop() (*noopServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	})}
	go srv.Serve(ln)
	return &noopServer{url: "http://" + ln.Addr().String(), srv: srv}, nil
}

// startService runs the real service on the embedded store, rate limits
// off, with a token and a profile for each of n bench users.
func (b *bench) startService(ctx context.Context, n int) (*App, *pshttp.Server, []string, error) {
	a, err := b.open(ctx, filepath.Join(b.dir, "service"), b.store)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := a.Runner.Start(ctx, nil); err != nil {
		return nil, nil, nil, err
	}
	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = pshttp.IssueToken(a.TokensFile, domain.UserID(benchUser(i)), false, "bench"); err != nil {
			return nil, nil, nil, err
		}
		if _, err := a.Profiles.SetField(ctx, domain.SetField{User: domain.UserID(benchUser(i)), Actor: domain.ServerActor, Key: "displayname",
			Value: []byte(fmt.Sprintf("%q", "Bench user "+strconv.Itoa(i))), Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
			return nil, nil, nil, err
		}
	}
	srv, err := a.Server()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := srv.Open(); err != nil {
		return nil, nil, nil, err
	}
	return a, srv, tokens, nil
}

func (b *bench) report(fsyncs float64, rows []benchResult) string {
	var s strings.Builder
	where := "the embedded store"
	if b.store == "esdb" {
		where = "EventStoreDB at " + b.esdbURL
	}
	fmt.Fprintf(&s, "Store: %s.\n\n", where)
	rowsFlag := ""
	if len(b.httpRows) < len(httpScenarios) {
		var run []string
		for _, sc := range httpScenarios {
			if b.httpRows[sc] {
				run = append(run, sc)
			}
		}
		rowsFlag = " --http-rows " + strings.Join(run, ",")
	}
	fmt.Fprintf(&s, "Measured %s on %s; command: `go run ./cmd/profilestore bench --store %s --duration %s --concurrency %s --rooms %d --renames %d --history-members %d --history-entries %d --restart-users %d%s`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machineDescription(), b.store, b.duration, joinInts(b.conc), b.rooms.rooms, b.rooms.renames, b.rooms.historyMembers, b.rooms.historyEntries, b.rooms.restartUsers, rowsFlag)
	s.WriteString("HTTP clients run in a separate loader process (the bench's own binary, re-executed), against the service and a no-op handler served by the bench process on the same net/http stack.\n\n")
	fmt.Fprintf(&s, "Raw fsync baseline of the data disk (4 KiB write + fdatasync, one at a time): **%.0f/s**.\n\n", fsyncs)
	s.WriteString("CPU per request is the CPU time (user and system) the bench process (the server) and the loader child used during the load, over the requests answered: what a request costs each side, whatever else shared the cores.\n\n")
	s.WriteString("| what | clients | ops/s | p50 | p99 | CPU per request, server / loader | errors |\n|---|---:|---:|---:|---:|---:|---:|\n")
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %d | %.0f | %s | %s | %s | %d |\n", r.Name, r.Concurrency, r.perSecond(), fmtDur(r.P50), fmtDur(r.P99), r.cpuPerOp(), r.Errors)
	}
	byKey := map[string]benchResult{}
	for _, r := range rows {
		byKey[r.Name+"/"+strconv.Itoa(r.Concurrency)] = r
	}
	s.WriteString("\nRatios at each concurrency (issue 15's targets at 64 clients: PUT over one user per client ≥ 25% of no-op, " +
		"all clients on one user ≥ 50% of one user per client, GET profile ≥ 60% of no-op).\n\n")
	s.WriteString("| clients | PUT, a user per client / no-op | PUT, one user / a user per client | GET profile / no-op |\n|---:|---:|---:|---:|\n")
	pct := func(a, b benchResult) string {
		if a.Elapsed == 0 || b.Ops == 0 { // a row not run
			return "—"
		}
		return fmt.Sprintf("%.0f%%", 100*a.perSecond()/b.perSecond())
	}
	for _, c := range b.conc {
		at := func(name string) benchResult { return byKey[name+"/"+strconv.Itoa(c)] }
		fmt.Fprintf(&s, "| %d | %s | %s | %s |\n", c, pct(at(rowPutOwn), at(rowNoop)), pct(at(rowPutOneUser), at(rowPutOwn)), pct(at(rowGetProfile), at(rowNoop)))
	}
	return s.String()
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

// machineDescription names the CPU, cores, kernel and Go version.
func machineDescription() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	kernel := ""
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		kernel = ", Linux " + string(bytes.TrimSpace(out))
	}
	return fmt.Sprintf("%s, %d cores%s, %s", cpu, runtime.NumCPU(), kernel, runtime.Version())
}

const benchBegin, benchEnd = "<!-- bench:begin -->", "<!-- bench:end -->"

// writeBenchSection replaces the text between the bench markers of the file
// (appending the markers if missing), keeping the rest of the document.
func writeBenchSection(path, report string) error {
	return writeSection(path, benchBegin, benchEnd, report)
}

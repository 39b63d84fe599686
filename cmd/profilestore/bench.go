package main

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

// benchResult is one row of the bench table.
type benchResult struct {
	Name        string
	Concurrency int
	Ops         int64
	Elapsed     time.Duration
	P50, P99    time.Duration
	Errors      int64
}

func (r benchResult) perSecond() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

func benchCommand(load loader) *cobra.Command {
	var duration time.Duration
	var levels string
	var out, dir string
	var rb roomsBench
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure fsync, store appends, HTTP writes and reads against a no-op handler, and write docs/PERFORMANCE.md's table",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
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
			if dir == "" {
				if dir, err = os.MkdirTemp("", "profilestore-bench-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			b := &bench{log: log, dir: dir, duration: duration, conc: conc, w: cmd.ErrOrStderr(), rooms: rb,
				store: cfg.Store, esdbURL: cfg.ESDBURL}
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
	cmd.Flags().IntVar(&rb.restartUsers, "restart-users", 1_000_000, "users of the rebuild and snapshot-restart measurement (0 skips it)")
	cmd.Flags().StringVar(&dir, "dir", "", "directory on the disk to measure (default: a temporary directory)")
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
	defer func() { srv.Close(); a.runner.Close(); a.close() }()
	for _, c := range b.conc {
		b.progress("HTTP no-op GET, %d clients…", c)
		rows = append(rows, b.httpLoad("no-op handler GET", c, func(i int, n int64) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, noop.url+"/noop", nil)
			return req
		}))
		b.progress("HTTP PUT displayname, %d clients…", c)
		rows = append(rows, b.httpLoad("PUT displayname (durable)", c, func(i int, n int64) *http.Request {
			body := fmt.Sprintf(`{"displayname":"Bench user %d change %d"}`, i, n)
			req, _ := http.NewRequest(http.MethodPut, srv.URL()+"/_matrix/client/v3/profile/"+benchUser(i)+"/displayname", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tokens[i])
			return req
		}))
		b.progress("HTTP GET profile, %d clients…", c)
		rows = append(rows, b.httpLoad("GET profile", c, func(i int, n int64) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/_matrix/client/v3/profile/"+benchUser(i), nil)
			return req
		}))
	}
	report := b.report(fsyncs, rows)
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

func (b *bench) httpLoad(name string, clients int, request func(worker int, n int64) *http.Request) benchResult {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return measure(name, clients, b.duration, func(w int, n int64) error {
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
func (b *bench) startService(ctx context.Context, n int) (*app, *pshttp.Server, []string, error) {
	cfg := defaultConfig()
	cfg.DataDir = filepath.Join(b.dir, "service")
	cfg.Listen = "127.0.0.1:0"
	cfg.RateLimit.WritesPerSecond = 0
	cfg.Store, cfg.ESDBURL = b.store, b.esdbURL
	a, err := openApp(ctx, cfg, b.log)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := a.runner.Start(ctx, nil); err != nil {
		return nil, nil, nil, err
	}
	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = pshttp.IssueToken(filepath.Join(cfg.DataDir, "tokens.yaml"), domain.UserID(benchUser(i)), false, "bench"); err != nil {
			return nil, nil, nil, err
		}
		if _, err := a.profiles.SetField(ctx, domain.SetField{User: domain.UserID(benchUser(i)), Actor: domain.ServerActor, Key: "displayname",
			Value: []byte(fmt.Sprintf("%q", "Bench user "+strconv.Itoa(i))), Meta: domain.Metadata{OccurredAt: time.Now()}}, nil); err != nil {
			return nil, nil, nil, err
		}
	}
	auth, err := a.authenticator()
	if err != nil {
		return nil, nil, nil, err
	}
	srv, err := a.server(auth)
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
	fmt.Fprintf(&s, "Measured %s on %s; command: `go run ./cmd/profilestore bench --store %s --duration %s --concurrency %s --rooms %d --renames %d --history-members %d --history-entries %d --restart-users %d`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machineDescription(), b.store, b.duration, joinInts(b.conc), b.rooms.rooms, b.rooms.renames, b.rooms.historyMembers, b.rooms.historyEntries, b.rooms.restartUsers)
	fmt.Fprintf(&s, "Raw fsync baseline of the data disk (4 KiB write + fdatasync, one at a time): **%.0f/s**.\n\n", fsyncs)
	s.WriteString("| what | clients | ops/s | p50 | p99 | errors |\n|---|---:|---:|---:|---:|---:|\n")
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %d | %.0f | %s | %s | %d |\n", r.Name, r.Concurrency, r.perSecond(), fmtDur(r.P50), fmtDur(r.P99), r.Errors)
	}
	byKey := map[string]benchResult{}
	for _, r := range rows {
		byKey[r.Name+"/"+strconv.Itoa(r.Concurrency)] = r
	}
	s.WriteString("\nRatios at each concurrency: GET profile / no-op handler.\n\n")
	for _, c := range b.conc {
		g, n := byKey["GET profile/"+strconv.Itoa(c)], byKey["no-op handler GET/"+strconv.Itoa(c)]
		if n.Ops > 0 {
			fmt.Fprintf(&s, "- %d clients: %.0f%%\n", c, 100*g.perSecond()/n.perSecond())
		}
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
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	section := benchBegin + "\n" + report + benchEnd
	if i, j := strings.Index(doc, benchBegin), strings.Index(doc, benchEnd); i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(benchEnd):]
	} else {
		doc += "\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
)

// scaleSpec is one synthetic homeserver: users, each in rooms of a pool,
// each renamed a few times, and one big room.
type scaleSpec struct {
	users, roomsPerUser, pool, renames, bigRoom int
}

func (s scaleSpec) events() int {
	return s.users*(1+s.roomsPerUser+s.renames) + s.bigRoom
}

func (s scaleSpec) tenth() scaleSpec {
	return scaleSpec{users: s.users / 10, roomsPerUser: s.roomsPerUser, pool: s.pool / 10, renames: s.renames, bigRoom: s.bigRoom / 10}
}

func scaleUser(i int) domain.UserID { return domain.UserID(fmt.Sprintf("@s%d:scale.example", i)) }
func scaleRoom(i int) domain.RoomID { return domain.RoomID(fmt.Sprintf("!r%d:scale.example", i)) }

const scaleBigRoom = domain.RoomID("!big:scale.example")

// scaleCommand is `profilestore bench scale`.
func scaleCommand(env func() (Env, error)) *cobra.Command {
	spec := scaleSpec{}
	var dir, out string
	var skipFull bool
	var profile string
	var reuse bool
	var reads float64
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Write a synthetic homeserver into the store (no HTTP) at full size and a tenth, and measure memory, restart, rebuild, view bytes and read latency of a served process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := env()
			if err != nil {
				return err
			}
			e.Log.SetLevel(logrus.WarnLevel)
			if dir == "" {
				if dir, err = os.MkdirTemp("", "profilestore-scale-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			s := &scaleBench{env: e, exe: exe, w: cmd.ErrOrStderr(), rebuildProfile: profile, reuse: reuse, reads: reads}
			sizes := []scaleSpec{spec.tenth()}
			if !skipFull {
				sizes = append(sizes, spec)
			}
			var results []scaleResult
			for _, sp := range sizes {
				r, err := s.run(cmd.Context(), filepath.Join(dir, fmt.Sprintf("scale-%d", sp.users)), sp)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			report := scaleReport(results)
			fmt.Fprint(cmd.OutOrStdout(), report)
			if out != "" {
				return writeSection(out, scaleBegin, scaleEnd, report)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&spec.users, "users", 1_000_000, "users at full size (the tenth size has a tenth of users, pool and big room)")
	cmd.Flags().IntVar(&spec.roomsPerUser, "rooms-per-user", 10, "rooms each user joins")
	cmd.Flags().IntVar(&spec.pool, "room-pool", 100_000, "rooms at full size")
	cmd.Flags().IntVar(&spec.renames, "renames", 2, "global renames of each user after the joins")
	cmd.Flags().IntVar(&spec.bigRoom, "big-room", 100_000, "members of the one big room at full size")
	cmd.Flags().StringVar(&profile, "rebuild-cpuprofile", "", "write a CPU profile of each rebuild to this file")
	cmd.Flags().Float64Var(&reads, "reads", 1, "share of the reads of each kind (1: 4,000 profile reads, 2,000 of most others)")
	cmd.Flags().BoolVar(&reuse, "reuse", false, "measure again, from the restart on, the data directories an earlier run left in --dir")
	cmd.Flags().BoolVar(&skipFull, "tenth-only", false, "measure the tenth size only")
	cmd.Flags().StringVar(&dir, "dir", "", "directory on the disk to measure (default: a temporary directory)")
	cmd.Flags().StringVar(&out, "out", "", "write the report into this markdown file (between bench-scale markers)")
	return cmd
}

type scaleBench struct {
	// rebuildProfile, if set, is a file for a CPU profile of the rebuild.
	rebuildProfile string
	// reuse measures a data directory an earlier run left (--dir) again,
	// from the restart on.
	reuse bool
	// reads scales the number of reads of each kind.
	reads float64
	env   Env
	exe   string
	w     io.Writer
}

type scaleResult struct {
	spec                          scaleSpec
	events                        int
	write                         time.Duration
	logBytes, viewBytes           int64
	scanRate, rebuildRate         float64
	rebuildCPU                    time.Duration
	ready                         time.Duration
	rssRestart, rssReads, rssPeak int64
	reads                         []readResult
	// reused: an earlier run's data directory, measured from the restart
	// on (no events written, scanned or rebuilt here).
	reused bool
	// memory is the served process's /metrics after the reads, each
	// metric summed over its labels: where the anonymous memory is.
	memory map[string]float64
}

type readResult struct {
	name     string
	n        int
	p50, p99 time.Duration
	failures int
}

func (s *scaleBench) progress(format string, args ...any) {
	fmt.Fprintf(s.w, format+"\n", args...)
}

func (s *scaleBench) run(ctx context.Context, dataDir string, sp scaleSpec) (scaleResult, error) {
	res := scaleResult{spec: sp}
	if s.reuse {
		if _, err := os.Stat(filepath.Join(dataDir, "views")); err == nil {
			s.progress("scale %d users: reusing %s (no write, scan or rebuild)", sp.users, dataDir)
			res.reused = true
			res.logBytes = fileBytes(filepath.Join(dataDir, "events.db"))
			res.viewBytes = dirBytes(filepath.Join(dataDir, "views"))
			return s.serveAndRead(dataDir, sp, res)
		}
	}
	if err := os.RemoveAll(dataDir); err != nil {
		return res, err
	}
	a, err := s.env.Open(ctx, dataDir, "bolt")
	if err != nil {
		return res, err
	}
	s.progress("scale %d users: writing about %d events into the store…", sp.users, sp.events())
	t0 := time.Now()
	if err := writeSynthetic(ctx, a, sp, func(phase string) {
		s.progress("  writing the %s (%s)", phase, time.Since(t0).Round(time.Second))
	}); err != nil {
		a.Close()
		return res, err
	}
	res.write = time.Since(t0)
	head, err := a.Store.Head(ctx)
	if err != nil {
		a.Close()
		return res, err
	}
	// The raw scan rate of the log, the rebuild's ceiling.
	t0 = time.Now()
	for after := eventstore.Start; after.Before(head); {
		recs, err := a.Store.ReadAll(ctx, after, 4096)
		if err != nil {
			a.Close()
			return res, err
		}
		if len(recs) == 0 {
			break
		}
		res.events += len(recs)
		after = recs[len(recs)-1].Position
	}
	res.scanRate = float64(res.events) / time.Since(t0).Seconds()
	s.progress("  rebuilding the views from %d events…", res.events)
	t0 = time.Now()
	if s.rebuildProfile != "" {
		f, err := os.Create(s.rebuildProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	cpu0 := cpuTime()
	err = a.RebuildViews(ctx)
	res.rebuildCPU = cpuTime() - cpu0
	if s.rebuildProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		a.Close()
		return res, err
	}
	res.rebuildRate = float64(res.events) / time.Since(t0).Seconds()
	a.Close()
	res.logBytes = fileBytes(filepath.Join(dataDir, "events.db"))
	res.viewBytes = dirBytes(filepath.Join(dataDir, "views"))
	return s.serveAndRead(dataDir, sp, res)
}

// serveAndRead starts serve on the data directory as a separate process and
// reads from it.
func (s *scaleBench) serveAndRead(dataDir string, sp scaleSpec, res scaleResult) (scaleResult, error) {
	token, err := pshttp.IssueToken(filepath.Join(dataDir, "tokens.yaml"), "@admin:scale.example", true, "bench scale")
	if err != nil {
		return res, err
	}
	s.progress("  restarting a served process and reading…")
	srv, err := startServe(s.exe, dataDir)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	res.ready = srv.ready
	res.rssRestart = srv.rssAnon()
	res.reads = readWorkload(srv.url, token, sp, s.reads)
	res.rssReads = srv.rssAnon()
	res.rssPeak = srv.rssPeakAnon()
	if res.memory, err = scrapeMetrics(srv.url + "/metrics"); err != nil {
		return res, err
	}
	return res, nil
}

// scrapeMetrics reads a Prometheus text page into each metric's value,
// summed over its labels.
func scrapeMetrics(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		out[name] += v
	}
	return out, sc.Err()
}

// writeSynthetic writes the data set straight into the store, sealed as
// the services seal it, in three phases so that each stream gets its
// events in one append: every user's first name; every room's joins (the
// big room's in pages of 1000); every user's renames, which fan out into
// their rooms' histories.
func writeSynthetic(ctx context.Context, a *App, sp scaleSpec, progress func(string)) error {
	rooms := make([][]int32, sp.pool)
	for i := range sp.users {
		rng := rand.New(rand.NewPCG(uint64(i), 99))
		for range sp.roomsPerUser {
			r := rng.IntN(sp.pool)
			rooms[r] = append(rooms[r], int32(i))
		}
	}
	name := func(i, r int) string {
		if r > 0 {
			return fmt.Sprintf("Scale user %d r%d", i, r)
		}
		return fmt.Sprintf("Scale user %d", i)
	}
	meta := func() domain.Metadata { return domain.Metadata{OccurredAt: time.Now(), Source: "bench"} }
	rename := func(i, r int) domain.Event {
		v, _ := json.Marshal(name(i, r))
		return domain.Event{Type: domain.TypeFieldSet, User: scaleUser(i), Key: domain.KeyDisplayName, Value: v, PropagateTo: domain.PropagateUnchanged, Meta: meta()}
	}
	join := func(room domain.RoomID, i int) domain.Event {
		n := name(i, 0)
		return domain.Event{Type: domain.TypeMemberJoined, Room: room, User: scaleUser(i), Membership: domain.MembershipJoin, DisplayName: &n, Meta: meta()}
	}
	appendAll := func(stream string, evs []domain.Event) error {
		data := make([]eventstore.EventData, len(evs))
		for j := range evs {
			var err error
			if data[j], err = domain.Encode(ctx, a.Sealer, &evs[j]); err != nil {
				return err
			}
		}
		_, err := a.Store.Append(ctx, stream, eventstore.Any, data)
		return err
	}
	// parallel runs job(0..n-1) on 64 writers, whose appends the store
	// commits together.
	parallel := func(n int, job func(i int) error) error {
		var next atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for firstErr.Load() == nil {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					if err := job(i); err != nil {
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		return nil
	}
	progress("names")
	if err := parallel(sp.users, func(i int) error {
		return appendAll(domain.ProfileStream(scaleUser(i)), []domain.Event{rename(i, 0)})
	}); err != nil {
		return err
	}
	progress("joins")
	if err := parallel(sp.pool, func(r int) error {
		evs := make([]domain.Event, 0, len(rooms[r]))
		for _, i := range rooms[r] {
			evs = append(evs, join(scaleRoom(r), int(i)))
		}
		return appendAll(domain.RoomStream(scaleRoom(r)), evs)
	}); err != nil {
		return err
	}
	if err := parallel((sp.bigRoom+999)/1000, func(page int) error {
		var evs []domain.Event
		for i := page * 1000; i < min((page+1)*1000, sp.bigRoom); i++ {
			evs = append(evs, join(scaleBigRoom, i))
		}
		return appendAll(domain.RoomStream(scaleBigRoom), evs)
	}); err != nil {
		return err
	}
	progress("renames")
	return parallel(sp.users, func(i int) error {
		evs := make([]domain.Event, 0, sp.renames)
		for r := 1; r <= sp.renames; r++ {
			evs = append(evs, rename(i, r))
		}
		return appendAll(domain.ProfileStream(scaleUser(i)), evs)
	})
}

func fileBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// served is a `profilestore serve` child process.
type served struct {
	cmd   *exec.Cmd
	url   string
	ready time.Duration
}

// startServe starts serve on dataDir on a free loopback port and waits
// for /ready; ready is the time from the process start to the first 200.
func startServe(exe, dataDir string) (*served, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(exe, "serve", "--data-dir", dataDir, "--listen", addr)
	// LoaderEnv makes a test binary standing in for profilestore run the
	// command line (see the bench's loader); the real binary ignores it.
	cmd.Env = append(os.Environ(), "PROFILESTORE_LOG_LEVEL=warn", LoaderEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &served{cmd: cmd, url: "http://" + addr}
	client := &http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get(s.url + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.ready = time.Since(t0)
				return s, nil
			}
		}
		if time.Since(t0) > 10*time.Minute {
			s.stop()
			return nil, fmt.Errorf("serve was not ready after 10 minutes: %s", stderr.String())
		}
		if cmd.ProcessState != nil {
			return nil, fmt.Errorf("serve ended: %s", stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *served) status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// rssAnon is the process's anonymous resident memory: its heap and
// stacks, not the mmap'd files the kernel may drop.
func (s *served) rssAnon() int64 { return s.status("RssAnon") }

// rssPeakAnon is the peak resident set (VmHWM: the kernel keeps no peak of
// the anonymous part alone).
func (s *served) rssPeakAnon() int64 { return s.status("VmHWM") }

func (s *served) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
}

// readWorkload reads from 8 clients: profiles, room members, first history
// pages, directory and names searches of random users and rooms, each
// request timed from this process. The first history pages are read again
// by one client: 8 clients keep both cores busy, so their latencies are
// mostly each request's wait for a core behind the 7 others (a page costs
// the server about 0.6 ms of CPU), and one client's are the page's own.
func readWorkload(base, token string, sp scaleSpec, share float64) []readResult {
	type probe struct {
		name string
		n    int
		req  func(rng *rand.Rand) (*http.Request, error)
		// clients is how many read at once (0: 8).
		clients int
	}
	authed := func(r *http.Request, err error) (*http.Request, error) {
		if err == nil {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return r, err
	}
	// The first history page of a room, newest first.
	history := func(room domain.RoomID) (*http.Request, error) {
		return authed(http.NewRequest("GET", base+"/_profilestore/v1/rooms/"+url.PathEscape(string(room))+"/history?dir=b&limit=100", nil))
	}
	poolHistory := func(rng *rand.Rand) (*http.Request, error) { return history(scaleRoom(rng.IntN(sp.pool))) }
	bigHistory := func(*rand.Rand) (*http.Request, error) { return history(scaleBigRoom) }
	probes := []probe{
		{"GET profile", 4000, func(rng *rand.Rand) (*http.Request, error) {
			return http.NewRequest("GET", base+"/_matrix/client/v3/profile/"+url.PathEscape(string(scaleUser(rng.IntN(sp.users)))), nil)
		}, 0},
		{"room members (a pool room)", 2000, func(rng *rand.Rand) (*http.Request, error) {
			return authed(http.NewRequest("GET", base+"/_profilestore/v1/rooms/"+url.PathEscape(string(scaleRoom(rng.IntN(sp.pool))))+"/members", nil))
		}, 0},
		{"first history page (a pool room, 100 entries)", 2000, poolHistory, 0},
		{"first history page (the big room, 100 entries)", 1000, bigHistory, 0},
		{"first history page (a pool room, 100 entries), one client", 2000, poolHistory, 1},
		{"first history page (the big room, 100 entries), one client", 1000, bigHistory, 1},
		{"user directory search", 2000, func(rng *rand.Rand) (*http.Request, error) {
			body := fmt.Sprintf(`{"search_term":"Scale user %d","limit":10}`, rng.IntN(sp.users))
			return authed(http.NewRequest("POST", base+"/_matrix/client/v3/user_directory/search", strings.NewReader(body)))
		}, 0},
		{"names search", 2000, func(rng *rand.Rand) (*http.Request, error) {
			q := url.QueryEscape(fmt.Sprintf("Scale user %d r%d", rng.IntN(sp.users), 1+rng.IntN(max(sp.renames, 1))))
			return authed(http.NewRequest("GET", base+"/_profilestore/v1/names/search?q="+q, nil))
		}, 0},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	var out []readResult
	for _, p := range probes {
		p.n = max(int(float64(p.n)*share), 10)
		lat := make([]time.Duration, p.n)
		var next atomic.Int64
		var failures atomic.Int64
		var wg sync.WaitGroup
		clients := p.clients
		if clients == 0 {
			clients = 8
		}
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 5))
				for {
					i := next.Add(1) - 1
					if i >= int64(p.n) {
						return
					}
					req, err := p.req(rng)
					if err != nil {
						failures.Add(1)
						continue
					}
					t0 := time.Now()
					resp, err := client.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							failures.Add(1)
						}
					} else {
						failures.Add(1)
					}
					lat[i] = time.Since(t0)
				}
			}()
		}
		wg.Wait()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		out = append(out, readResult{name: p.name, n: p.n, p50: lat[p.n/2], p99: lat[p.n*99/100], failures: int(failures.Load())})
	}
	return out
}

const scaleBegin, scaleEnd = "<!-- bench-scale:begin -->", "<!-- bench-scale:end -->"

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func scaleReport(rs []scaleResult) string {
	var s strings.Builder
	fmt.Fprintf(&s, "\n### Scale: a synthetic homeserver on disk\n\nMachine: %s. Command: `profilestore bench scale`. ", machineDescription())
	s.WriteString("Each size: users with a display name, each joining rooms of a pool and then renamed; one big room. ")
	s.WriteString("Written straight into the store (no HTTP; sealed as the services seal), views rebuilt, then `profilestore serve` started as a separate process and read over HTTP by 8 clients in this process (and the first history pages again by one client: with 8, a latency is mostly the wait for a core behind the other 7).\n\n")
	s.WriteString("| | " + joinCols(rs, func(r scaleResult) string {
		return fmt.Sprintf("%d users × %d rooms of %d, %d renames, big room %d", r.spec.users, r.spec.roomsPerUser, r.spec.pool, r.spec.renames, r.spec.bigRoom)
	}) + " |\n|---|" + strings.Repeat("---:|", len(rs)) + "\n")
	row := func(name string, f func(r scaleResult) string) {
		s.WriteString("| " + name + " | " + joinCols(rs, f) + " |\n")
	}
	// written is a row of what only a run that wrote the data set knows.
	written := func(f func(r scaleResult) string) func(r scaleResult) string {
		return func(r scaleResult) string {
			if r.reused {
				return "— (reused)"
			}
			return f(r)
		}
	}
	row("events in the log", written(func(r scaleResult) string { return strconv.Itoa(r.events) }))
	row("writing them (sealed, straight into the store, 64 writers)", written(func(r scaleResult) string { return r.write.Round(time.Second).String() }))
	row("log bytes (events.db)", func(r scaleResult) string { return mib(r.logBytes) })
	row("view bytes (views/)", func(r scaleResult) string { return mib(r.viewBytes) })
	row("view bytes per event", written(func(r scaleResult) string {
		return fmt.Sprintf("%.0f B", float64(r.viewBytes)/float64(max(r.events, 1)))
	}))
	row("view bytes / log bytes", func(r scaleResult) string {
		return fmt.Sprintf("%.2fx", float64(r.viewBytes)/float64(max(r.logBytes, 1)))
	})
	row("raw scan of the log", written(func(r scaleResult) string { return fmt.Sprintf("%.0f events/s", r.scanRate) }))
	row("rebuild into a fresh view store", written(func(r scaleResult) string {
		return fmt.Sprintf("%.0f events/s (%.0f%% of the scan)", r.rebuildRate, 100*r.rebuildRate/r.scanRate)
	}))
	row("rebuild CPU time (user + system, all cores)", written(func(r scaleResult) string {
		return fmt.Sprintf("%s (%.0f events per CPU second)", r.rebuildCPU.Round(time.Millisecond), float64(r.events)/r.rebuildCPU.Seconds())
	}))
	row("process start to /ready", func(r scaleResult) string { return r.ready.Round(time.Millisecond).String() })
	row("RssAnon after restart", func(r scaleResult) string { return mib(r.rssRestart) })
	row("RssAnon after the reads", func(r scaleResult) string { return mib(r.rssReads) })
	row("peak RSS (VmHWM, files included)", func(r scaleResult) string { return mib(r.rssPeak) })
	row("after the reads: Go heap in use / Go memory from the OS", func(r scaleResult) string {
		return mib(int64(r.memory["go_memstats_heap_inuse_bytes"])) + " / " + mib(int64(r.memory["go_memstats_sys_bytes"]))
	})
	row("after the reads: block cache / open tables' readers (tables) / memtables", func(r scaleResult) string {
		return fmt.Sprintf("%s / %s (%.0f) / %s", mib(int64(r.memory["profilestore_view_store_block_cache_bytes"])),
			mib(int64(r.memory["profilestore_view_store_table_readers_bytes"])), r.memory["profilestore_view_store_open_tables"],
			mib(int64(r.memory["profilestore_view_store_memtable_bytes"])))
	})
	row("after the reads: objects in the view caches / command caches", func(r scaleResult) string {
		return fmt.Sprintf("%.0f / %.0f", r.memory["profilestore_view_cache_entries"], r.memory["profilestore_command_cache_entries"])
	})
	if len(rs) > 0 {
		for i, rd := range rs[0].reads {
			row(rd.name+" p50 / p99", func(r scaleResult) string {
				if i >= len(r.reads) {
					return ""
				}
				x := r.reads[i]
				cell := fmt.Sprintf("%s / %s", fmtDur(x.p50), fmtDur(x.p99))
				if x.failures > 0 {
					cell += fmt.Sprintf(" (%d of %d failed)", x.failures, x.n)
				}
				return cell
			})
		}
	}
	if len(rs) == 2 {
		a, b := rs[0], rs[1]
		fmt.Fprintf(&s, "\nRssAnon full / tenth after the reads: %.2fx.\n", float64(b.rssReads)/float64(max(a.rssReads, 1)))
	}
	return s.String()
}

func joinCols(rs []scaleResult, f func(scaleResult) string) string {
	cols := make([]string, len(rs))
	for i, r := range rs {
		cols[i] = f(r)
	}
	return strings.Join(cols, " | ")
}

// writeSection replaces the text between begin and end of the file
// (appending them if missing), keeping the rest of the document.
func writeSection(path, begin, end, report string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	section := begin + "\n" + report + end
	if i, j := strings.Index(doc, begin), strings.Index(doc, end); i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(end):]
	} else {
		doc += "\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profilestore/profilestore/appservice"
	"github.com/profilestore/profilestore/domain"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/schollz/progressbar/v3"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// BackfillConfig configures the import of a homeserver's past history
// (docs/APPSERVICE.md, "Backfill").
type BackfillConfig struct {
	// Users are local users whose rooms are read, besides the users
	// profilestore already knows.
	Users []string `yaml:"users"`
	// RequestsPerSecond bounds the calls to the homeserver (default 10).
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// PageSize is the events asked for per call (default 100, at most 1000).
	PageSize int `yaml:"page_size"`
	// RenameWindow is how far apart in time the member events of one global
	// rename may lie in different rooms (default 30m).
	RenameWindow time.Duration `yaml:"rename_window"`
	// Checkpoint is the backfill's state file (default <data_dir>/backfill.db).
	Checkpoint string `yaml:"checkpoint"`
	// SynapseAdminTokenFile holds a Synapse server admin's access token:
	// set, the backfill reads every room through Synapse's admin API
	// instead of the client-server API.
	SynapseAdminTokenFile string `yaml:"synapse_admin_token_file"`
}

func (c *BackfillConfig) validate() error {
	switch {
	case c.RequestsPerSecond < 0:
		return errors.New("config: appservice.backfill.requests_per_second cannot be negative")
	case c.PageSize < 0 || c.PageSize > 1000:
		return errors.New("config: appservice.backfill.page_size must be between 1 and 1000")
	case c.RenameWindow < 0:
		return errors.New("config: appservice.backfill.rename_window cannot be negative")
	}
	for _, u := range c.Users {
		if _, err := domain.ParseHistoricalUserID(u); err != nil {
			return fmt.Errorf("config: appservice.backfill.users: %q is not a user id", u)
		}
	}
	return nil
}

func (c *BackfillConfig) checkpointPath(dataDir string) string {
	if c.Checkpoint != "" {
		return c.Checkpoint
	}
	return filepath.Join(dataDir, "backfill.db")
}

// backfillRun is a backfill wired to the app, the homeserver and the
// checkpoint: what the command and the admin route run.
type backfillRun struct {
	b  *appservice.Backfill
	cp *appservice.BackfillCheckpoint
}

// newBackfill wires a backfill; users are added to the configured ones.
func (a *app) newBackfill(users []string, metrics *appservice.BackfillMetrics, progress func(appservice.BackfillProgress)) (*backfillRun, error) {
	ac := a.cfg.Appservice
	bc := ac.Backfill
	if err := bc.validate(); err != nil {
		return nil, err
	}
	reg, err := appservice.LoadRegistration(ac.registrationPath(a.cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("appservice: %w (a backfill acts as profilestore's appservice: create it with profilestore appservice register)", err)
	}
	hsURL := ac.HomeserverURL
	if hsURL == "" {
		hsURL = a.cfg.Auth.HomeserverURL
	}
	if hsURL == "" {
		return nil, errors.New("config: a backfill needs the homeserver: set appservice.homeserver_url (or auth.homeserver_url)")
	}
	rps := bc.RequestsPerSecond
	if rps == 0 {
		rps = 10
	}
	token := reg.ASToken
	if bc.SynapseAdminTokenFile != "" {
		raw, err := os.ReadFile(bc.SynapseAdminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("appservice.backfill.synapse_admin_token_file: %w", err)
		}
		if token = strings.TrimSpace(string(raw)); token == "" {
			return nil, fmt.Errorf("appservice.backfill.synapse_admin_token_file: %s is empty (it holds a Synapse admin's access token)", bc.SynapseAdminTokenFile)
		}
	}
	client := appservice.NewHomeserverClient(hsURL, token, rps, nil)
	client.OnRateLimited = func(wait time.Duration) {
		metrics.RateLimited()
		a.log.WithField("wait", wait.String()).Info("backfill: the homeserver asked to slow down")
	}
	var ids []domain.UserID
	for _, u := range append(append([]string(nil), bc.Users...), users...) {
		id, err := domain.ParseHistoricalUserID(u)
		if err != nil {
			return nil, fmt.Errorf("%q is not a user id", u)
		}
		ids = append(ids, id)
	}
	var source appservice.HistorySource = &appservice.ClientHistory{Client: client, Users: ids, Known: a.ProfileView.UsersAfter, Local: reg.MatchesUser}
	if bc.SynapseAdminTokenFile != "" {
		source = &appservice.SynapseAdminHistory{Client: client}
	}
	cp, err := appservice.OpenBackfillCheckpoint(bc.checkpointPath(a.cfg.DataDir))
	if err != nil {
		return nil, err
	}
	b := appservice.NewBackfill(appservice.BackfillOptions{Registration: reg, Profiles: a.Profiles, Rooms: a.Rooms, Source: source,
		Checkpoint: cp, PageSize: bc.PageSize, RenameWindow: bc.RenameWindow, Progress: progress, Metrics: metrics, Logger: a.log,
		Homeserver: appservice.NewHomeserverProfiles(hsURL, reg.ASToken, nil, ac.ProfileCacheTTL)})
	return &backfillRun{b: b, cp: cp}, nil
}

func (r *backfillRun) run(ctx context.Context) (appservice.BackfillReport, error) {
	defer r.cp.Close()
	return r.b.Run(ctx)
}

func backfillCommand(load loader, f *cliFlags) *cobra.Command {
	var users []string
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Import the homeserver's past room history (stop the server first, or use the admin route)",
		Long: `Read the past membership and profile history of the homeserver's rooms
through the client-server API, as profilestore's appservice acting as each
room's local members (user_id=), and record it where it happened in each
room's history (docs/APPSERVICE.md, "Backfill"). The rooms are those of the
users profilestore knows, of appservice.backfill.users and of --user. With
appservice.backfill.synapse_admin_token_file, every room Synapse knows is
read through its admin API instead, regardless of membership.

Progress is kept per room in <data_dir>/backfill.db: an interrupted
backfill (Ctrl-C) resumes where it stopped, and running it again appends
nothing that is already recorded. Rooms it cannot read are reported with
the reason; the rest go on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			if err := requireStore(cfg); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := openExisting(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			// The views follow, so that a serve afterwards starts at once
			// and the known users are listed.
			if err := a.Runner.Start(ctx, nil); err != nil {
				return err
			}
			bar := newBackfillBar(cmd.ErrOrStderr(), quiet)
			run, err := a.newBackfill(users, nil, bar.show)
			if err != nil {
				return err
			}
			rep, err := run.run(ctx)
			bar.finish()
			if err != nil {
				if ctx.Err() != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "backfill interrupted; run it again to resume where it stopped")
				}
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			_, err = io.WriteString(cmd.OutOrStdout(), rep.String())
			return err
		},
	}
	cmd.Flags().StringArrayVar(&users, "user", nil, "a local user whose rooms to read (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	return f.add(cmd, "data-dir", "store", "esdb-url")
}

// backfillBar is the command line's progress bar: rooms through the two
// phases, with the events read and changes recorded.
type backfillBar struct {
	w     io.Writer
	quiet bool
	bar   *progressbar.ProgressBar
	phase string
}

func newBackfillBar(w io.Writer, quiet bool) *backfillBar { return &backfillBar{w: w, quiet: quiet} }

func (b *backfillBar) show(p appservice.BackfillProgress) {
	if b.quiet {
		return
	}
	if b.bar == nil || b.phase != p.Phase {
		b.finish()
		what := "surveying rooms"
		if p.Phase == appservice.PhaseWrite {
			what = "recording rooms"
		}
		b.phase = p.Phase
		b.bar = progressbar.NewOptions(p.Rooms, progressbar.OptionSetDescription(what), progressbar.OptionSetWriter(b.w),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetPredictTime(false))
	}
	_ = b.bar.Set(p.Done)
	b.bar.Describe(fmt.Sprintf("%s (%d events, %d recorded)", map[bool]string{true: "recording rooms", false: "surveying rooms"}[p.Phase == appservice.PhaseWrite], p.Events, p.Recorded))
}

func (b *backfillBar) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
		fmt.Fprintln(b.w)
		b.bar = nil
	}
}

// backfillService runs backfills on the running server (POST
// /_profilestore/v1/backfill), one at a time, and keeps the progress and
// the last report for GET and the console; the metrics show it in /metrics.
type backfillService struct {
	a       *app
	metrics *appservice.BackfillMetrics
	ctx     context.Context
	cancel  context.CancelFunc
	done    sync.WaitGroup

	mu       sync.Mutex
	running  bool
	progress appservice.BackfillProgress
	report   *appservice.BackfillReport
	err      string
	started  time.Time
	finished time.Time
}

func newBackfillService(a *app) *backfillService {
	ctx, cancel := context.WithCancel(context.Background())
	return &backfillService{a: a, metrics: appservice.NewBackfillMetrics(), ctx: ctx, cancel: cancel}
}

// Start implements pshttp.Backfill.
func (s *backfillService) Start(users []domain.UserID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return false, nil
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = string(u)
	}
	run, err := s.a.newBackfill(names, s.metrics, func(p appservice.BackfillProgress) {
		s.mu.Lock()
		s.progress = p
		s.mu.Unlock()
	})
	if err != nil {
		// The configuration or the checkpoint (a backfill of the command
		// line on the same file) stands in the way: the operator's to fix.
		return false, domain.Errorf(domain.ErrCodeUnavailable, "%v", err)
	}
	s.running, s.started, s.err, s.progress = true, time.Now().UTC(), "", appservice.BackfillProgress{}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		rep, err := run.run(s.ctx)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.running, s.finished, s.report = false, time.Now().UTC(), &rep
		if err != nil {
			s.err = err.Error()
			s.a.log.WithError(err).Warn("backfill: stopped")
			return
		}
		s.a.log.WithFields(logrus.Fields{"rooms": rep.Rooms, "done": rep.Done, "recorded": rep.Recorded,
			"unreadable": len(rep.Unreadable), "incomplete": len(rep.Incomplete)}).Info("backfill: finished")
	}()
	return true, nil
}

// Status implements pshttp.Backfill.
func (s *backfillService) Status() pshttp.BackfillStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.progress
	st := pshttp.BackfillStatus{Running: s.running, Phase: p.Phase, Rooms: p.Rooms, Done: p.Done, Room: p.Room,
		Events: p.Events, Recorded: p.Recorded, Error: s.err}
	if s.report != nil {
		st.Report, st.Unreadable, st.Incomplete = *s.report, len(s.report.Unreadable), len(s.report.Incomplete)
	}
	if !s.started.IsZero() {
		started := s.started
		st.Started = &started
	}
	if !s.finished.IsZero() && !s.running {
		finished := s.finished
		st.Finished = &finished
	}
	return st
}

// stop ends a running backfill (its checkpoint keeps the progress) and
// waits for it, before the store closes.
func (s *backfillService) stop() {
	s.cancel()
	s.done.Wait()
}

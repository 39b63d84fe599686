package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/spf13/cobra"
)

// exportLine is one event of an NDJSON export (docs/EVENTS.md). Personal
// values stay sealed, exactly as stored, so an export holds no plaintext
// names and erasure (destroying the keys) reaches exported copies too.
type exportLine = eventstore.JSONEvent

// exportBounds select the events of an export: after From (exclusive) up to
// To (inclusive) in log order, recorded in [Since, Until).
type exportBounds struct {
	From, To     eventstore.Position // To zero: the head when the export starts
	Since, Until time.Time           // zero: unbounded
}

func (b exportBounds) admits(r eventstore.RecordedEvent) bool {
	return (b.Since.IsZero() || !r.Recorded.Before(b.Since)) && (b.Until.IsZero() || r.Recorded.Before(b.Until))
}

// exportLog writes the bounded log as NDJSON and returns how many events it wrote.
func exportLog(ctx context.Context, store eventstore.Store, b exportBounds, w io.Writer, progress func(done, total uint64)) (uint64, error) {
	head, err := store.Head(ctx)
	if err != nil {
		return 0, err
	}
	if b.To.IsStart() || head.Before(b.To) {
		b.To = head
	}
	out := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(out)
	var read, written uint64
	after := b.From
	for after.Before(b.To) {
		recs, err := store.ReadAll(ctx, after, 4096)
		if err != nil {
			return written, err
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if b.To.Before(r.Position) {
				after = b.To
				break
			}
			after = r.Position
			if !b.admits(r) {
				continue
			}
			if err := enc.Encode(eventstore.NewJSONEvent(r)); err != nil {
				return written, err
			}
			written++
		}
		read += uint64(len(recs))
		if progress != nil {
			progress(min(read, b.To.Commit-b.From.Commit), b.To.Commit-b.From.Commit)
		}
	}
	return written, out.Flush()
}

func exportCommand(load loader) *cobra.Command {
	var from, to, since, until, output string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the event log (or a part of it) as NDJSON; values stay sealed",
		Long: `Write the event log as NDJSON, one event per line (docs/EVENTS.md), to
standard output or --output. It works while a server runs on the data
directory (the server writes the export). --from / --to bound it by position (after
--from, up to and including --to); --since / --until by the time the store
recorded each event (RFC 3339, --until exclusive). A progress bar is drawn
on a terminal.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := parseExportBounds(from, to, since, until)
			if err != nil {
				return usageError{err}
			}
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if err := requireStore(cfg); err != nil {
				return err
			}
			a, err := openExisting(ctx, cfg, log)
			live := errors.Is(err, bolt.ErrInUse)
			if err != nil && !live {
				return err
			}
			if !live {
				defer a.close()
			}
			w := cmd.OutOrStdout()
			if output != "" && output != "-" {
				f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			var n uint64
			if live {
				// A server runs on the data directory: it exports for us.
				err = remoteExport(ctx, cfg.DataDir, from, to, since, until, w)
			} else {
				n, err = exportLog(ctx, a.Store, b, w, progressReporter("exporting"))
			}
			if err != nil {
				return err
			}
			if f, ok := w.(*os.File); ok && f != os.Stdout {
				if err := f.Sync(); err != nil {
					return err
				}
			}
			if !live {
				log.WithField("events", n).Info("export finished")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "export events after this position token")
	cmd.Flags().StringVar(&to, "to", "", "export events up to and including this position token")
	cmd.Flags().StringVar(&since, "since", "", "export events recorded at or after this time (RFC 3339)")
	cmd.Flags().StringVar(&until, "until", "", "export events recorded before this time (RFC 3339)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of standard output")
	return cmd
}

// parseExportBounds reads export's bounds, with messages that say what a
// valid value looks like.
func parseExportBounds(from, to, since, until string) (exportBounds, error) {
	var b exportBounds
	var err error
	pos := func(flag, v string) (eventstore.Position, error) {
		if v == "" {
			return eventstore.Position{}, nil
		}
		p, err := eventstore.ParsePosition(v)
		if err != nil {
			return p, fmt.Errorf("%s %q is not a position (the X-Profilestore-Position of a write, or a \"position\" of an export, like 1234)", flag, v)
		}
		return p, nil
	}
	tm := func(flag, v string) (time.Time, error) {
		if v == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return t, fmt.Errorf("%s %q is not a time like 2026-03-01T00:00:00Z (RFC 3339, with a time zone)", flag, v)
		}
		return t, nil
	}
	if b.From, err = pos("--from", from); err != nil {
		return b, err
	}
	if b.To, err = pos("--to", to); err != nil {
		return b, err
	}
	if b.Since, err = tm("--since", since); err != nil {
		return b, err
	}
	if b.Until, err = tm("--until", until); err != nil {
		return b, err
	}
	if to != "" && b.To.Before(b.From) {
		return b, fmt.Errorf("--to %s is before --from %s: nothing lies between them", to, from)
	}
	if !b.Since.IsZero() && !b.Until.IsZero() && !b.Since.Before(b.Until) {
		return b, fmt.Errorf("--until %s is not after --since %s: nothing lies between them", until, since)
	}
	return b, nil
}

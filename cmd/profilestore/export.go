package main

import (
	"bufio"
	"context"
	"encoding/json"
	"time"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/spf13/cobra"
)

// exportLine is one event of an NDJSON export (docs/EVENTS.md). Personal
// values stay sealed, exactly as stored, so an export holds no plaintext
// names and erasure (destroying the keys) reaches exported copies too.
type exportLine struct {
	Position string          `json:"position"`
	Stream   string          `json:"stream"`
	Revision uint64          `json:"revision"`
	ID       string          `json:"event_id"`
	Type     string          `json:"type"`
	Recorded time.Time       `json:"recorded"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

func exportCommand(load loader) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the event log as NDJSON to standard output",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			ctx := context.Background()
			a, err := openApp(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			after := eventstore.Start
			if from != "" {
				if after, err = eventstore.ParsePosition(from); err != nil {
					return err
				}
			}
			head, err := a.store.Head(ctx)
			if err != nil {
				return err
			}
			progress := progressReporter("exporting")
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
			enc := json.NewEncoder(out)
			var n uint64
			for after.Before(head) {
				recs, err := a.store.ReadAll(ctx, after, 4096)
				if err != nil {
					return err
				}
				if len(recs) == 0 {
					break
				}
				for _, r := range recs {
					if err := enc.Encode(exportLine{Position: r.Position.String(), Stream: r.Stream, Revision: r.Revision,
						ID: r.ID.String(), Type: r.Type, Recorded: r.Recorded, Data: r.Data, Metadata: nullIfEmpty(r.Metadata)}); err != nil {
						return err
					}
					after = r.Position
				}
				n += uint64(len(recs))
				if progress != nil {
					progress(n, head.Commit)
				}
			}
			return out.Flush()
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "export events after this position token")
	return cmd
}

func nullIfEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}

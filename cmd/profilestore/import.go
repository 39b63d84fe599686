package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/spf13/cobra"
)

// maxImportLine bounds one NDJSON line (an event's payload is capped far
// below this by the profile limits).
const maxImportLine = 4 << 20

// importBatch is how many consecutive events of one stream are appended together.
const importBatch = 512

// importLog appends the events of an NDJSON export to an empty store, in
// order, with their ids, types, payloads and metadata, byte for byte (the
// hash chains and seals cover them). Positions are those of the new store:
// where a profile.entry_hidden names an entry whose position differs here,
// a log.hides_moved event appended at the end says where it is now
// (domain/moved.go). It returns how many events of the export it appended.
func importLog(ctx context.Context, store eventstore.Store, r io.Reader) (uint64, error) {
	head, err := store.Head(ctx)
	if err != nil {
		return 0, err
	}
	if !head.IsStart() {
		return 0, errors.New("import: the store is not empty; import into a new data directory")
	}
	newPos := make(map[string]eventstore.Position) // exported position -> imported position
	// The hides imported, and where an earlier import said the entries of
	// some are (the export of an imported store carries its
	// log.hides_moved events), by their stream and revision in the export.
	type hide struct {
		stream   string
		from, to uint64 // revision in the export, in this store
		position string // the entry's exported position, as stored
	}
	var hides []hide
	movedInExport := make(map[string]string) // "stream\x00revision" -> exported position
	movedKey := func(stream string, revision uint64) string { return fmt.Sprintf("%s\x00%d", stream, revision) }
	var batch []exportLine
	var n uint64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		events := make([]eventstore.EventData, len(batch))
		for i, l := range batch {
			id, err := uuid.Parse(l.ID)
			if err != nil {
				return fmt.Errorf("import: event %s: bad event_id", l.Position)
			}
			events[i] = eventstore.EventData{ID: id, Type: l.Type, Data: []byte(l.Data), Metadata: l.Metadata}
		}
		res, err := store.Append(ctx, batch[0].Stream, eventstore.Any, events)
		if err != nil {
			return fmt.Errorf("import: append to %s: %w", batch[0].Stream, err)
		}
		// Read the batch back to learn each event's new position.
		first := res.Revision + 1 - uint64(len(batch))
		recs, err := store.ReadStream(ctx, batch[0].Stream, first, eventstore.Forwards, len(batch))
		if err != nil || len(recs) != len(batch) {
			return fmt.Errorf("import: read back %s: %v", batch[0].Stream, err)
		}
		for i, rec := range recs {
			l := &batch[i]
			newPos[l.Position] = rec.Position
			switch {
			case l.Type == domain.TypeEntryHidden:
				p, err := hiddenPosition(l.Data)
				if err != nil {
					return fmt.Errorf("import: event %s: %w", l.Position, err)
				}
				hides = append(hides, hide{stream: l.Stream, from: l.Revision, to: rec.Revision, position: p})
			case l.Stream == domain.MovedHidesStream && l.Type == domain.TypeHidesMoved:
				moved, err := domain.ParseHidesMoved(l.Data)
				if err != nil {
					return fmt.Errorf("import: event %s: %w", l.Position, err)
				}
				for _, m := range moved {
					movedInExport[movedKey(m.Stream, m.Revision)] = m.Position.String()
				}
			}
		}
		n += uint64(len(batch))
		batch = batch[:0]
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l exportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return n, fmt.Errorf("import: line %d: %w", lineNo, err)
		}
		if l.Stream == "" || l.Type == "" || l.ID == "" || len(l.Data) == 0 {
			return n, fmt.Errorf("import: line %d: stream, type, event_id and data are required", lineNo)
		}
		if len(batch) > 0 && (batch[0].Stream != l.Stream || len(batch) == importBatch) {
			if err := flush(); err != nil {
				return n, err
			}
		}
		batch = append(batch, l)
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("import: line %d: %w", lineNo+1, err)
	}
	if err := flush(); err != nil {
		return n, err
	}
	// Where each hidden entry is in this store. A hide keeps its bytes; one
	// whose entry is elsewhere here than the hide (or an earlier import's
	// record, which is imported too) says is listed. If revisions moved (an
	// export that starts inside streams), an earlier record's keys may name
	// other hides here: then every hide is listed, and the new record wins.
	var moved []domain.MovedHide
	shifted := false
	for _, h := range hides {
		shifted = shifted || h.from != h.to
	}
	for _, h := range hides {
		entry, already := movedInExport[movedKey(h.stream, h.from)]
		if !already {
			entry = h.position
		}
		to, ok := newPos[entry]
		if !ok {
			// The hidden entry is not in the file (a bounded export).
			to = domain.NoEntry
		}
		if shifted || to.String() != entry {
			moved = append(moved, domain.MovedHide{Stream: h.stream, Revision: h.to, Position: to})
		}
	}
	if err := domain.AppendMovedHides(ctx, store, moved); err != nil {
		return n, fmt.Errorf("import: %w", err)
	}
	return n, nil
}

// hiddenPosition returns the position an entry_hidden payload names.
func hiddenPosition(data []byte) (string, error) {
	var p struct {
		Position string `json:"position"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return "", err
	}
	if _, err := eventstore.ParsePosition(p.Position); err != nil {
		return "", errors.New("entry_hidden without a position")
	}
	return p.Position, nil
}

func importCommand(load loader) *cobra.Command {
	var keyring string
	var allowUnreadable bool
	cmd := &cobra.Command{
		Use:   "import [file]",
		Short: "Append an NDJSON export to an empty store (stop the server first)",
		Long: `Read an export (a file, or standard input when the file is "-" or
absent) into the store of an empty data directory, then build the views.
The values in an export are sealed with the source's per-user keys: give
--keyring the source's keys.db (from a backup, or a copy taken while the
source was stopped) and it is copied into the new data directory first.
Users erased before the export stay erased.

Before appending anything, import checks that every sealed value in the
export can be opened with the keyring (or was erased), and refuses
otherwise; --allow-unreadable imports such values anyway, unreadable.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			if err := requireDataDir(cfg.DataDir); err != nil {
				return err
			}
			ctx := context.Background()
			path := ""
			if len(args) == 1 && args[0] != "-" {
				path = args[0]
			} else {
				// The export is read twice (the key check, then the
				// import): standard input is kept in the data directory
				// meanwhile.
				if path, err = spool(cmd.InOrStdin(), cfg.DataDir); err != nil {
					return err
				}
				defer os.Remove(path)
			}
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			// Files this import creates are removed again if it refuses, so
			// that it can be run again as it is, with the right flags.
			var created []string
			for _, name := range []string{"events.db", "keys.db", "views"} {
				if _, err := os.Stat(filepath.Join(cfg.DataDir, name)); errors.Is(err, os.ErrNotExist) {
					created = append(created, filepath.Join(cfg.DataDir, name))
				}
			}
			if keyring != "" && cfg.Store == "bolt" {
				if err := copyKeyring(keyring, filepath.Join(cfg.DataDir, "keys.db")); err != nil {
					return err
				}
			}
			a, err := openExisting(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer a.close()
			if head, err := a.Store.Head(ctx); err != nil {
				return err
			} else if !head.IsStart() {
				return errors.New("import: the store is not empty; import into a new data directory")
			}
			bad, err := checkExportKeys(ctx, in, a.Keyring)
			if err != nil {
				return err
			}
			if bad.values > 0 && !allowUnreadable {
				a.close()
				for _, f := range created {
					os.RemoveAll(f)
				}
				hint := "give the source's keys.db with --keyring"
				if keyring != "" {
					hint = "the keyring given with --keyring is not the one of this export; give the keys.db backed up with it"
				}
				return fmt.Errorf("import: %s: %s (--allow-unreadable imports them unreadable). Nothing was imported", bad, hint)
			}
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			n, err := importLog(ctx, a.Store, in)
			if err != nil {
				return err
			}
			// The app was opened on an empty store: read the moved hides
			// the import recorded before the views are built.
			if err := domain.LoadMovedHides(ctx, a.Store, a.Sealer); err != nil {
				return err
			}
			if err := a.Runner.Rebuild(ctx, progressReporter("building projections")); err != nil {
				return err
			}
			if bad.values > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "imported with --allow-unreadable: %s\n", bad)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d events; views at position %s\n", n, a.Runner.Checkpoint())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyring, "keyring", "", "the source's keys.db, copied into the new data directory")
	cmd.Flags().BoolVar(&allowUnreadable, "allow-unreadable", false, "import sealed values that the keyring cannot open (they read as erased)")
	return cmd
}

// checkExportKeys runs a key check over an export's lines.
func checkExportKeys(ctx context.Context, r io.Reader, keys eventstore.Keyring) (unreadable, error) {
	c := newKeyCheck(keys)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	for lineNo := 1; sc.Scan(); lineNo++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l exportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return unreadable{}, fmt.Errorf("import: line %d: %w", lineNo, err)
		}
		rec := eventstore.RecordedEvent{Stream: l.Stream, EventData: eventstore.EventData{Type: l.Type, Data: []byte(l.Data), Metadata: []byte(l.Metadata)}}
		if err := c.add(ctx, rec); err != nil {
			return unreadable{}, fmt.Errorf("import: line %d: %w", lineNo, err)
		}
	}
	if err := sc.Err(); err != nil {
		return unreadable{}, fmt.Errorf("import: %w", err)
	}
	return c.result(ctx)
}

// spool copies standard input into a file in dir.
func spool(r io.Reader, dir string) (string, error) {
	f, err := os.CreateTemp(dir, "import-*.ndjson")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("import: read standard input: %w", err)
	}
	return f.Name(), f.Close()
}

// copyKeyring copies the source keyring into an empty data directory.
func copyKeyring(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("import: %s exists; --keyring only fills a new data directory", dst)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("import: keyring: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

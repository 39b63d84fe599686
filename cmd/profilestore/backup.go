package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	psapp "github.com/profilestore/profilestore/app"
	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// A running server holds an exclusive lock on events.db and keys.db, so the
// offline commands that only read (backup, export) ask it instead, over a
// unix socket in the data directory. The socket is as private as the data
// directory (mode 0600 in a 0700 directory): whoever may use it could
// already read the files. It serves:
//
//	GET /backup/events.db   a consistent copy of the log (one read transaction)
//	GET /backup/keys.db     a consistent copy of the keyring
//	GET /export?from=&to=&since=&until=   the export's NDJSON
//
// A failure after the answer started is reported in the X-Profilestore-Error
// trailer, so a truncated copy is never taken for a whole one.
const controlSocketName = "control.sock"

const trailerError = "X-Profilestore-Error"

func controlSocketPath(dataDir string) string { return filepath.Join(dataDir, controlSocketName) }

// control is the server side of the socket.
type control struct {
	ln  net.Listener
	srv *http.Server
}

// startControl serves the socket of a bolt data directory. A socket file
// left by a crashed server is replaced: this process holds the store's
// lock, so no other server owns it.
func startControl(a *app, store *bolt.Store, keys *bolt.Keyring) (*control, error) {
	path := controlSocketPath(a.cfg.DataDir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (backup and export will not reach this server)", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	copyRoute := func(name string, copyTo func(io.Writer) (int64, error)) {
		mux.HandleFunc("GET /backup/"+name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", trailerError)
			w.Header().Set("Content-Type", "application/octet-stream")
			if _, err := copyTo(w); err != nil {
				a.log.WithError(err).WithField("file", name).Error("backup copy failed")
				w.Header().Set(trailerError, err.Error())
				return
			}
			a.log.WithField("file", name).Info("backup copy sent")
		})
	}
	copyRoute("events.db", store.CopyTo)
	copyRoute("keys.db", keys.CopyTo)
	mux.HandleFunc("GET /export", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		b, err := parseExportBounds(q.Get("from"), q.Get("to"), q.Get("since"), q.Get("until"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Trailer", trailerError)
		w.Header().Set("Content-Type", "application/x-ndjson")
		n, err := exportLog(r.Context(), a.Store, b, w, nil)
		if err != nil {
			w.Header().Set(trailerError, err.Error())
			return
		}
		a.log.WithField("events", n).Info("export sent")
	})
	c := &control{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go c.srv.Serve(ln) //nolint:errcheck // ends with Close
	return c, nil
}

// Close stops the socket; the listener removes its file.
func (c *control) Close() error { return c.srv.Close() }

// controlGet asks the server running on dataDir and copies the answer to w.
func controlGet(ctx context.Context, dataDir, path string, w io.Writer) error {
	sock := controlSocketPath(dataDir)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://profilestore"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("data directory %s is in use, but the server's control socket %s does not answer (%v); stop the server to work on the files", dataDir, sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the running server refused: %s", string(msg))
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("reading from the running server: %w", err)
	}
	if msg := resp.Trailer.Get(trailerError); msg != "" {
		return fmt.Errorf("the running server failed: %s", msg)
	}
	return nil
}

// backupManifest is written beside the copies as backup.json.
type backupManifest struct {
	Source   string    `json:"source"`
	Taken    time.Time `json:"taken"`
	Position string    `json:"position"`
	Identity string    `json:"identity"`
	Live     bool      `json:"live"` // copied from a running server
	Version  string    `json:"profilestore_version"`
}

func backupCommand(load loader) *cobra.Command {
	return &cobra.Command{
		Use:   "backup DIR",
		Short: "Copy the log and its keyring (and the tokens and registration files) into a new directory; works while serve runs",
		Long: `Write a consistent copy of the data directory into DIR, which must not
exist or be empty. The log is copied first and the keyring second, so the
keyring copy holds every key the copied log needs. While a server runs on
the data directory the copies come from it, over its control socket, and
writes go on meanwhile; otherwise the files are read directly.

DIR is itself a data directory: to restore, stop the server, put DIR in
place of the data directory (or point --data-dir at it) and start it. The
views are rebuilt from the log. See docs/OPERATIONS.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := load()
			if err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			if cfg.Store != "bolt" {
				return errors.New("backup copies the embedded store; on EventStoreDB the keys live in the database: back it up with EventStoreDB's own tools (docs/ESDB.md)")
			}
			if err := requireStore(cfg); err != nil {
				return err
			}
			dest := args[0]
			if err := newBackupDir(dest); err != nil {
				return err
			}
			m, err := takeBackup(cmd.Context(), cfg, log, dest)
			if err != nil {
				return fmt.Errorf("backup: %w (the partial copy in %s is not a backup)", err, dest)
			}
			how := "stopped data directory"
			if m.Live {
				how = "running server"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %s to %s at position %s (from the %s)\n", cfg.DataDir, dest, m.Position, how)
			return nil
		},
	}
}

// newBackupDir creates dest, or accepts it empty.
func newBackupDir(dest string) error {
	entries, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dest, 0o700)
	case err != nil:
		return fmt.Errorf("backup: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("backup: %s is not empty; give a new directory", dest)
	}
	return nil
}

func takeBackup(ctx context.Context, cfg Config, log *logrus.Logger, dest string) (backupManifest, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	m := backupManifest{Source: cfg.DataDir, Taken: time.Now().UTC(), Version: buildVersion()}
	store, keys, err := openBolt(cfg.DataDir, log)
	switch {
	case err == nil:
		// Stopped: copy the files ourselves, log first.
		err = writeFileFrom(filepath.Join(dest, "events.db"), store.CopyTo)
		if err == nil {
			err = writeFileFrom(filepath.Join(dest, "keys.db"), keys.CopyTo)
		}
		keys.Close()
		store.Close()
	case errors.Is(err, bolt.ErrInUse):
		m.Live = true
		for _, name := range []string{"events.db", "keys.db"} { // log first
			err = writeFileFrom(filepath.Join(dest, name), func(w io.Writer) (int64, error) {
				return 0, controlGet(ctx, cfg.DataDir, "/backup/"+name, w)
			})
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return m, err
	}
	// The small files beside them, as they are now.
	for _, src := range []string{cfg.Auth.TokensFile, cfg.Appservice.registrationPath(cfg.DataDir)} {
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := writeFileFrom(filepath.Join(dest, filepath.Base(src)), func(w io.Writer) (int64, error) {
			f, err := os.Open(src)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			return io.Copy(w, f)
		}); err != nil {
			return m, err
		}
	}
	// Check the copy: it must open as a bound pair.
	store, keys, err = openBolt(dest, log)
	if err != nil {
		return m, fmt.Errorf("the copy does not open: %w", err)
	}
	head, _ := store.Head(ctx)
	id, _ := store.Identity()
	keys.Close()
	store.Close()
	m.Position, m.Identity = head.String(), fmt.Sprintf("%x", id)
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileFrom(filepath.Join(dest, "backup.json"), func(w io.Writer) (int64, error) {
		n, err := w.Write(append(data, '\n'))
		return int64(n), err
	}); err != nil {
		return m, err
	}
	return m, psapp.SyncDir(dest)
}

// writeFileFrom writes path through a temporary file, synced and renamed,
// so that a file of the backup is whole or absent.
func writeFileFrom(path string, fill func(io.Writer) (int64, error)) error {
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fill(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// remoteExport runs an export on the server running on dataDir.
func remoteExport(ctx context.Context, dataDir, from, to, since, until string, w io.Writer) error {
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to, "since": since, "until": until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return controlGet(ctx, dataDir, "/export?"+q.Encode(), w)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/profilestore/profilestore/eventstore/bolt"
	"github.com/sirupsen/logrus"
)

// openExisting is openApp for the offline commands (rebuild, export,
// import...): a data directory that does not exist is a mistyped path, not a
// request for a new empty store, which would let a backup script "succeed"
// with nothing in it. Only serve and token issue create a data directory.
func openExisting(ctx context.Context, cfg Config, log *logrus.Logger) (*app, error) {
	if err := requireDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	return openApp(ctx, cfg, log)
}

// requireStore is requireDataDir for the commands that read a store:
// rebuild, export and backup of a directory without events.db would create
// an empty store and "succeed" on nothing (a wrong but existing directory,
// such as the parent of the data directory).
func requireStore(cfg Config) error {
	if err := requireDataDir(cfg.DataDir); err != nil || cfg.Store != "bolt" {
		return err
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "events.db")); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s holds no events.db: it is not a data directory (check --data-dir, or data_dir, PROFILESTORE_DATA_DIR)", cfg.DataDir)
	}
	return nil
}

// requireDataDir fails unless dir is an existing directory.
func requireDataDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data directory %s does not exist: check --data-dir (or data_dir, PROFILESTORE_DATA_DIR); only serve and token issue create one", dir)
	}
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	return nil
}

// makeDataDir creates dir if it is missing and says so: an operator who
// mistyped the path sees it at once.
func makeDataDir(dir string, say func(string)) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	say(fmt.Sprintf("created a new data directory %s", dir))
	return nil
}

// inUse turns the store's lock error into what the operator should do.
func inUse(dir string, err error) error {
	if errors.Is(err, bolt.ErrInUse) {
		return dataDirInUse{dir}
	}
	return err
}

// dataDirInUse is bolt.ErrInUse told for people.
type dataDirInUse struct{ dir string }

func (e dataDirInUse) Error() string {
	return fmt.Sprintf("data directory %s is in use by a running profilestore (stop it, or use `profilestore backup` for a copy)", e.dir)
}

func (e dataDirInUse) Unwrap() error { return bolt.ErrInUse }

// openBolt opens a data directory's log and keyring and checks that they
// belong together (bolt.Bind): a missing or foreign keys.db would make every
// profile read as erased, and a rebuild would erase the views for good.
func openBolt(dir string, log *logrus.Logger) (*bolt.Store, *bolt.Keyring, error) {
	store, err := bolt.Open(filepath.Join(dir, "events.db"), bolt.Options{Logger: log})
	if err != nil {
		return nil, nil, inUse(dir, fmt.Errorf("open event store: %w", err))
	}
	keysPath := filepath.Join(dir, "keys.db")
	head, err := store.Head(context.Background())
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	if _, err := os.Stat(keysPath); errors.Is(err, os.ErrNotExist) && !head.IsStart() {
		store.Close()
		return nil, nil, keyringError(dir, fmt.Errorf("%w: %s does not exist", bolt.ErrKeyringMissing, keysPath))
	}
	keys, err := bolt.OpenKeyring(keysPath)
	if err != nil {
		store.Close()
		return nil, nil, inUse(dir, fmt.Errorf("open keyring: %w", err))
	}
	if err := bolt.Bind(store, keys); err != nil {
		keys.Close()
		store.Close()
		return nil, nil, keyringError(dir, err)
	}
	return store, keys, nil
}

// keyringError says what a refused keyring means and how to recover.
func keyringError(dir string, err error) error {
	const restore = "Restore the keys.db that was backed up together with this events.db " +
		"(profilestore backup copies both; docs/OPERATIONS.md), then start again. " +
		"Nothing was changed."
	switch {
	case errors.Is(err, bolt.ErrKeyringMissing):
		return fmt.Errorf("data directory %s: the keyring keys.db is missing (%v). Without it no name, avatar or field in the log can be read, so profilestore will not start on it. %s", dir, err, restore)
	case errors.Is(err, bolt.ErrKeyringForeign):
		return fmt.Errorf("data directory %s: keys.db is not the keyring of this events.db (%v); the values in the log cannot be opened with it. %s", dir, err, restore)
	}
	return err
}

// usageError is a mistake in the command line: main prints the command's
// usage after the message.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

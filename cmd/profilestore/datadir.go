package main

import (
	"context"
	"errors"
	"fmt"
	"os"

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
		return fmt.Errorf("data directory %s is in use by a running profilestore (stop it, or use `profilestore backup` for a copy)", dir)
	}
	return err
}

// usageError is a mistake in the command line: main prints the command's
// usage after the message.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

package main

import (
	"context"
	"fmt"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/esdb"
	"github.com/sirupsen/logrus"
)

// openESDB opens the EventStoreDB store and its keyring (keys in
// profilekey- streams of the same database; docs/ESDB.md).
func openESDB(ctx context.Context, cfg Config, log *logrus.Logger) (eventstore.Store, eventstore.Keyring, error) {
	store, err := esdb.Open(ctx, cfg.ESDBURL, esdb.Options{Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("open EventStoreDB: %w", err)
	}
	keys, err := esdb.OpenKeyring(ctx, cfg.ESDBURL, esdb.Options{Logger: log})
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("open EventStoreDB keyring: %w", err)
	}
	return store, keys, nil
}

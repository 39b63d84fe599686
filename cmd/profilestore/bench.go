package main

import (
	"context"

	"github.com/profilestore/profilestore/cmd/profilestore/bench"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/spf13/cobra"
)

// benchCommand is `profilestore bench`, whose code lives in package bench;
// this file hands it the production wiring (openApp), so the bench measures
// what `serve` runs.
func benchCommand(load loader) *cobra.Command {
	return bench.Command(func() (bench.Env, error) {
		cfg, log, err := load()
		if err != nil {
			return bench.Env{}, err
		}
		open := func(ctx context.Context, dataDir, store string) (*bench.App, error) {
			c := defaultConfig()
			c.DataDir, c.Listen = dataDir, "127.0.0.1:0"
			c.RateLimit.WritesPerSecond = 0
			c.Store, c.ESDBURL = store, cfg.ESDBURL
			a, err := openApp(ctx, c, log)
			if err != nil {
				return nil, err
			}
			return &bench.App{
				Store: a.Store, Sealer: a.Sealer, Profiles: a.Profiles, Rooms: a.Rooms, Runner: a.Runner,
				Views: a.ProfileView, RoomViews: a.RoomView, TokensFile: a.cfg.Auth.TokensFile,
				Server: func() (*pshttp.Server, error) {
					auth, err := a.authenticator()
					if err != nil {
						return nil, err
					}
					return a.server(auth)
				},
				RebuildViews: func(ctx context.Context) error { return a.RebuildViews(ctx, nil) },
				Close:        a.close,
			}, nil
		}
		return bench.Env{Log: log, Store: cfg.Store, ESDBURL: cfg.ESDBURL, Open: open}, nil
	})
}

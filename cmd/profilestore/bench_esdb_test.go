package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/profilestore/profilestore/eventstore/esdb/esdbtest"
)

// BenchmarkBenchCommandOnESDBTestServer runs the bench command with store
// esdb against the in-process EventStoreDB test server, the only EventStoreDB
// these machines can run, and prints its report. Figures against a real
// cluster are taken with `profilestore bench --store esdb --esdb-url …`.
//
//	go test -run XXX -bench BenchCommandOnESDB -benchtime 1x ./cmd/profilestore/
func BenchmarkBenchCommandOnESDBTestServer(b *testing.B) {
	srv := esdbtest.Start(b)
	for i := 0; i < b.N; i++ {
		cmd := rootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"bench", "--store", "esdb", "--esdb-url", srv.URL(), "--duration", "2s", "--concurrency", "1,16,64,256"})
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			b.Fatal(err)
		}
		os.Stdout.WriteString("\n" + out.String())
	}
}

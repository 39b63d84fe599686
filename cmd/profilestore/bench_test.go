package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/cmd/profilestore/bench"
)

// TestMain lets the bench's loader child, which re-executes this test
// binary, run the command line instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv(bench.LoaderEnv) == "1" {
		root := rootCommand()
		root.SetArgs(os.Args[1:])
		if err := root.Execute(); err != nil {
			fmt.Fprintln(os.Stderr, "profilestore:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBench runs the command line given (a bench) and returns its report.
func runBench(t *testing.T, args ...string) string {
	t.Helper()
	cmd := rootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestBenchCommandRuns runs a tiny bench end to end: every HTTP row comes
// from the loader process, without errors, and the ratio table is there.
func TestBenchCommandRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench")
	}
	report := runBench(t, []string{"bench", "--dir", t.TempDir(), "--duration", "100ms", "--concurrency", "2", "--rooms", "0", "--restart-users", "0"}...)
	for _, row := range []string{"no-op handler GET", "PUT displayname, a user per client (durable)", "PUT displayname, all clients on one user (durable)", "GET profile", "bolt append (durable)"} {
		re := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(row) + ` \| 2 \| ([0-9]+) \| .* \| ([0-9]+) \|$`)
		m := re.FindStringSubmatch(report)
		if m == nil {
			t.Fatalf("no row %q in the report:\n%s", row, report)
		}
		if m[1] == "0" || m[2] != "0" {
			t.Errorf("row %q: %s ops/s, %s errors", row, m[1], m[2])
		}
	}
	if !strings.Contains(report, "| clients | PUT, a user per client / no-op |") {
		t.Errorf("no ratio table in the report:\n%s", report)
	}
	// The sealing pairs: each run with its CPU per PUT, and the summary.
	if n := len(regexp.MustCompile(`(?m)^\| (on|off) \| [0-9]+ \| .* \| [0-9.]+ [µm]?s / [0-9.]+ [µm]?s \|$`).FindAllString(report, -1)); n != 12 {
		t.Errorf("%d sealing runs with their CPU per PUT, want 12:\n%s", n, report)
	}
	if !regexp.MustCompile(`(?m)^Sealing on / off over the 6 pairs: [0-9.]+% of the throughput \(the pairs' own ratios [0-9.]+–[0-9.]+%, median [0-9.]+%\)\. The server's CPU per PUT, on / off: [0-9.]+%\.$`).MatchString(report) {
		t.Errorf("no sealing summary in the report:\n%s", report)
	}
	if !regexp.MustCompile("(?m)^In a CPU profile of the runs with sealing on, the seal writer's own goroutines \\(labelled\\) took [0-9.]+% of the server's CPU, [0-9.]+ µs per PUT, and chaining the appends \\(`integrity.Chain`, always on\\) [0-9.]+% of the server's CPU, [0-9.]+ µs per PUT\\.$").MatchString(report) {
		t.Errorf("no CPU shares of sealing and chaining in the report:\n%s", report)
	}
}

// TestBenchRoomsRuns runs the bench's room measurements small: the renames
// back to back and spaced, each with its table of both users and a ratio.
// It runs them twice in one --dir: each run starts from a data directory of
// its own (a second run on the first's users failed, their rooms holding
// the first run's names), and leaves --dir as it found it.
func TestBenchRoomsRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench")
	}
	dir := t.TempDir()
	mine := filepath.Join(dir, "operator-notes.txt")
	if err := os.WriteFile(mine, []byte("not the bench's"), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		t.Logf("run %d", run)
		checkRoomsReport(t, runBench(t, []string{"bench", "--dir", dir, "--duration", "50ms", "--concurrency", "1", "--rooms", "20", "--renames", "10",
			"--history-members", "10", "--history-entries", "40", "--restart-users", "0", "--sealing=false"}...))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != filepath.Base(mine) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("--dir holds %q after two runs, want only the file that was there before", names)
	}
}

// checkRoomsReport checks a room measurement's tables and ratios.
func checkRoomsReport(t *testing.T, report string) {
	t.Helper()
	for _, want := range []struct{ name, row string }{
		{"back to back, 1 room", `(?m)^\| 1 \| 10 \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \(then all 1 rooms checked\) \|`},
		{"back to back, 20 rooms", `(?m)^\| 20 \| 10 \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \(then all 20 rooms checked\) \|`},
		{"ratio", `(?m)^Ratio of acknowledgement latency, 20 rooms / 1 room: p50 [0-9.]+x, p99 [0-9.]+x\.$`},
		{"spaced, 1 room", `(?m)^\| 1 \| 5 \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \|$`},
		{"spaced, 20 rooms", `(?m)^\| 20 \| 5 \| [0-9.]+ [µm]?s \| [0-9.]+ [µm]?s \|$`},
		{"spaced ratio", `(?m)^Ratio of acknowledgement latency, spaced, 20 rooms / 1 room: p50 [0-9.]+x, p99 [0-9.]+x\.$`},
	} {
		if !regexp.MustCompile(want.row).MatchString(report) {
			t.Errorf("no %s row in the report:\n%s", want.name, report)
		}
	}
	if strings.Contains(report, "history read failed") {
		t.Errorf("the history measurement failed:\n%s", report)
	}
}

// TestBenchHTTPRows runs only the loads --http-rows names: the other rows
// and their ratios are absent, and the command line in the report says so.
func TestBenchHTTPRows(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench")
	}
	report := runBench(t, []string{"bench", "--dir", t.TempDir(), "--duration", "100ms", "--concurrency", "2", "--rooms", "0", "--restart-users", "0",
		"--sealing=false", "--http-rows", "noop,put-own"}...)
	for _, row := range []string{"no-op handler GET", "PUT displayname, a user per client (durable)"} {
		if !strings.Contains(report, "| "+row+" | 2 |") {
			t.Errorf("no row %q in the report:\n%s", row, report)
		}
	}
	for _, row := range []string{"PUT displayname, all clients on one user (durable)", "GET profile"} {
		if strings.Contains(report, "| "+row+" |") {
			t.Errorf("row %q was not asked for:\n%s", row, report)
		}
	}
	if !regexp.MustCompile(`(?m)^\| 2 \| [0-9]+% \| — \| — \|$`).MatchString(report) {
		t.Errorf("the ratio table should have only the PUT / no-op ratio:\n%s", report)
	}
	if !strings.Contains(report, "--http-rows noop,put-own`") {
		t.Errorf("the report's command line does not name --http-rows:\n%s", report)
	}
	bad := rootCommand()
	bad.SetOut(io.Discard)
	bad.SetErr(io.Discard)
	bad.SetArgs([]string{"bench", "--http-rows", "put"})
	if err := bad.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "--http-rows") {
		t.Errorf("--http-rows put: %v, want an error naming the flag", err)
	}
}

// TestBenchScaleRuns runs a tiny `bench scale` end to end: the data set is
// written and rebuilt, `serve` runs as a separate process, and every read
// succeeds, with the memory and restart rows filled in.
func TestBenchScaleRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench")
	}
	cmd := rootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	dir := t.TempDir()
	args := []string{"bench", "scale", "--dir", dir, "--tenth-only", "--users", "2000", "--room-pool", "200",
		"--big-room", "500", "--rooms-per-user", "3", "--reads", "0.01"}
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	if strings.Contains(report, "failed") {
		t.Fatalf("reads failed:\n%s", report)
	}
	for _, row := range []string{"| events in the log | 1250 |", "| RssAnon after the reads |", "| process start to /ready |", "| names search p50 / p99 |",
		"| first history page (a pool room, 100 entries), one client p50 / p99 |", "| first history page (the big room, 100 entries), one client p50 / p99 |"} {
		if !strings.Contains(report, row) {
			t.Errorf("no %q in the report:\n%s", row, report)
		}
	}
	if regexp.MustCompile(`\| RssAnon after restart \| 0 MiB \|`).MatchString(report) {
		t.Errorf("no memory figure of the served process:\n%s", report)
	}
	// Where the memory is, from the served process's /metrics.
	for _, re := range []string{`\| after the reads: Go heap in use / Go memory from the OS \| \d+ MiB / [1-9]\d* MiB \|`,
		`\| after the reads: block cache / open tables' readers \(tables\) / memtables \| \d+ MiB / \d+ MiB \([1-9]\d*\) / \d+ MiB \|`,
		`\| after the reads: objects in the view caches / command caches \| [1-9]\d* / \d+ \|`} {
		if !regexp.MustCompile(re).MatchString(report) {
			t.Errorf("no row matching %s:\n%s", re, report)
		}
	}

	// --reuse measures the same directory again from the restart on: the
	// rows of writing, scanning and rebuilding say so, not 0 or NaN.
	again := rootCommand()
	out.Reset()
	again.SetOut(&out)
	again.SetErr(io.Discard)
	again.SetArgs(append(args, "--reuse"))
	if err := again.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	reused := out.String()
	for _, row := range []string{"| events in the log | — (reused) |", "| rebuild into a fresh view store | — (reused) |", "| view bytes / log bytes | "} {
		if !strings.Contains(reused, row) {
			t.Errorf("no %q in the --reuse report:\n%s", row, reused)
		}
	}
	if strings.Contains(reused, "NaN") || strings.Contains(reused, "failed") {
		t.Errorf("the --reuse report:\n%s", reused)
	}
}

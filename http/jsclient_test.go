package http_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsClientDir holds the matrix-js-sdk test project (package-lock.json pins
// the version; .ci/run installs it with npm ci).
const jsClientDir = "testdata/jsclient"

// TestMatrixJSSDKClient drives the service with the real matrix-js-sdk, the
// SDK behind Element, run by node: display name, avatar, extended-profile
// keys, directory search and the Matrix errors, as client.mjs checks them.
func TestMatrixJSSDKClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (v20 or later) is needed to run matrix-js-sdk; install it (see .ci/run)")
	}
	ensureJSClientInstalled(t)

	ts := newTestService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = jsClientDir
	cmd.Env = append(os.Environ(),
		"PROFILESTORE_URL="+ts.URL, "ALICE="+string(alice),
		"ALICE_TOKEN="+ts.tokens[alice], "BOB_TOKEN="+ts.tokens[bob])
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("matrix-js-sdk:\n%s", out.String())
	if err != nil {
		t.Fatalf("client.mjs failed (%v); see the log above", err)
	}
	if !strings.Contains(out.String(), "10 passed, 0 failed") {
		t.Fatalf("client.mjs did not run all its checks")
	}

	// What the SDK wrote is what the service holds.
	r := ts.do("GET", "/_matrix/client/v3/profile/"+string(alice), "", nil)
	got := r.json(t)
	if got["displayname"] != "Alice from matrix-js-sdk" || got["avatar_url"] != "mxc://example.com/jsAvatar1" || got["m.tz"] != "Europe/London" {
		t.Errorf("profile after the SDK's writes: %s", r.Body)
	}
	if _, ok := got["org.example.languages"]; ok {
		t.Errorf("the key the SDK deleted is still there: %s", r.Body)
	}
}

// ensureJSClientInstalled runs npm ci when node_modules is missing, so
// go test ./... works in a fresh checkout where npm can reach its registry
// or cache; .ci/run runs npm ci itself.
func ensureJSClientInstalled(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(jsClientDir, "node_modules", "matrix-js-sdk", "package.json")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("matrix-js-sdk is not installed and npm is missing: run npm ci in http/%s", jsClientDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund")
	cmd.Dir = jsClientDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in http/%s: %v\n%s", jsClientDir, err, out)
	}
}

package http_test

import (
	"testing"
)

// TestVersionsAdvertiseExtendedProfiles: matrix-js-sdk before v39 enables
// extended profiles only when both MSC4133 flags are advertised.
func TestVersionsAdvertiseExtendedProfiles(t *testing.T) {
	ts := newTestService(t)
	features, _ := ts.do("GET", "/_matrix/client/versions", "", nil).json(t)["unstable_features"].(map[string]any)
	for _, flag := range []string{"uk.tcpip.msc4133", "uk.tcpip.msc4133.stable"} {
		if features[flag] != true {
			t.Errorf("unstable_features lacks %s: %v", flag, features)
		}
	}
}

package appservice_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/profilestore/profilestore/appservice"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/sirupsen/logrus"
)

// At trace level each transaction's body is logged (scripts/e2e-homeserver.sh
// captures real homeserver traffic from it); at debug only its size; above,
// nothing.
func TestTransactionBodyLoggedAtTraceOnly(t *testing.T) {
	reg, err := appservice.NewRegistration("profilestore", "http://127.0.0.1:1", "_profilestore", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	body := `{"events":[{"type":"m.room.topic","event_id":"$x","room_id":"!r:localhost","sender":"@a:localhost","state_key":"","content":{"topic":"hi"}}]}`
	for _, tc := range []struct {
		level      logrus.Level
		logged     bool
		bodyLogged bool
	}{{logrus.InfoLevel, false, false}, {logrus.DebugLevel, true, false}, {logrus.TraceLevel, true, true}} {
		var buf bytes.Buffer
		l := logrus.New()
		l.SetOutput(&buf)
		l.SetFormatter(&logrus.JSONFormatter{})
		l.SetLevel(tc.level)
		ing := appservice.NewIngester(appservice.IngesterOptions{Registration: reg, Logger: l})
		r := pshttp.NewServer(pshttp.Config{Appservice: ing, Logger: l}).Handler()
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/t1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+reg.HSToken)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != 200 {
			t.Fatalf("%v: status %d", tc.level, w.Code)
		}
		var line struct {
			Msg    string `json:"msg"`
			TxnID  string `json:"txn_id"`
			Events int    `json:"events"`
			Body   string `json:"body"`
		}
		found := false
		for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if json.Unmarshal([]byte(s), &line) == nil && line.Msg == "appservice transaction received" {
				found = true
				break
			}
		}
		if found != tc.logged {
			t.Fatalf("%v: logged=%v, want %v (%s)", tc.level, found, tc.logged, buf.String())
		}
		if found && (line.TxnID != "t1" || line.Events != 1 || (line.Body == body) != tc.bodyLogged) {
			t.Fatalf("%v: line = %+v", tc.level, line)
		}
	}
}

package appservice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// The ledger of processed transactions lives in the store, in a stream of
// its own category, so a transaction retried after a restart (or sent to
// another instance on the same EventStoreDB) is recognised. Projections
// subscribe to profile- and room- streams only and never see it.
const (
	ledgerCategory       = "astxn-"
	typeTransactionDone  = "appservice.transaction_processed"
	defaultLedgerWindow  = 4096
	defaultMaxTxnBytes   = 32 << 20
	defaultSeenEventsCap = 100_000
)

// ledgerNamespace derives ledger event ids from (appservice, txnId).
var ledgerNamespace = uuid.MustParse("6a1d4c8e-2f0b-4d6e-9b7a-3c5e8f1a2b4d")

type ledgerPayload struct {
	V          int    `json:"v"`
	TxnID      string `json:"txn_id"`
	BodySHA256 string `json:"body_sha256"`
	Events     int    `json:"events"`
}

// IngesterOptions configure an Ingester.
type IngesterOptions struct {
	// Registration is profilestore's own: its hs_token guards the incoming
	// requests and its as_token asks the homeserver for profiles.
	Registration *Registration
	Store        eventstore.Store
	// Mirror applies the events; nil accepts and records transactions only.
	Mirror *Mirror
	// MaxTransactionBytes caps a transaction body (default 32 MiB: 100 PDUs
	// and 100 EDUs of 64 KiB each fit with room to spare).
	MaxTransactionBytes int64
	// LedgerWindow is how many recent transaction ids are remembered
	// (default 4096); homeservers only ever retry their latest.
	LedgerWindow int
	Logger       logrus.FieldLogger
}

// Ingester processes the transactions a homeserver sends (package http
// serves /_matrix/app/v1 over it) and feeds their events to the mirror.
// Transactions are processed one at a time, in arrival order.
type Ingester struct {
	opts    IngesterOptions
	log     logrus.FieldLogger
	metrics *ingestMetrics

	mu     sync.Mutex // serialises transactions
	loaded bool
	done   map[string]string // txnId -> body sha256
	order  []string          // txnIds, oldest first, for the window
}

// NewIngester returns an Ingester; pass it to the HTTP server as its
// Appservice.
func NewIngester(opts IngesterOptions) *Ingester {
	if opts.MaxTransactionBytes <= 0 {
		opts.MaxTransactionBytes = defaultMaxTxnBytes
	}
	if opts.LedgerWindow <= 0 {
		opts.LedgerWindow = defaultLedgerWindow
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	in := &Ingester{opts: opts, log: opts.Logger.WithField("appservice", opts.Registration.ID), metrics: newIngestMetrics(), done: map[string]string{}}
	if opts.Mirror != nil {
		opts.Mirror.metrics = in.metrics
	}
	return in
}

// Collectors returns the ingestion metrics for registration.
func (in *Ingester) Collectors() []prometheus.Collector { return in.metrics.collectors() }

// HSToken is the token the homeserver presents on every request to
// /_matrix/app/v1 (the registration's hs_token).
func (in *Ingester) HSToken() string { return in.opts.Registration.HSToken }

// transaction is the body of PUT /transactions/{txnId}. Events are decoded
// one by one, so a malformed one never takes the others with it.
type transaction struct {
	Events []json.RawMessage `json:"events"`
}

// Transaction processes the body of PUT /_matrix/app/v1/transactions/{txnId}
// once: a transaction the ledger already holds with the same body is
// acknowledged without being applied again. Errors with an errcode are the
// request's fault (M_TOO_LARGE past MaxTransactionBytes, M_NOT_JSON,
// M_BAD_JSON); IO.PROFILESTORE.UNAVAILABLE means the store or the homeserver
// failed and the homeserver should retry the same transaction later.
func (in *Ingester) Transaction(ctx context.Context, txnID string, body io.Reader) error {
	raw, err := io.ReadAll(io.LimitReader(body, in.opts.MaxTransactionBytes+1))
	if err != nil {
		return domain.Errorf(domain.ErrCodeNotJSON, "Could not read the body")
	}
	if int64(len(raw)) > in.opts.MaxTransactionBytes {
		in.log.WithField("txn_id", txnID).Error("appservice transaction larger than the configured limit; raise appservice.max_transaction_bytes")
		in.metrics.transactions.WithLabelValues("too_large").Inc()
		return domain.Errorf(domain.ErrCodeTooLarge, "Transactions are limited to %d bytes", in.opts.MaxTransactionBytes)
	}
	var txn transaction
	if err := json.Unmarshal(raw, &txn); err != nil {
		in.metrics.transactions.WithLabelValues("malformed").Inc()
		return domain.Errorf(domain.ErrCodeBadJSON, "The body is not a transaction object")
	}
	sum := sha256.Sum256(raw)
	in.logReceived(txnID, raw, len(txn.Events))
	status, err := in.process(ctx, txnID, hex.EncodeToString(sum[:]), txn)
	if err != nil {
		// The store or the homeserver failed, not the input: the homeserver
		// retries the same transaction later. Nothing is lost and, with
		// deterministic event ids, nothing is applied twice.
		in.log.WithError(err).WithField("txn_id", txnID).Warn("appservice transaction not processed; the homeserver will retry")
		in.metrics.transactions.WithLabelValues("failed").Inc()
		return domain.Errorf(domain.ErrCodeUnavailable, "Could not process the transaction now; retry")
	}
	in.metrics.transactions.WithLabelValues(status).Inc()
	return nil
}

// traceBodyLimit caps the transaction body logged at trace level.
const traceBodyLimit = 64 << 10

// logReceived logs a transaction's size at debug level and, at trace level,
// its body (up to traceBodyLimit bytes): what a homeserver really sends, for
// debugging and for test fixtures (scripts/e2e-homeserver.sh captures them).
func (in *Ingester) logReceived(txnID string, body []byte, events int) {
	e := in.log.WithFields(logrus.Fields{"txn_id": txnID, "bytes": len(body), "events": events})
	if e.Logger == nil || !e.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return
	}
	if !e.Logger.IsLevelEnabled(logrus.TraceLevel) {
		e.Debug("appservice transaction received")
		return
	}
	if len(body) > traceBodyLimit {
		body = body[:traceBodyLimit]
		e = e.WithField("body_truncated", true)
	}
	e.WithField("body", string(body)).Trace("appservice transaction received")
}

// process applies a transaction unless the ledger already holds it.
func (in *Ingester) process(ctx context.Context, txnID, bodySum string, txn transaction) (string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.loadLedger(ctx); err != nil {
		return "", err
	}
	if prev, ok := in.done[txnID]; ok {
		if prev == bodySum {
			return "duplicate", nil
		}
		// Same id, other content: the homeserver's counter was reset (a new
		// database). Apply it; event ids still keep the events once-only.
		in.log.WithField("txn_id", txnID).Warn("appservice transaction id reused with a different body; processing it")
	}
	for _, raw := range txn.Events {
		if in.opts.Mirror == nil {
			continue
		}
		if err := in.opts.Mirror.Apply(ctx, raw); err != nil {
			return "", err
		}
	}
	if err := in.record(ctx, txnID, bodySum, len(txn.Events)); err != nil {
		return "", err
	}
	return "processed", nil
}

func (in *Ingester) ledgerStream() string { return ledgerCategory + in.opts.Registration.ID }

// loadLedger reads the most recent ledger entries once.
func (in *Ingester) loadLedger(ctx context.Context) error {
	if in.loaded || in.opts.Store == nil {
		return nil
	}
	recs, err := in.opts.Store.ReadStream(ctx, in.ledgerStream(), ^uint64(0), eventstore.Backwards, in.opts.LedgerWindow)
	if err != nil {
		return fmt.Errorf("read the transaction ledger: %w", err)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		var p ledgerPayload
		if json.Unmarshal(recs[i].Data, &p) != nil {
			continue
		}
		in.remember(p.TxnID, p.BodySHA256)
	}
	in.loaded = true
	return nil
}

func (in *Ingester) remember(txnID, sum string) {
	if _, ok := in.done[txnID]; !ok {
		in.order = append(in.order, txnID)
	}
	in.done[txnID] = sum
	for len(in.order) > in.opts.LedgerWindow {
		delete(in.done, in.order[0])
		in.order = in.order[1:]
	}
}

// record appends the transaction to the ledger (idempotently: the event id
// is derived from the appservice, the txnId and the body).
func (in *Ingester) record(ctx context.Context, txnID, sum string, events int) error {
	if in.opts.Store != nil {
		data, _ := json.Marshal(ledgerPayload{V: 1, TxnID: txnID, BodySHA256: sum, Events: events})
		meta, _ := json.Marshal(domain.Metadata{OccurredAt: time.Now().UTC(), Source: "appservice:" + in.opts.Registration.ID, IdempotencyKey: txnID})
		id := uuid.NewSHA1(ledgerNamespace, []byte(in.opts.Registration.ID+"\x00"+txnID+"\x00"+sum))
		_, err := in.opts.Store.Append(ctx, in.ledgerStream(), eventstore.Any, []eventstore.EventData{{ID: id, Type: typeTransactionDone, Data: data, Metadata: meta}})
		if err != nil {
			return fmt.Errorf("record transaction %s: %w", txnID, err)
		}
	}
	in.remember(txnID, sum)
	return nil
}

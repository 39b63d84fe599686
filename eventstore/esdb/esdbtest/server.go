// Package esdbtest is test support only: an in-process stand-in for an
// EventStoreDB node that speaks its gRPC protocol (the generated stubs that
// ship with EventStore-Client-Go), so the esdb adapter can be tested on
// machines where no EventStoreDB can run. Nothing outside tests imports it.
//
// It implements what the v4 client uses against a single insecure node:
// ServerFeatures.GetSupportedMethods and Gossip.Read at connect time, and the
// Streams service: Append (expected revisions, EventStoreDB's event-id
// idempotency rules, wrong-expected-version replies), Read of streams and of
// $all in both directions, catch-up subscriptions to streams and to $all with
// server-side stream-name / event-type filters (prefix or regex) and
// checkpoints, Delete (soft) and Tombstone (hard delete).
//
// It does not implement BatchAppend, persistent subscriptions, projections,
// users, operations (scavenging is a Go method here), access control, TLS,
// link resolution, max-age/max-count metadata, or explicit transactions.
// Positions follow current servers: commit and prepare are equal, one per
// event, increasing by the event's approximate size on disk.
//
// The data lives in memory and survives Stop and Restart, so tests can take
// the node away under a client and bring it back on the same address.
package esdbtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/gossip"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Version is the server version the stand-in reports to clients.
const Version = "24.10.0"

// MaxAppendSize is the largest append, in bytes of event data, the server
// accepts (EventStoreDB's default).
const MaxAppendSize = 1 << 20

// deletedRevision is the stream revision EventStoreDB gives a tombstone.
const deletedRevision = uint64(1<<63 - 1)

// Server is an in-process EventStoreDB node for tests.
type Server struct {
	db *database

	mu   sync.Mutex
	addr string
	lis  net.Listener
	grpc *grpc.Server

	loseAck atomic.Int32
}

// Start starts a server on 127.0.0.1 with an empty database (apart from the
// system event a fresh node writes) and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{db: newDatabase()}
	if err := s.listen("127.0.0.1:0"); err != nil {
		tb.Fatalf("esdbtest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Addr is the host:port the server listens on; it stays the same across
// Restart.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL is a connection string for a single insecure node. The discovery
// settings are tightened so a client notices an outage within about 150ms
// instead of the default second.
func (s *Server) URL() string {
	return "esdb://" + s.Addr() + "?tls=false&maxDiscoverAttempts=3&discoveryInterval=50"
}

// Stop drops every connection and stops listening, as a crashed or
// restarting node would; the data is kept. Stopping twice is harmless.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpc
	s.grpc, s.lis = nil, nil
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
}

// Restart listens again on the same address with the data kept. Like a real
// restart it forgets the in-memory cache of recent event ids, so appends with
// expected revision "any" are no longer deduplicated against earlier ones.
func (s *Server) Restart() error {
	s.Stop()
	s.db.mu.Lock()
	s.db.recentIDs = map[uuid.UUID]idInfo{}
	s.db.mu.Unlock()
	var err error
	// The port may linger briefly after the old listener closed.
	for i := 0; i < 50; i++ {
		if err = s.listen(s.Addr()); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// LoseNextAppendAck makes the next successful append commit its events and
// then fail the call with Unavailable, as if the connection dropped before
// the reply arrived.
func (s *Server) LoseNextAppendAck() { s.loseAck.Store(1) }

// Scavenge removes from the log the events of tombstoned streams (except the
// tombstone) and of soft-deleted stream revisions, as an EventStoreDB
// scavenge does for completed chunks.
func (s *Server) Scavenge() { s.db.scavenge() }

// LogContains reports whether any stored event's data or metadata contains b,
// i.e. whether the bytes could still be found in the database files.
func (s *Server) LogContains(b []byte) bool {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	for _, r := range s.db.log {
		if bytes.Contains(r.data, b) || bytes.Contains(r.meta, b) {
			return true
		}
	}
	return false
}

func (s *Server) listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(
		// The client pings every 10s even without calls in flight; the gRPC
		// default policy would answer that with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	api.RegisterStreamsServer(g, &streamsService{db: s.db, server: s})
	serverfeatures.RegisterServerFeaturesServer(g, featuresService{})
	gossip.RegisterGossipServer(g, gossipService{server: s})
	s.mu.Lock()
	s.addr, s.lis, s.grpc = lis.Addr().String(), lis, g
	s.mu.Unlock()
	go func() { _ = g.Serve(lis) }()
	return nil
}

// database is the node's storage: one log of records in position order and
// a stream index over it.
type database struct {
	mu      sync.Mutex
	log     []*record
	streams map[string]*streamState
	next    uint64
	// recentIDs is EventStoreDB's in-memory cache of committed event ids,
	// used to deduplicate appends with expected revision "any".
	recentIDs map[uuid.UUID]idInfo
	// changed is closed and replaced whenever records are committed.
	changed chan struct{}
}

type record struct {
	id       uuid.UUID
	stream   string
	revision uint64
	typ      string
	content  string
	data     []byte
	meta     []byte
	created  int64 // .NET ticks since the Unix epoch
	pos      uint64
}

type streamState struct {
	records []*record // by revision; nil once scavenged
	last    uint64
	exists  bool // has ever had an event
	// truncateBefore hides revisions below it (soft delete).
	truncateBefore uint64
	softDeleted    bool
	tombstoned     bool
}

type idInfo struct {
	stream   string
	revision uint64
}

func newDatabase() *database {
	db := &database{
		streams:   map[string]*streamState{},
		recentIDs: map[uuid.UUID]idInfo{},
		changed:   make(chan struct{}),
		// The first chunk starts with a header and an epoch record.
		next: 256,
	}
	// A fresh node writes its settings as a system event; clients must not
	// mistake it for theirs.
	db.commit("$settings", []*record{{id: uuid.New(), typ: "$settings", content: "application/json", data: []byte(`{"$userStreamAcl":{},"$systemStreamAcl":{}}`)}})
	return db
}

// commit appends records to stream; the caller holds no lock.
func (db *database) commit(stream string, recs []*record) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.commitLocked(stream, recs)
}

func (db *database) commitLocked(stream string, recs []*record) {
	st := db.stream(stream)
	now := time.Now().UnixNano() / 100
	for _, r := range recs {
		r.stream = stream
		if st.exists {
			st.last++
		} else {
			st.last, st.exists = 0, true
		}
		r.revision = st.last
		r.created = now
		r.pos = db.next
		db.next += uint64(64 + len(stream) + len(r.typ) + len(r.data) + len(r.meta))
		db.log = append(db.log, r)
		st.records = append(st.records, r)
		db.recentIDs[r.id] = idInfo{stream: stream, revision: r.revision}
	}
	if st.softDeleted {
		st.softDeleted = false
	}
	close(db.changed)
	db.changed = make(chan struct{})
}

func (db *database) stream(name string) *streamState {
	st := db.streams[name]
	if st == nil {
		st = &streamState{}
		db.streams[name] = st
	}
	return st
}

// appendOutcome is the result of an append under EventStoreDB's rules.
type appendOutcome struct {
	deleted      bool
	wrongVersion bool
	// current revision; currentExists false means no stream
	current       uint64
	currentExists bool
	// position of the last event written (or found, when idempotent)
	pos uint64
}

// expectation mirrors the append's expected revision.
type expectation struct {
	any, noStream, streamExists bool
	revision                    uint64
}

// append writes recs to stream if the expectation holds, deciding
// idempotency the way EventStoreDB's index writer does: with "any" (or
// "stream exists") the ids are looked up in the recent-id cache; with an
// exact revision (or "no stream") that is behind the stream, the events
// after it are compared id by id. A full match is the earlier append's
// result; a partial one is a wrong expected version.
func (db *database) append(stream string, exp expectation, recs []*record) appendOutcome {
	db.mu.Lock()
	defer db.mu.Unlock()
	st := db.streams[stream]
	if st != nil && st.tombstoned {
		return appendOutcome{deleted: true}
	}
	exists := st != nil && st.exists
	out := appendOutcome{currentExists: exists}
	if exists {
		out.current = st.last
	}
	wrong := func() appendOutcome { out.wrongVersion = true; return out }
	idempotent := func(lastRev uint64) appendOutcome {
		out.current, out.currentExists = lastRev, true
		if r := st.records[lastRev]; r != nil {
			out.pos = r.pos
		}
		return out
	}

	if exp.any || exp.streamExists {
		if exp.streamExists && (!exists || st.softDeleted) {
			return wrong()
		}
		if len(recs) > 0 {
			if first, ok := db.recentIDs[recs[0].id]; ok && first.stream == stream {
				last := first
				for _, r := range recs[1:] {
					info, ok := db.recentIDs[r.id]
					if !ok || info.stream != stream {
						return wrong()
					}
					last = info
				}
				return idempotent(last.revision)
			}
		}
		return db.write(stream, recs, out)
	}

	// "no stream" is revision -1 in EventStoreDB's arithmetic.
	behind := exists && (exp.noStream || exp.revision < st.last)
	if behind {
		next := uint64(0)
		if !exp.noStream {
			next = exp.revision + 1
		}
		matched := len(recs) > 0
		for i, r := range recs {
			rev := next + uint64(i)
			if rev > st.last || int(rev) >= len(st.records) || st.records[rev] == nil || st.records[rev].id != r.id {
				matched = false
				if i == 0 && exp.noStream && st.softDeleted {
					// Recreating a soft-deleted stream.
					return db.write(stream, recs, out)
				}
				break
			}
		}
		if !matched {
			return wrong()
		}
		return idempotent(next + uint64(len(recs)) - 1)
	}
	if exp.noStream || (exists && exp.revision == st.last) {
		return db.write(stream, recs, out)
	}
	return wrong()
}

func (db *database) write(stream string, recs []*record, out appendOutcome) appendOutcome {
	if len(recs) == 0 {
		return out
	}
	db.commitLocked(stream, recs)
	out.current, out.currentExists = db.streams[stream].last, true
	out.pos = recs[len(recs)-1].pos
	return out
}

func (db *database) tombstone(stream string, exp expectation) (pos uint64, err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	st := db.streams[stream]
	if st != nil && st.tombstoned {
		return 0, errStreamDeleted(stream)
	}
	if err := checkDeleteExpectation(stream, st, exp); err != nil {
		return 0, err
	}
	st = db.stream(stream)
	r := &record{id: uuid.New(), stream: stream, revision: deletedRevision, typ: "$streamDeleted", content: "application/octet-stream",
		created: time.Now().UnixNano() / 100, pos: db.next}
	db.next += uint64(64 + len(stream))
	db.log = append(db.log, r)
	st.tombstoned, st.exists = true, true
	close(db.changed)
	db.changed = make(chan struct{})
	return r.pos, nil
}

func (db *database) softDelete(stream string, exp expectation) (pos uint64, err error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	st := db.streams[stream]
	if st != nil && st.tombstoned {
		return 0, errStreamDeleted(stream)
	}
	if err := checkDeleteExpectation(stream, st, exp); err != nil {
		return 0, err
	}
	if st == nil || !st.exists {
		return 0, nil
	}
	st.truncateBefore = st.last + 1
	st.softDeleted = true
	return db.next, nil
}

func checkDeleteExpectation(stream string, st *streamState, exp expectation) error {
	exists := st != nil && st.exists && !st.softDeleted
	var cur uint64
	if exists {
		cur = st.last
	}
	ok := exp.any ||
		(exp.noStream && !exists) ||
		(exp.streamExists && exists) ||
		(!exp.noStream && !exp.streamExists && exists && cur == exp.revision)
	if ok {
		return nil
	}
	actual := ""
	if exists {
		actual = strconv.FormatUint(cur, 10)
	}
	return status.Error(codes.FailedPrecondition, fmt.Sprintf("Delete failed due to WrongExpectedVersion. Stream: %s, Actual version: %s", stream, actual))
}

func (db *database) scavenge() {
	db.mu.Lock()
	defer db.mu.Unlock()
	kept := db.log[:0]
	for _, r := range db.log {
		st := db.streams[r.stream]
		drop := st != nil && r.revision != deletedRevision &&
			(st.tombstoned || r.revision < st.truncateBefore)
		if drop {
			st.records[r.revision] = nil
			continue
		}
		kept = append(kept, r)
	}
	for i := len(kept); i < len(db.log); i++ {
		db.log[i] = nil
	}
	db.log = kept
	for id, info := range db.recentIDs {
		if st := db.streams[info.stream]; st != nil && st.records[info.revision] == nil {
			delete(db.recentIDs, id)
		}
	}
}

// after returns the index in the log of the first record at or after pos.
func (db *database) indexAt(pos uint64) int {
	return sort.Search(len(db.log), func(i int) bool { return db.log[i].pos >= pos })
}

func errStreamDeleted(stream string) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("Event stream '%s' is deleted.", stream))
	return &trailerError{st: st, md: metadata.Pairs("exception", "stream-deleted", "stream-name", stream)}
}

// trailerError carries the trailers EventStoreDB attaches to its errors.
type trailerError struct {
	st *status.Status
	md metadata.MD
}

func (e *trailerError) Error() string              { return e.st.Err().Error() }
func (e *trailerError) GRPCStatus() *status.Status { return e.st }

func withTrailers(ctx context.Context, err error) error {
	var te *trailerError
	if errors.As(err, &te) {
		_ = grpc.SetTrailer(ctx, te.md)
		return te.st.Err()
	}
	return err
}

type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
}

func (featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const streams = "event_store.client.streams.streams"
	m := func(name string) *serverfeatures.SupportedMethod {
		return &serverfeatures.SupportedMethod{MethodName: name, ServiceName: streams}
	}
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: Version,
		Methods:                 []*serverfeatures.SupportedMethod{m("read"), m("append"), m("delete"), m("tombstone")},
	}, nil
}

type gossipService struct {
	gossip.UnimplementedGossipServer
	server *Server
}

// Read describes a one-node cluster whose leader is this server, for
// connection strings that ask for discovery.
func (g gossipService) Read(context.Context, *shared.Empty) (*gossip.ClusterInfo, error) {
	host, port, err := net.SplitHostPort(g.server.Addr())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &gossip.ClusterInfo{Members: []*gossip.MemberInfo{{
		InstanceId: &shared.UUID{Value: &shared.UUID_String_{String_: "00000000-0000-0000-0000-000000000001"}},
		TimeStamp:  time.Now().UnixNano(),
		State:      gossip.MemberInfo_Leader,
		IsAlive:    true,
		HttpEndPoint: &gossip.EndPoint{
			Address: host,
			Port:    uint32(p),
		},
	}}}, nil
}

// ConnectionStringForDiscovery is a connection string that makes the client
// read gossip before connecting.
func (s *Server) ConnectionStringForDiscovery() string {
	return "esdb+discover://" + s.Addr() + "?tls=false&" + url.Values{"maxDiscoverAttempts": {"3"}}.Encode()
}

// filter is a compiled server-side subscription or read filter.
type filter struct {
	onType   bool
	prefixes []string
	re       *regexp.Regexp
}

func compileFilter(f *api.ReadReq_Options_FilterOptions) (*filter, error) {
	if f == nil {
		return nil, nil
	}
	var expr *api.ReadReq_Options_FilterOptions_Expression
	out := &filter{}
	switch x := f.Filter.(type) {
	case *api.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = x.StreamIdentifier
	case *api.ReadReq_Options_FilterOptions_EventType:
		expr, out.onType = x.EventType, true
	default:
		return nil, status.Error(codes.InvalidArgument, "filter has neither a stream nor an event-type expression")
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "invalid filter regex: "+err.Error())
		}
		out.re = re
	} else {
		out.prefixes = expr.GetPrefix()
	}
	return out, nil
}

func (f *filter) match(r *record) bool {
	if f == nil {
		return true
	}
	s := r.stream
	if f.onType {
		s = r.typ
	}
	if f.re != nil {
		return f.re.MatchString(s)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

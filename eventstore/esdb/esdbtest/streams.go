package esdbtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type streamsService struct {
	api.UnimplementedStreamsServer
	db     *database
	server *Server
}

func (s *streamsService) Append(call api.Streams_AppendServer) error {
	first, err := call.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "the first append message must carry the options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	var exp expectation
	switch x := opts.ExpectedStreamRevision.(type) {
	case *api.AppendReq_Options_Any:
		exp.any = true
	case *api.AppendReq_Options_NoStream:
		exp.noStream = true
	case *api.AppendReq_Options_StreamExists:
		exp.streamExists = true
	case *api.AppendReq_Options_Revision:
		exp.revision = x.Revision
	default:
		return status.Error(codes.InvalidArgument, "append without an expected revision")
	}

	var recs []*record
	size := 0
	for {
		msg, err := call.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		pm := msg.GetProposedMessage()
		if pm == nil {
			return status.Error(codes.InvalidArgument, "expected a proposed message")
		}
		typ, okType := pm.Metadata["type"]
		content, okContent := pm.Metadata["content-type"]
		if !okType || !okContent {
			return withTrailers(call.Context(), &trailerError{
				st: status.New(codes.InvalidArgument, "Required Metadata Property is missing"),
				md: metadata.Pairs("exception", "missing-required-metadata-property", "required-metadata-properties", "type,content-type"),
			})
		}
		id, err := uuidFromProto(pm.GetId())
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		size += len(pm.Data) + len(pm.CustomMetadata) + len(typ)
		if size > MaxAppendSize {
			return withTrailers(call.Context(), &trailerError{
				st: status.New(codes.InvalidArgument, fmt.Sprintf("Maximum Append Size of %d Exceeded.", MaxAppendSize)),
				md: metadata.Pairs("exception", "maximum-append-size-exceeded", "maximum-append-size", strconv.Itoa(MaxAppendSize)),
			})
		}
		recs = append(recs, &record{id: id, typ: typ, content: content, data: clone(pm.Data), meta: clone(pm.CustomMetadata)})
	}

	out := s.db.append(stream, exp, recs)
	if out.deleted {
		return withTrailers(call.Context(), errStreamDeleted(stream))
	}
	resp := &api.AppendResp{}
	if out.wrongVersion {
		w := &api.AppendResp_WrongExpectedVersion{}
		if out.currentExists {
			w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: out.current}
		} else {
			w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		}
		switch {
		case exp.any:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		case exp.noStream:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
		case exp.streamExists:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		default:
			w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: exp.revision}
		}
		resp.Result = &api.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}
		return call.SendAndClose(resp)
	}
	ok := &api.AppendResp_Success{}
	if out.currentExists {
		ok.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: out.current}
	} else {
		ok.CurrentRevisionOption = &api.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	}
	if out.pos != 0 {
		ok.PositionOption = &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{CommitPosition: out.pos, PreparePosition: out.pos}}
	} else {
		ok.PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	}
	if s.server.loseAck.CompareAndSwap(1, 0) {
		return status.Error(codes.Unavailable, "esdbtest: connection lost after the append was committed")
	}
	resp.Result = &api.AppendResp_Success_{Success: ok}
	return call.SendAndClose(resp)
}

func (s *streamsService) Delete(ctx context.Context, req *api.DeleteReq) (*api.DeleteResp, error) {
	o := req.GetOptions()
	var exp expectation
	switch x := o.GetExpectedStreamRevision().(type) {
	case *api.DeleteReq_Options_Any:
		exp.any = true
	case *api.DeleteReq_Options_NoStream:
		exp.noStream = true
	case *api.DeleteReq_Options_StreamExists:
		exp.streamExists = true
	case *api.DeleteReq_Options_Revision:
		exp.revision = x.Revision
	}
	pos, err := s.db.softDelete(string(o.GetStreamIdentifier().GetStreamName()), exp)
	if err != nil {
		return nil, withTrailers(ctx, err)
	}
	return &api.DeleteResp{PositionOption: &api.DeleteResp_Position_{Position: &api.DeleteResp_Position{CommitPosition: pos, PreparePosition: pos}}}, nil
}

func (s *streamsService) Tombstone(ctx context.Context, req *api.TombstoneReq) (*api.TombstoneResp, error) {
	o := req.GetOptions()
	var exp expectation
	switch x := o.GetExpectedStreamRevision().(type) {
	case *api.TombstoneReq_Options_Any:
		exp.any = true
	case *api.TombstoneReq_Options_NoStream:
		exp.noStream = true
	case *api.TombstoneReq_Options_StreamExists:
		exp.streamExists = true
	case *api.TombstoneReq_Options_Revision:
		exp.revision = x.Revision
	}
	pos, err := s.db.tombstone(string(o.GetStreamIdentifier().GetStreamName()), exp)
	if err != nil {
		return nil, withTrailers(ctx, err)
	}
	return &api.TombstoneResp{PositionOption: &api.TombstoneResp_Position_{Position: &api.TombstoneResp_Position{CommitPosition: pos, PreparePosition: pos}}}, nil
}

// Read serves stream and $all reads and catch-up subscriptions.
func (s *streamsService) Read(req *api.ReadReq, call api.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "read without options")
	}
	var f *filter
	if fo := o.GetFilter(); fo != nil {
		var err error
		if f, err = compileFilter(fo); err != nil {
			return err
		}
	}
	stringIDs := o.GetUuidOption().GetString_() != nil
	send := func(r *record) error {
		return call.Send(&api.ReadResp{Content: &api.ReadResp_Event{Event: readEvent(r, stringIDs)}})
	}
	if o.GetSubscription() != nil {
		return s.subscribe(o, f, call, send)
	}
	count := o.GetCount()
	backwards := o.GetReadDirection() == api.ReadReq_Options_Backwards

	if so := o.GetStream(); so != nil {
		name := string(so.GetStreamIdentifier().GetStreamName())
		recs, found, err := s.readStream(name, so, backwards, count)
		if err != nil {
			return withTrailers(call.Context(), err)
		}
		if !found {
			return call.Send(&api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
				StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)}}}})
		}
		for _, r := range recs {
			if err := send(r); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range s.readAll(o.GetAll(), backwards, count, f) {
		if err := send(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamsService) readStream(name string, so *api.ReadReq_Options_StreamOptions, backwards bool, count uint64) ([]*record, bool, error) {
	db := s.db
	db.mu.Lock()
	defer db.mu.Unlock()
	st := db.streams[name]
	if st != nil && st.tombstoned {
		return nil, false, errStreamDeleted(name)
	}
	if st == nil || !st.exists || st.softDeleted {
		return nil, false, nil
	}
	var from uint64
	switch x := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_Start:
		from = 0
		if backwards {
			return nil, true, nil
		}
	case *api.ReadReq_Options_StreamOptions_End:
		if !backwards {
			return nil, true, nil
		}
		from = st.last
	case *api.ReadReq_Options_StreamOptions_Revision:
		from = x.Revision
	}
	var out []*record
	visible := func(rev uint64) *record {
		if rev < st.truncateBefore || rev >= uint64(len(st.records)) {
			return nil
		}
		return st.records[rev]
	}
	if backwards {
		if from > st.last {
			from = st.last
		}
		for rev := int64(from); rev >= 0 && uint64(len(out)) < count; rev-- {
			if r := visible(uint64(rev)); r != nil {
				out = append(out, r)
			}
		}
		return out, true, nil
	}
	for rev := from; rev <= st.last && uint64(len(out)) < count; rev++ {
		if r := visible(rev); r != nil {
			out = append(out, r)
		}
	}
	return out, true, nil
}

// readAll reads $all: forwards from a position inclusive, backwards from a
// position exclusive, as EventStoreDB does.
func (s *streamsService) readAll(ao *api.ReadReq_Options_AllOptions, backwards bool, count uint64, f *filter) []*record {
	db := s.db
	db.mu.Lock()
	defer db.mu.Unlock()
	var i int
	switch x := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Start:
		i = 0
	case *api.ReadReq_Options_AllOptions_End:
		i = len(db.log)
	case *api.ReadReq_Options_AllOptions_Position:
		i = db.indexAt(x.Position.GetCommitPosition())
	}
	var out []*record
	if backwards {
		for j := i - 1; j >= 0 && uint64(len(out)) < count; j-- {
			if f.match(db.log[j]) {
				out = append(out, db.log[j])
			}
		}
		return out
	}
	for j := i; j < len(db.log) && uint64(len(out)) < count; j++ {
		if f.match(db.log[j]) {
			out = append(out, db.log[j])
		}
	}
	return out
}

// subscribe runs a catch-up subscription: a confirmation, the stored events
// after the start, a caught-up marker, then live events as they commit.
// Subscriptions to $all start strictly after the given position.
func (s *streamsService) subscribe(o *api.ReadReq_Options, f *filter, call api.Streams_ReadServer, send func(*record) error) error {
	ctx := call.Context()
	db := s.db
	if err := call.Send(&api.ReadResp{Content: &api.ReadResp_Confirmation{Confirmation: &api.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString()}}}); err != nil {
		return err
	}

	// match decides which log records the subscription delivers; after is
	// the log position the next record must exceed.
	var match func(*record) bool
	var after uint64
	started := false
	db.mu.Lock()
	if so := o.GetStream(); so != nil {
		name := string(so.GetStreamIdentifier().GetStreamName())
		var fromRev uint64
		var fromEnd, fromStart bool
		switch x := so.GetRevisionOption().(type) {
		case *api.ReadReq_Options_StreamOptions_Start:
			fromStart = true
		case *api.ReadReq_Options_StreamOptions_End:
			fromEnd = true
		case *api.ReadReq_Options_StreamOptions_Revision:
			fromRev = x.Revision
		}
		match = func(r *record) bool {
			return r.stream == name && (fromStart || r.revision > fromRev)
		}
		if fromEnd {
			after, started = db.next, true
		}
	} else {
		switch x := o.GetAll().GetAllOption().(type) {
		case *api.ReadReq_Options_AllOptions_Start:
		case *api.ReadReq_Options_AllOptions_End:
			after, started = db.next, true
		case *api.ReadReq_Options_AllOptions_Position:
			after, started = x.Position.GetCommitPosition(), true
		}
		match = f.match
	}
	db.mu.Unlock()

	var window uint64
	if fo := o.GetFilter(); fo != nil {
		window = uint64(fo.GetMax())
		if window == 0 {
			window = 32
		}
		if m := fo.GetCheckpointIntervalMultiplier(); m > 0 {
			window *= uint64(m)
		}
	}
	scanned := uint64(0)
	caughtUp := false
	for {
		db.mu.Lock()
		i := 0
		if started {
			i = db.indexAt(after + 1)
		}
		batch := append([]*record(nil), db.log[i:min(len(db.log), i+256)]...)
		changed := db.changed
		db.mu.Unlock()

		for _, r := range batch {
			after, started = r.pos, true
			if match(r) {
				if err := send(r); err != nil {
					return err
				}
			}
			scanned++
			if window > 0 && scanned%window == 0 {
				if err := call.Send(&api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
					CommitPosition: r.pos, PreparePosition: r.pos}}}); err != nil {
					return err
				}
			}
		}
		if len(batch) > 0 {
			continue
		}
		if !caughtUp {
			caughtUp = true
			if err := call.Send(&api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func readEvent(r *record, stringIDs bool) *api.ReadResp_ReadEvent {
	id := &shared.UUID{}
	if stringIDs {
		id.Value = &shared.UUID_String_{String_: r.id.String()}
	} else {
		id.Value = &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
			MostSignificantBits:  int64(binary.BigEndian.Uint64(r.id[:8])),
			LeastSignificantBits: int64(binary.BigEndian.Uint64(r.id[8:])),
		}}
	}
	return &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               id,
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
			StreamRevision:   r.revision,
			PreparePosition:  r.pos,
			CommitPosition:   r.pos,
			Metadata: map[string]string{
				"type":         r.typ,
				"content-type": r.content,
				"created":      strconv.FormatInt(r.created, 10),
			},
			CustomMetadata: r.meta,
			Data:           r.data,
		},
		Position: &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.pos},
	}
}

func uuidFromProto(u *shared.UUID) (uuid.UUID, error) {
	if s := u.GetStructured(); s != nil {
		var id uuid.UUID
		binary.BigEndian.PutUint64(id[:8], uint64(s.MostSignificantBits))
		binary.BigEndian.PutUint64(id[8:], uint64(s.LeastSignificantBits))
		return id, nil
	}
	if u.GetString_() != "" {
		return uuid.Parse(u.GetString_())
	}
	return uuid.UUID{}, errors.New("event without an id")
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return []byte{}
	}
	return append([]byte(nil), b...)
}

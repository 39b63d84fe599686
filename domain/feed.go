package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/profilestore/profilestore/eventstore"
)

// sealedFields are the payload members that hold sealed personal values
// (docs/EVENTS.md).
var sealedFields = []string{"value", "displayname", "avatar_url"}

// OpenedPayload is a stored payload with its sealed values opened, for the
// readers of the change feed: the same JSON object as docs/EVENTS.md with
// "s1.…" strings replaced by the values themselves.
type OpenedPayload struct {
	Data json.RawMessage
	// Subject is the user the personal values belong to.
	Subject UserID
	// Erased is true when a value could not be opened because its owner was
	// erased; that value is left out of Data.
	Erased bool
}

// OpenPayload opens the sealed values of a recorded event's payload. Values
// of erased users are dropped and reported, never an error; a payload that
// is not a JSON object is an error.
func OpenPayload(ctx context.Context, s *Sealer, rec eventstore.RecordedEvent) (OpenedPayload, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rec.Data, &fields); err != nil {
		return OpenedPayload{}, fmt.Errorf("payload of %s at %s: %w", rec.Type, rec.Position, err)
	}
	out := OpenedPayload{Subject: StreamOwner(rec.Stream)}
	if raw, ok := fields["user_id"]; ok {
		var u UserID
		_ = json.Unmarshal(raw, &u)
		out.Subject = u
	}
	for _, name := range sealedFields {
		raw, ok := fields[name]
		if !ok {
			continue
		}
		var sealed string
		if json.Unmarshal(raw, &sealed) != nil || !strings.HasPrefix(sealed, "s1.") {
			continue
		}
		plain, err := s.Open(ctx, out.Subject, Sealed(sealed))
		switch {
		case errors.Is(err, ErrErased):
			delete(fields, name)
			out.Erased = true
		case err != nil:
			return OpenedPayload{}, err
		default:
			fields[name] = plain
		}
	}
	if moved, ok := s.movedHide(rec.Stream, rec.Revision); ok && rec.Type == TypeEntryHidden {
		// The entry is elsewhere in this store than the stored hide says
		// (an import, see moved.go): the feed names where it is.
		fields["position"], _ = json.Marshal(moved.String())
	}
	data, err := json.Marshal(fields)
	if err != nil {
		return OpenedPayload{}, err
	}
	out.Data = data
	return out, nil
}

// WithoutPersonalValues returns the payload without its personal values,
// which is how a hidden entry reads for those who may not see it.
func WithoutPersonalValues(data json.RawMessage) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return json.RawMessage(`{}`) // fail closed
	}
	for _, name := range sealedFields {
		delete(fields, name)
	}
	out, _ := json.Marshal(fields)
	return out
}

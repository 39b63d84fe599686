package eventstore

import (
	"encoding/json"
	"time"
)

// JSONEvent is the JSON form of a recorded event that exports and the change
// feed share (docs/EVENTS.md): a public contract, so fields only ever grow.
type JSONEvent struct {
	Position string          `json:"position"`
	Stream   string          `json:"stream"`
	Revision uint64          `json:"revision"`
	ID       string          `json:"event_id"`
	Type     string          `json:"type"`
	Recorded time.Time       `json:"recorded"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// NewJSONEvent renders a recorded event; empty metadata is left out.
func NewJSONEvent(rec RecordedEvent) JSONEvent {
	e := JSONEvent{Position: rec.Position.String(), Stream: rec.Stream, Revision: rec.Revision,
		ID: rec.ID.String(), Type: rec.Type, Recorded: rec.Recorded, Data: rec.Data}
	if len(rec.Metadata) > 0 {
		e.Metadata = rec.Metadata
	}
	return e
}

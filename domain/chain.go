package domain

import (
	"fmt"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// chainEvents links a batch of encoded events, about to be appended with
// the expected revision, to the stream's last event, whose hash is prev
// (integrity.Zero for a new stream), and returns the hash of the batch's
// last event: the stream's head once the append succeeds. Every append of
// the command side goes through it, one event or many (docs/INTEGRITY.md).
func chainEvents(stream string, expected eventstore.ExpectedRevision, prev integrity.Hash, data []eventstore.EventData) (integrity.Hash, error) {
	first := uint64(0)
	if rev, ok := expected.Revision(); ok {
		first = rev + 1
	} else if !expected.IsNoStream() {
		return prev, fmt.Errorf("chain %s: an append needs an exact expected revision to be chained", stream)
	}
	return integrity.Chain(stream, first, prev, data)
}

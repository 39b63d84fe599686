package integrity_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// BenchmarkChain is the hot-path cost of chaining one typical event.
func BenchmarkChain(b *testing.B) {
	data := []byte(`{"v":1,"key":"displayname","value":"s1.1.qYc8hJ2lM3kN4oP5qR6sT7uV8wX9yZ0aB1cD2eF3gH4iJ5kL6mN7oP8","propagate_to":"unchanged"}`)
	meta := []byte(`{"occurred_at":"2026-11-25T12:00:00Z","actor":"@alice:example.com","source":"client"}`)
	id := uuid.New()
	var prev integrity.Hash
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		evs := []eventstore.EventData{{ID: id, Type: "profile.field_set", Data: data, Metadata: meta}}
		var err error
		if prev, err = integrity.Chain("profile-@alice:example.com", uint64(i), prev, evs); err != nil {
			b.Fatal(err)
		}
	}
}

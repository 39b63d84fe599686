package domain_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// TestWriteWithUnstorableTimeIsBadInput: metadata times come from outside
// (appservice events, imports); one JSON cannot hold is refused with an
// errcode (a 4xx, never a 500) and appends nothing.
func TestWriteWithUnstorableTimeIsBadInput(t *testing.T) {
	store, keys := openStore(t)
	profiles := domain.NewProfileService(store, domain.NewSealer(keys), domain.DefaultPolicy)
	ctx := context.Background()
	v, _ := json.Marshal("Alice")
	for _, at := range []time.Time{time.UnixMilli(253402300800000), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		_, err := profiles.SetField(ctx, domain.SetField{User: "@alice:example.com", Actor: domain.Actor{User: "@alice:example.com"}, Key: "displayname", Value: v,
			Meta: domain.Metadata{OccurredAt: at}}, nil)
		if domain.ErrorCode(err) != domain.ErrCodeInvalidParam {
			t.Errorf("write at %v: %v, want %s", at, err, domain.ErrCodeInvalidParam)
		}
	}
	if head, _ := store.Head(ctx); head != eventstore.Start {
		t.Errorf("refused writes moved the log to %v", head)
	}
	if _, err := profiles.SetField(ctx, domain.SetField{User: "@alice:example.com", Actor: domain.Actor{User: "@alice:example.com"}, Key: "displayname", Value: v,
		Meta: domain.Metadata{OccurredAt: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}}, nil); err != nil {
		t.Errorf("write in year 9999: %v", err)
	}
}

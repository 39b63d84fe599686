package integrity_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/esdb"
	"github.com/profilestore/profilestore/eventstore/esdb/esdbtest"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// TestChainsSealsAndProofsOnEventStoreDB runs the command side, the seal
// writer, verify and a proof on EventStoreDB (the in-process test server,
// or a real one when PROFILESTORE_ESDB_URL is set): the predecessor comes
// from the expected revision, so nothing depends on the store.
func TestChainsSealsAndProofsOnEventStoreDB(t *testing.T) {
	ctx := context.Background()
	log := logrus.New()
	log.SetOutput(io.Discard)
	url, opts := os.Getenv("PROFILESTORE_ESDB_URL"), esdb.Options{Logger: log}
	if url == "" {
		url = esdbtest.Start(t).URL()
	} else {
		opts.Namespace = fmt.Sprintf("integrity%d.", time.Now().UnixNano())
	}
	store, err := esdb.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	keys, err := esdb.OpenKeyring(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	sealer := domain.NewSealer(keys)
	profiles := domain.NewProfileService(store, sealer, domain.DefaultPolicy)
	eraser := domain.NewEraser(keys, sealer, profiles)
	key := newKey(t)
	writer := integrity.NewWriter(store, integrity.WriterOptions{Key: key, Logger: log})
	var first eventstore.Position
	for w := 0; w < 2; w++ {
		for u := 0; u < 3; u++ {
			v, _ := json.Marshal(fmt.Sprintf("name %d %d", w, u))
			res, err := profiles.SetField(ctx, domain.SetField{User: domain.UserID(fmt.Sprintf("@e%d:example.com", u)), Actor: domain.ServerActor,
				Key: "displayname", Value: v, Meta: domain.Metadata{OccurredAt: time.Now()}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if first.IsStart() {
				first = res.Position
			}
		}
		if _, err := writer.SealNow(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := eraser.Erase(ctx, domain.EraseProfile{User: "@e1:example.com", Actor: domain.ServerActor, Meta: domain.Metadata{OccurredAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.SealNow(ctx); err != nil {
		t.Fatal(err)
	}
	pub := []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}
	r, err := integrity.VerifyStore(ctx, store, pub, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.LastSeal == nil || r.LastSeal.Seq != 3 || r.Events != 10 {
		t.Fatalf("verify on EventStoreDB: %d events, last seal %+v\n%s", r.Events, r.LastSeal, breaks(r))
	}
	if r, err := integrity.VerifyStore(ctx, store, pub, 2, nil, nil); err != nil || !r.OK() || r.LastSeal == nil || r.LastSeal.Seq != 3 {
		t.Fatalf("verify --since 2 on EventStoreDB: %v %+v", err, r)
	}
	pr, err := integrity.Prove(ctx, store, first)
	if err != nil {
		t.Fatal(err)
	}
	if err := integrity.VerifyProof(&pr, pub); err != nil || pr.Seal.Seq != 1 {
		t.Fatalf("proof on EventStoreDB: %v (seal %d)", err, pr.Seal.Seq)
	}
}

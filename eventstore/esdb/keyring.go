package esdb

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/profilestore/profilestore/eventstore"
)

// Keyring is an eventstore.Keyring on EventStoreDB. Each generation of a
// subject's key is one event in its own stream,
// KeyStreamPrefix + subject + "/" + generation, and Destroy hard-deletes
// (tombstones) those streams. A tombstoned stream can never be written
// again, which is why every generation has its own stream; the tombstones
// stay, so generation numbers are never reused.
//
// What Destroy does not do: the bytes of a tombstoned stream stay in the
// database's chunk files (and in backups) until a scavenge has processed
// the chunks holding them; the operator must run scavenges (see
// docs/ESDB.md). Keys in the database are protected only by its access
// control, so an operator who wants them off the database can keep them in
// a local key file instead.
type Keyring struct {
	store *Store
	// firstLive maps a subject to the lowest generation that may still be
	// live: lower ones are known to be destroyed, which stays true.
	firstLive sync.Map
}

var _ eventstore.Keyring = (*Keyring)(nil)

const keyEventType = "profilekey.created"

type keyEvent struct {
	Subject    string `json:"subject"`
	Generation uint32 `json:"generation"`
	Secret     []byte `json:"secret"`
}

// OpenKeyring connects to EventStoreDB like Open; the keyring has its own
// connection.
func OpenKeyring(ctx context.Context, connectionString string, opts Options) (*Keyring, error) {
	s, err := Open(ctx, connectionString, opts)
	if err != nil {
		return nil, err
	}
	return &Keyring{store: s}, nil
}

// Close implements eventstore.Keyring.
func (k *Keyring) Close() error { return k.store.Close() }

func keyStream(subject string, gen uint32) string {
	return KeyStreamPrefix + subject + "/" + strconv.FormatUint(uint64(gen), 10)
}

type keyState int

const (
	keyAbsent keyState = iota
	keyLive
	keyDestroyed
)

// read returns the state of one generation's stream and its key if live.
func (k *Keyring) read(ctx context.Context, subject string, gen uint32) (eventstore.DataKey, keyState, error) {
	c, err := k.store.current()
	if err != nil {
		return eventstore.DataKey{}, 0, err
	}
	evs, found, err := k.store.readStreamRaw(ctx, c, k.store.ns+keyStream(subject, gen), esdb.Start{}, esdb.Forwards, 1)
	if errors.Is(err, ErrStreamDeleted) {
		return eventstore.DataKey{}, keyDestroyed, nil
	}
	if err != nil {
		return eventstore.DataKey{}, 0, err
	}
	if !found || len(evs) == 0 {
		return eventstore.DataKey{}, keyAbsent, nil
	}
	var ke keyEvent
	if err := json.Unmarshal(evs[0].Data, &ke); err != nil || ke.Subject != subject || ke.Generation != gen || len(ke.Secret) != eventstore.KeySize {
		return eventstore.DataKey{}, 0, fmt.Errorf("esdb: key stream %q holds a malformed key event", keyStream(subject, gen))
	}
	key := eventstore.DataKey{Generation: gen}
	copy(key.Secret[:], ke.Secret)
	return key, keyLive, nil
}

func (k *Keyring) start(subject string) uint32 {
	if g, ok := k.firstLive.Load(subject); ok {
		return g.(uint32)
	}
	return 1
}

// Current implements eventstore.Keyring. Concurrent callers agree on one key
// because each generation's stream is created with expected revision "no
// stream".
func (k *Keyring) Current(ctx context.Context, subject string) (eventstore.DataKey, error) {
	for gen := k.start(subject); ; {
		key, state, err := k.read(ctx, subject, gen)
		if err != nil {
			return eventstore.DataKey{}, err
		}
		switch state {
		case keyLive:
			k.firstLive.Store(subject, gen)
			return key, nil
		case keyDestroyed:
			gen++
			continue
		}
		key, err = k.create(ctx, subject, gen)
		switch {
		case err == nil:
			k.firstLive.Store(subject, gen)
			return key, nil
		case errors.Is(err, eventstore.ErrWrongExpectedRevision):
			// Another caller created this generation first: read it.
		case errors.Is(err, ErrStreamDeleted):
			// Created and destroyed meanwhile.
			gen++
		default:
			return eventstore.DataKey{}, err
		}
	}
}

func (k *Keyring) create(ctx context.Context, subject string, gen uint32) (eventstore.DataKey, error) {
	key := eventstore.DataKey{Generation: gen}
	if _, err := rand.Read(key.Secret[:]); err != nil {
		return eventstore.DataKey{}, fmt.Errorf("esdb: new data key: %w", err)
	}
	data, err := json.Marshal(keyEvent{Subject: subject, Generation: gen, Secret: key.Secret[:]})
	if err != nil {
		return eventstore.DataKey{}, err
	}
	meta, _ := json.Marshal(map[string]string{"occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
	_, err = k.store.Append(ctx, keyStream(subject, gen), eventstore.NoStream, []eventstore.EventData{{
		ID: uuid.New(), Type: keyEventType, Data: data, Metadata: meta,
	}})
	if err != nil {
		return eventstore.DataKey{}, err
	}
	return key, nil
}

// Lookup implements eventstore.Keyring. It reads the server every time, so a
// key destroyed through another instance is not served from a cache here.
func (k *Keyring) Lookup(ctx context.Context, subject string, generation uint32) (eventstore.DataKey, error) {
	if generation == 0 {
		return eventstore.DataKey{}, eventstore.ErrKeyDestroyed
	}
	key, state, err := k.read(ctx, subject, generation)
	if err != nil {
		return eventstore.DataKey{}, err
	}
	if state != keyLive {
		return eventstore.DataKey{}, eventstore.ErrKeyDestroyed
	}
	return key, nil
}

// Destroy implements eventstore.Keyring by tombstoning every live
// generation's stream. The key bytes leave the disk only after a scavenge.
func (k *Keyring) Destroy(ctx context.Context, subject string) error {
	gen := k.start(subject)
	for ; ; gen++ {
		_, state, err := k.read(ctx, subject, gen)
		if err != nil {
			return err
		}
		if state == keyAbsent {
			break
		}
		if state == keyLive {
			if err := k.tombstone(ctx, keyStream(subject, gen)); err != nil {
				return err
			}
		}
	}
	k.firstLive.Store(subject, gen)
	return nil
}

func (k *Keyring) tombstone(ctx context.Context, stream string) error {
	s := k.store
	c, err := s.current()
	if err != nil {
		return err
	}
	_, err = call(ctx, func() (*esdb.DeleteResult, error) {
		return c.TombstoneStream(ctx, s.ns+stream, esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Any{}})
	})
	err = s.translate(ctx, c, fmt.Sprintf("tombstone %q", stream), err)
	if errors.Is(err, ErrStreamDeleted) {
		return nil // destroyed concurrently
	}
	return err
}

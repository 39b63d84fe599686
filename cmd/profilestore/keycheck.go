package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
)

// destroyedKeys is implemented by keyrings that remember which key
// generations were destroyed (the embedded keyring), so that a value whose
// key was erased can be told from one whose key was never in the keyring.
type destroyedKeys interface {
	Destroyed(subject string) (uint32, error)
}

// keyCheck counts the sealed values of a log that its keyring cannot open
// and that no erasure explains: the sign of a lost or wrong keys.db. It
// finds the values with domain.Decode over a keyring that records every
// look-up and answers "destroyed", so no value is decrypted.
type keyCheck struct {
	keys   eventstore.Keyring
	probe  *probeKeyring
	sealer *domain.Sealer
}

type subjectGen struct {
	subject string
	gen     uint32
}

// probeKeyring records look-ups and opens nothing.
type probeKeyring struct{ seen map[subjectGen]int }

func (p *probeKeyring) Current(context.Context, string) (eventstore.DataKey, error) {
	return eventstore.DataKey{}, errors.New("key check: no key is created while checking")
}

func (p *probeKeyring) Lookup(_ context.Context, subject string, gen uint32) (eventstore.DataKey, error) {
	p.seen[subjectGen{subject, gen}]++
	return eventstore.DataKey{}, eventstore.ErrKeyDestroyed
}

func (p *probeKeyring) Destroy(context.Context, string) error { return nil }
func (p *probeKeyring) Close() error                          { return nil }

func newKeyCheck(keys eventstore.Keyring) *keyCheck {
	p := &probeKeyring{seen: map[subjectGen]int{}}
	return &keyCheck{keys: keys, probe: p, sealer: domain.NewSealer(p)}
}

// add notes the sealed values of one event.
func (c *keyCheck) add(ctx context.Context, rec eventstore.RecordedEvent) error {
	if !strings.HasPrefix(rec.Stream, domain.ProfileCategory) && !strings.HasPrefix(rec.Stream, domain.RoomCategory) {
		return nil // e.g. the appservice transaction ledger: no personal values
	}
	// Each value is looked up once per event; the Sealer caches only keys it
	// could open, which here is none.
	_, err := domain.Decode(ctx, c.sealer, rec)
	return err
}

// unreadable is what a key check found.
type unreadable struct {
	values, users int
	example       string // one user whose values cannot be opened
}

// result checks every (user, generation) seen against the keyring. A
// keyring that cannot tell erased from missing keys is not checked.
func (c *keyCheck) result(ctx context.Context) (unreadable, error) {
	var u unreadable
	d, ok := c.keys.(destroyedKeys)
	if !ok {
		return u, nil
	}
	users := map[string]bool{}
	for sg, n := range c.probe.seen {
		_, err := c.keys.Lookup(ctx, sg.subject, sg.gen)
		if err == nil {
			continue
		}
		if !errors.Is(err, eventstore.ErrKeyDestroyed) {
			return u, err
		}
		destroyed, err := d.Destroyed(sg.subject)
		if err != nil {
			return u, err
		}
		if sg.gen <= destroyed {
			continue // erased on purpose
		}
		u.values += n
		if !users[sg.subject] {
			users[sg.subject] = true
			if u.example == "" || sg.subject < u.example {
				u.example = sg.subject
			}
		}
	}
	u.users = len(users)
	return u, nil
}

// checkLogKeys reads the whole log through a key check, reporting the
// positions read against the log's head (progress may be nil): at a
// million users the check reads 13 million events, minutes before a
// rebuild starts.
func checkLogKeys(ctx context.Context, store eventstore.Store, keys eventstore.Keyring, progress func(done, total uint64)) (unreadable, error) {
	c := newKeyCheck(keys)
	head, err := store.Head(ctx)
	if err != nil {
		return unreadable{}, err
	}
	after := eventstore.Start
	for {
		recs, err := store.ReadAll(ctx, after, 4096)
		if err != nil {
			return unreadable{}, err
		}
		if len(recs) == 0 {
			if progress != nil {
				progress(head.Commit, head.Commit)
			}
			return c.result(ctx)
		}
		for _, r := range recs {
			if err := c.add(ctx, r); err != nil {
				return unreadable{}, err
			}
		}
		after = recs[len(recs)-1].Position
		if progress != nil {
			progress(min(after.Commit, head.Commit), head.Commit)
		}
	}
}

func (u unreadable) String() string {
	users := "users"
	if u.users == 1 {
		users = "user"
	}
	return fmt.Sprintf("%d sealed values of %d %s (%s among them) cannot be opened with this keyring, and no erasure explains it", u.values, u.users, users, u.example)
}

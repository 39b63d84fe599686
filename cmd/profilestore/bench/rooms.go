package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	pshttp "github.com/profilestore/profilestore/http"
	"github.com/profilestore/profilestore/projections"
	"github.com/profilestore/profilestore/projections/viewstore"
)

// roomsBench measures what issue "Rooms" promises: a global rename costs
// the same in 1 room as in many, is visible in all of them at once, and a
// big room's first history page is fast.
type roomsBench struct {
	rooms          int // rooms of the busy user
	renames        int // renames measured per user
	historyMembers int
	historyEntries int
	restartUsers   int // users of the rebuild and restart measurement
}

type renameFigures struct {
	rooms         int
	p50, p99      time.Duration
	visibleMax    time.Duration // ack until every room's view shows it (worst rename)
	settledMax    time.Duration // ack until every deferred view (history, names, stats) applied it
	visibleChecks int
}

func (b *bench) runRooms(ctx context.Context, a *App, srv *pshttp.Server, rb roomsBench) (string, error) {
	var s strings.Builder
	one, many := domain.UserID("@onerooms:bench.example"), domain.UserID("@manyrooms:bench.example")
	tokens := map[domain.UserID]string{}
	for _, u := range []domain.UserID{one, many} {
		tok, err := pshttp.IssueToken(a.TokensFile, u, false, "bench")
		if err != nil {
			return "", err
		}
		tokens[u] = tok
	}
	b.progress("joining a user to %d rooms…", rb.rooms)
	if err := joinRooms(ctx, a, one, 1, "one"); err != nil {
		return "", err
	}
	if err := joinRooms(ctx, a, many, rb.rooms, "many"); err != nil {
		return "", err
	}
	head, _ := a.Store.Head(ctx)
	if err := a.Runner.WaitFor(ctx, head); err != nil {
		return "", err
	}
	time.Sleep(1100 * time.Millisecond) // the tokens file is re-read at most once a second
	client := &http.Client{Timeout: 30 * time.Second}
	var figs []renameFigures
	for _, u := range []struct {
		id     domain.UserID
		prefix string
		rooms  int
	}{{one, "one", 1}, {many, "many", rb.rooms}} {
		b.progress("renaming the user in %d rooms %d times…", u.rooms, rb.renames)
		f, err := b.measureRenames(ctx, a, client, srv.URL(), tokens[u.id], u.id, u.prefix, u.rooms, rb.renames)
		if err != nil {
			return "", err
		}
		figs = append(figs, f)
	}
	fmt.Fprintf(&s, "\n### A global display-name change, 1 room vs %d rooms (HTTP, durable, acknowledged after the local views applied it)\n\n", rb.rooms)
	s.WriteString("Every tenth rename is a check, left out of the acknowledgement figures: the time until the first, a middle and the last room show the new name (one commit publishes them all), then every room is read to confirm it. The time to settle is that of the other renames.\n\n")
	s.WriteString("| rooms | renames | ack p50 | ack p99 | ack → all rooms' views show it (worst) | ack → every deferred view applied it (worst) |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range figs {
		visible := fmt.Sprintf("%s (then all %d rooms checked)", fmtDur(f.visibleMax), f.visibleChecks)
		if rb.renames < 10 {
			visible = "— (fewer than 10 renames: no check)"
		}
		fmt.Fprintf(&s, "| %d | %d | %s | %s | %s | %s |\n", f.rooms, rb.renames, fmtDur(f.p50), fmtDur(f.p99), visible, fmtDur(f.settledMax))
	}
	if figs[0].p50 > 0 {
		fmt.Fprintf(&s, "\nRatio of acknowledgement latency, %d rooms / 1 room: p50 %.2fx, p99 %.2fx.\n", rb.rooms,
			float64(figs[1].p50)/float64(figs[0].p50), float64(figs[1].p99)/float64(figs[0].p99))
	}
	spaced := max(rb.renames/2, 1)
	b.progress("renaming both users %d times each, %s after the last rename settled…", spaced, renameSpacing)
	sp, err := measureSpacedRenames(ctx, a, client, srv.URL(), tokens, []domain.UserID{one, many}, spaced)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&s, "\nSpaced: the two users renamed in turn, each rename %s after the previous one settled, so that none starts while the last fan-out's aftermath (its garbage collection, the view store's flush) still runs on the machine's cores. These figures include waking an idle process, which the back-to-back ones above do not.\n\n", renameSpacing)
	s.WriteString("| rooms | renames | ack p50 | ack p99 |\n|---:|---:|---:|---:|\n")
	for u, rooms := range []int{1, rb.rooms} {
		fmt.Fprintf(&s, "| %d | %d | %s | %s |\n", rooms, spaced, fmtDur(sp[u][0]), fmtDur(sp[u][1]))
	}
	if sp[0][0] > 0 {
		fmt.Fprintf(&s, "\nRatio of acknowledgement latency, spaced, %d rooms / 1 room: p50 %.2fx, p99 %.2fx.\n", rb.rooms,
			float64(sp[1][0])/float64(sp[0][0]), float64(sp[1][1])/float64(sp[0][1]))
	}
	b.progress("building a room of %d members and %d history entries…", rb.historyMembers, rb.historyEntries)
	s.WriteString(historyBench(rb.historyMembers, rb.historyEntries))
	return s.String(), nil
}

func benchRoom(prefix string, i int) domain.RoomID {
	return domain.RoomID(fmt.Sprintf("!%s%d:bench.example", prefix, i))
}

// joinRooms joins user to n rooms through the room service, 64 at a time.
func joinRooms(ctx context.Context, a *App, user domain.UserID, n int, prefix string) error {
	name := "Start"
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			_, err := a.Rooms.ChangeMembership(ctx, domain.ChangeMembership{Room: benchRoom(prefix, i), User: user, Actor: domain.ServerActor,
				Membership: domain.MembershipJoin, DisplayName: &name, Meta: domain.Metadata{OccurredAt: time.Now(), Source: "bench"}})
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}(i)
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// rename sets the user's display name over HTTP and returns the write's
// position once it is acknowledged.
func rename(ctx context.Context, client *http.Client, base, token string, user domain.UserID, name string) (eventstore.Position, error) {
	body, _ := json.Marshal(map[string]string{"displayname": name})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/_matrix/client/v3/profile/"+string(user)+"/displayname", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return eventstore.Position{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return eventstore.Position{}, fmt.Errorf("rename: HTTP %d", resp.StatusCode)
	}
	return eventstore.ParsePosition(resp.Header.Get("X-Profilestore-Position"))
}

// renameSpacing is the pause before each spaced rename, once the last one
// settled: long enough that nothing of the last rename's fan-out (its
// collection, the view store's flushes) is still running.
const renameSpacing = 100 * time.Millisecond

// measureSpacedRenames renames the two users in turn, each rename
// renameSpacing after the previous one settled, and returns each user's
// acknowledgement p50 and p99: the cost of one rename on a machine that
// is not still busy with the last one.
func measureSpacedRenames(ctx context.Context, a *App, client *http.Client, base string, tokens map[domain.UserID]string, users []domain.UserID, renames int) ([][2]time.Duration, error) {
	lat := make([][]time.Duration, len(users))
	for i := range renames {
		for u, user := range users {
			time.Sleep(renameSpacing)
			t0 := time.Now()
			pos, err := rename(ctx, client, base, tokens[user], user, fmt.Sprintf("spaced rename %d", i))
			if err != nil {
				return nil, err
			}
			lat[u] = append(lat[u], time.Since(t0))
			if err := a.Runner.WaitFor(ctx, pos); err != nil {
				return nil, err
			}
		}
	}
	out := make([][2]time.Duration, len(users))
	for u, l := range lat {
		slices.Sort(l)
		out[u] = [2]time.Duration{l[len(l)/2], l[min(len(l)-1, len(l)*99/100)]}
	}
	return out, nil
}

func (b *bench) measureRenames(ctx context.Context, a *App, client *http.Client, base, token string, user domain.UserID, prefix string, rooms, renames int) (renameFigures, error) {
	f := renameFigures{rooms: rooms, visibleChecks: rooms}
	var lat []time.Duration
	// Every tenth rename also reads every room's view until all show the new
	// name; those renames are left out of the latency figures, since reading
	// 10,000 rooms just before a request measures the bench's own cache misses.
	const checkEvery = 10
	for i := 0; i < renames+renames/checkEvery; i++ {
		check := i%(checkEvery+1) == checkEvery
		name := fmt.Sprintf("%s rename %d", prefix, i)
		t0 := time.Now()
		pos, err := rename(ctx, client, base, token, user, name)
		if err != nil {
			return f, err
		}
		acked := time.Now()
		shows := func(r int) (bool, error) {
			ms, _, err := a.RoomViews.Members(benchRoom(prefix, r), nil, projections.Viewer{Admin: true})
			return err == nil && len(ms) == 1 && ms[0].DisplayName != nil && *ms[0].DisplayName == name, err
		}
		if check {
			// Every room's value follows from the user's state, which one
			// commit of the deferred stage publishes: the rooms show the
			// new name together. The time to visible is that of the first,
			// a middle and the last room all showing it (reading 10,000
			// rooms one after another would time the reads); every room is
			// then checked.
			for _, r := range []int{0, rooms / 2, rooms - 1} {
				for {
					ok, err := shows(r)
					if err != nil {
						return f, err
					}
					if ok {
						break
					}
					if time.Since(acked) > 10*time.Second {
						return f, fmt.Errorf("room %d never showed %q", r, name)
					}
					runtime.Gosched()
				}
			}
			f.visibleMax = max(f.visibleMax, time.Since(acked))
			for r := 0; r < rooms; r++ {
				if ok, err := shows(r); err != nil || !ok {
					return f, fmt.Errorf("room %d of %d does not show %q once rooms 0, %d and %d do (%v)", r, rooms, name, rooms/2, rooms-1, err)
				}
			}
		} else {
			lat = append(lat, acked.Sub(t0))
		}
		// Let the deferred views finish before the next rename, so each
		// acknowledgement is measured alone, not racing the last fan-out
		// for the machine's two cores.
		if err := a.Runner.WaitFor(ctx, pos); err != nil {
			return f, err
		}
		if !check { // a check's reads would count in the time to settle
			f.settledMax = max(f.settledMax, time.Since(acked))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	f.p50, f.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	return f, nil
}

// historyBench builds one room in a view store directly (no event log: the
// question is the read path) and reads its first page of 100 entries
// repeatedly.
func historyBench(members, entries int) string {
	dir, err := os.MkdirTemp("", "profilestore-history-bench-")
	if err != nil {
		return fmt.Sprintf("history bench: %v\n", err)
	}
	defer os.RemoveAll(dir)
	db, _, err := projections.OpenDB(filepath.Join(dir, "views"), viewstore.PebbleOptions{})
	if err != nil {
		return fmt.Sprintf("history bench: %v\n", err)
	}
	defer db.Close()
	v := projections.NewRooms(db, 0)
	room := domain.RoomID("!big:bench.example")
	var pos uint64
	var batch []*domain.Event
	flush := func() {
		if err == nil && len(batch) > 0 {
			err = projections.ApplyEvents(db, []projections.View{v}, batch...)
		}
		batch = batch[:0]
	}
	apply := func(e domain.Event) {
		pos++
		e.Position = eventstore.Position{Commit: pos, Prepare: pos}
		e.Meta.OccurredAt = time.Unix(1_700_000_000, 0).Add(time.Duration(pos) * time.Millisecond)
		batch = append(batch, &e)
		if len(batch) == 4096 {
			flush()
		}
	}
	users := make([]domain.UserID, members)
	heap0 := heapInUse()
	for i := range users {
		users[i] = domain.UserID(fmt.Sprintf("@m%d:bench.example", i))
		name := fmt.Sprintf("Member %d", i)
		apply(domain.Event{Type: domain.TypeMemberJoined, Room: room, User: users[i], DisplayName: &name})
	}
	flush()
	heap1 := heapInUse()
	for i := members; i < entries; i++ {
		val, _ := json.Marshal(fmt.Sprintf("Name %d", i))
		if i%3 == 0 {
			apply(domain.Event{Type: domain.TypeMemberProfileSet, Room: room, User: users[i%members], Key: domain.KeyDisplayName, Value: val})
		} else {
			apply(domain.Event{Type: domain.TypeFieldSet, User: users[i%members], Key: domain.KeyDisplayName, Value: val, PropagateTo: domain.PropagateAll})
		}
	}
	flush()
	if err != nil {
		return fmt.Sprintf("history bench: %v\n", err)
	}
	heap2 := heapInUse()
	var s strings.Builder
	fmt.Fprintf(&s, "\n### First history page (100 entries) of a room with %d members and %d entries\n\n", members, entries)
	fmt.Fprintf(&s, "Data set: %d joins, then %d renames over the members (a third per-room nicknames, two thirds global renames with propagate_to=all). ", members, entries-members)
	fmt.Fprintf(&s, "Go heap growth while building (the views are on disk; this is what stays in caches): %.0f bytes per member, %.0f bytes per further history entry.\n\n",
		float64(heap1-heap0)/float64(members), float64(heap2-heap1)/float64(entries-members))
	s.WriteString("| reader | reads | p50 | p99 |\n|---|---:|---:|---:|\n")
	for _, r := range []struct {
		label  string
		viewer projections.Viewer
	}{{"member (visibility checked per entry)", projections.Viewer{User: users[5]}}, {"admin", projections.Viewer{Admin: true}}} {
		const reads = 2000
		lat := make([]time.Duration, reads)
		for i := range lat {
			t0 := time.Now()
			page, err := v.RoomHistory(room, projections.HistoryQuery{Viewer: r.viewer, Backwards: true, Limit: 100})
			lat[i] = time.Since(t0)
			if want := min(100, entries); err != nil || len(page.Entries) != want {
				return fmt.Sprintf("history read failed: %v (%d entries, want %d)\n", err, len(page.Entries), want)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Fprintf(&s, "| %s | %d | %s | %s |\n", r.label, reads, fmtDur(lat[reads/2]), fmtDur(lat[reads*99/100]))
	}
	return s.String()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

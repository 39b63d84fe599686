package alerts

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/sirupsen/logrus"
)

// OutboxOptions configure an Outbox.
type OutboxOptions struct {
	Store  eventstore.Store
	Sealer *domain.Sealer
	Sinks  []Sink
	// Checkpoint is the file that remembers, per sink, how many alerts of
	// the stream it has delivered.
	Checkpoint string
	// MinBackoff and MaxBackoff bound the wait between attempts (default
	// 1 s and 5 min); the wait doubles after each failure.
	MinBackoff, MaxBackoff time.Duration
	// Poll is how often an idle outbox looks for new alerts when nobody
	// wakes it (default 2 s).
	Poll    time.Duration
	Metrics *Metrics
	Logger  logrus.FieldLogger
}

// Outbox delivers the alert stream to every sink, in order, each at its
// own pace: a sink that is down holds back only its own deliveries, which
// wait (retried with backoff) in the log, not in memory, so nothing is lost
// across a restart. A sink's checkpoint moves only after a delivery
// succeeded; sinks make a repeat after a crash harmless (MatrixSink's
// transaction ids, webhooks' alert ids).
type Outbox struct {
	o    OutboxOptions
	wake chan struct{}

	mu        sync.Mutex
	delivered map[string]uint64
}

// NewOutbox returns an outbox; Run starts it.
func NewOutbox(o OutboxOptions) *Outbox {
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Minute, o.MinBackoff)
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	return &Outbox{o: o, wake: make(chan struct{}, 1)}
}

// Wake tells the outbox that an alert was recorded.
func (b *Outbox) Wake() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (b *Outbox) Run(ctx context.Context) error {
	delivered, err := loadDelivered(b.o.Checkpoint)
	if err != nil {
		return err
	}
	// A sink seen for the first time starts after the alerts recorded so
	// far: a webhook added to a server with a long alert history gets the
	// alerts from now on, not the whole past. Its place is saved at once,
	// so alerts recorded from here on are delivered even across a restart.
	fresh := false
	for _, s := range b.o.Sinks {
		if _, ok := delivered[s.Name()]; ok {
			continue
		}
		last, err := b.o.Store.ReadStream(ctx, domain.AlertStream, math.MaxUint64, eventstore.Backwards, 1)
		if err != nil {
			return err
		}
		delivered[s.Name()] = 0
		if len(last) > 0 {
			delivered[s.Name()] = last[0].Revision + 1
		}
		fresh = true
	}
	if fresh {
		if err := saveDelivered(b.o.Checkpoint, delivered); err != nil {
			return err
		}
	}
	b.delivered = delivered
	wakes := make([]chan struct{}, len(b.o.Sinks))
	var wg sync.WaitGroup
	for i, s := range b.o.Sinks {
		wakes[i] = make(chan struct{}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.runSink(ctx, s, wakes[i])
		}()
	}
	tick := time.NewTicker(b.o.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-b.wake:
		case <-tick.C:
		}
		for _, w := range wakes {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
}

func (b *Outbox) next(sink string) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delivered[sink]
}

// advance records that the sink delivered every alert before next.
func (b *Outbox) advance(sink string, next uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delivered[sink] = next
	return saveDelivered(b.o.Checkpoint, b.delivered)
}

func (b *Outbox) runSink(ctx context.Context, s Sink, wake <-chan struct{}) {
	log := b.o.Logger.WithField("sink", s.Name())
	for {
		n, err := b.drain(ctx, s, log)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.WithError(err).Error("alerts: outbox")
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
	}
}

// drain delivers what the stream holds beyond the sink's checkpoint and
// returns how many it delivered.
func (b *Outbox) drain(ctx context.Context, s Sink, log logrus.FieldLogger) (int, error) {
	from := b.next(s.Name())
	recs, err := b.o.Store.ReadStream(ctx, domain.AlertStream, from, eventstore.Forwards, 100)
	if err != nil {
		return 0, err
	}
	b.setBacklog(ctx, s.Name(), from)
	for i, rec := range recs {
		a, erased, err := domain.DecodeAlert(ctx, b.o.Sealer, rec)
		if err != nil {
			// A record this version cannot read is skipped, loudly, rather
			// than blocking every later alert.
			log.WithError(err).WithField("revision", rec.Revision).Error("alerts: skipping an alert that cannot be decoded")
		} else if err := b.deliver(ctx, s, Recorded{Alert: a, ID: rec.ID.String(), Revision: rec.Revision, Erased: erased}, log); err != nil {
			return i, err
		}
		if err := b.advance(s.Name(), rec.Revision+1); err != nil {
			return i, err
		}
		b.setBacklog(ctx, s.Name(), rec.Revision+1)
	}
	return len(recs), nil
}

// deliver retries one alert with exponential backoff until it is
// delivered or ctx ends.
func (b *Outbox) deliver(ctx context.Context, s Sink, a Recorded, log logrus.FieldLogger) error {
	wait := b.o.MinBackoff
	for attempt := 1; ; attempt++ {
		err := s.Deliver(ctx, a)
		if err == nil {
			if b.o.Metrics != nil {
				b.o.Metrics.deliveredTotal.WithLabelValues(s.Name()).Inc()
				b.o.Metrics.latency.WithLabelValues(s.Name()).Observe(math.Max(0, time.Since(a.At).Seconds()))
			}
			return nil
		}
		if b.o.Metrics != nil {
			b.o.Metrics.failedTotal.WithLabelValues(s.Name()).Inc()
		}
		log.WithError(err).WithFields(logrus.Fields{"alert": a.ID, "attempt": attempt, "retry_in": wait.String()}).Warn("alerts: delivery failed; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, b.o.MaxBackoff)
	}
}

func (b *Outbox) setBacklog(ctx context.Context, sink string, next uint64) {
	if b.o.Metrics == nil {
		return
	}
	last, err := b.o.Store.ReadStream(ctx, domain.AlertStream, math.MaxUint64, eventstore.Backwards, 1)
	if err != nil || len(last) == 0 {
		b.o.Metrics.backlog.WithLabelValues(sink).Set(0)
		return
	}
	b.o.Metrics.backlog.WithLabelValues(sink).Set(float64(last[0].Revision + 1 - min(next, last[0].Revision+1)))
}

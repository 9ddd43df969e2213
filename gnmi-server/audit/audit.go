// Package audit records refused requests in /system/audit: a Set refused
// before it reached the replication log (malformed, not authorized, a value
// the schema rejects) and a failed login. Each is an audit-only transaction,
// so a node admits them through a token bucket: a client flooding bad
// requests cannot flood the log. Those over the rate are counted, and the
// count is folded into the next record's message.
//
// A Set the engine rejects in the log needs no Recorder: the state machine
// writes its record in place of the Set (see server.Committer).
package audit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Defaults of Config.
const (
	DefaultRate  = 1
	DefaultBurst = 20
	// queueLen bounds the records waiting for Write; beyond it they are
	// counted like those over the rate.
	queueLen = 64
	// maxField bounds a user name as presented (before authentication it
	// is whatever the client sent) and a message.
	maxField = 256
	// flushEvery is how often a count of left-out records is written when
	// no further rejection comes to carry it.
	flushEvery = 2 * time.Second
)

// Config configures a Recorder.
type Config struct {
	// Node names this node, the one that refused the requests.
	Node string
	// Write commits an audit-only record (server.Committer.Reject).
	Write func(ctx context.Context, rej txn.Rejection) error
	// Rate and Burst are the node's token bucket of records.
	Rate   rate.Limit
	Burst  int
	Logger *slog.Logger
}

// Recorder writes the records of refused requests in the background, at
// most Config.Rate a second. It owns one goroutine, stopped by Close.
type Recorder struct {
	cfg   Config
	log   *slog.Logger
	queue chan txn.Rejection

	mu sync.Mutex
	// Guarded by mu:
	lim    *rate.Limiter
	folded int            // records left out since the last one written
	last   *txn.Rejection // the latest record left out

	cancel context.CancelFunc
	done   chan struct{}
}

// New starts a Recorder.
func New(cfg Config) *Recorder {
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{cfg: cfg, log: cfg.Logger, queue: make(chan txn.Rejection, queueLen),
		lim: rate.NewLimiter(cfg.Rate, cfg.Burst), cancel: cancel, done: make(chan struct{})}
	go r.run(ctx)
	return r
}

// Close stops the Recorder; records still queued are dropped.
func (r *Recorder) Close() {
	r.cancel()
	<-r.done
}

// Record queues the record of a refused request. It never blocks: a record
// over the rate, or one that finds the queue full, is counted instead.
func (r *Recorder) Record(rej txn.Rejection) {
	if rej.Time == 0 {
		rej.Time = time.Now().UnixNano()
	}
	rej.User, rej.Message = clip(rej.User), clip(rej.Message)
	if rej.Node == "" {
		rej.Node = r.cfg.Node
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lim.Allow() {
		select {
		case r.queue <- rej:
			return
		default:
		}
	}
	r.folded++
	r.last = &rej
}

func clip(s string) string {
	if len(s) > maxField {
		return s[:maxField] + "…"
	}
	return s
}

func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case rej := <-r.queue:
			r.mu.Lock()
			n := r.folded
			r.folded, r.last = 0, nil
			r.mu.Unlock()
			r.write(ctx, rej, n)
		case <-t.C:
			// Records were left out and none has come since to say so:
			// write the latest of them, within the rate.
			r.mu.Lock()
			var rej *txn.Rejection
			n := 0
			if r.last != nil && r.lim.Allow() {
				rej, n = r.last, r.folded-1
				r.folded, r.last = 0, nil
			}
			r.mu.Unlock()
			if rej != nil {
				r.write(ctx, *rej, n)
			}
		}
	}
}

// write commits rej, noting the n records left out before it. A record that
// cannot be written is counted with them, for the next one to report.
func (r *Recorder) write(ctx context.Context, rej txn.Rejection, n int) {
	out := rej
	if n > 0 {
		out.Message += fmt.Sprintf(" (and %d more rejected request(s) not recorded one by one: over the audit rate of node %s)", n, r.cfg.Node)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := r.cfg.Write(wctx, out)
	cancel()
	if err == nil {
		return
	}
	r.log.Warn("writing an audit record", "operation", rej.Operation, "user", rej.User, "err", err)
	r.mu.Lock()
	r.folded += n + 1
	if r.last == nil {
		r.last = &rej
	}
	r.mu.Unlock()
}

// Package slowlog logs the requests that run longer than a threshold, as
// PHP-FPM's request_slowlog_timeout does, while they run: one entry per
// slow request, however long it runs, with its worker's pid, its method
// and path, how long it has run, and the Python stack of every thread of
// the worker, innermost frame last, taken without stopping the request
// (bridge.Worker.Stacks: faulthandler, so also while the app is blocked
// in a C call). It reads the running requests from the pool; it is on no
// request's path.
package slowlog

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// Pool is what the slow log watches: a *bridge.Pool, or a fake in tests.
type Pool interface {
	Running() []bridge.Running
	Stacks(pid int, wait time.Duration) (string, error)
}

var _ Pool = (*bridge.Pool)(nil)

// Config says what is slow and how it is logged.
type Config struct {
	Pool Pool
	// After is how long a request runs before it is slow. A FastCGI
	// worker tells what it runs once a request has run 20 ms, so shorter
	// thresholds act as 20 ms there.
	After time.Duration
	// Depth is how many frames per thread an entry shows (0: 20).
	Depth int
	// Logger receives the entries; nil means slog.Default().
	Logger *slog.Logger
}

// Log watches a pool for slow requests until Stop.
type Log struct {
	cfg   Config
	log   *slog.Logger
	count atomic.Uint64
	stop  context.CancelFunc
	done  sync.WaitGroup
}

// Start starts watching.
func Start(cfg Config) *Log {
	if cfg.Depth == 0 {
		cfg.Depth = 20
	}
	l := &Log{cfg: cfg, log: cfg.Logger}
	if l.log == nil {
		l.log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	l.done.Add(1)
	go l.watch(ctx)
	return l
}

// Count returns how many slow requests were logged.
func (l *Log) Count() uint64 { return l.count.Load() }

// Stop stops watching and waits until the entries being written are out.
func (l *Log) Stop() {
	l.stop()
	l.done.Wait()
}

// run tells one run of a worker apart from its next.
type run struct {
	pid int
	n   uint64
}

func (l *Log) watch(ctx context.Context) {
	defer l.done.Done()
	every := min(max(l.cfg.After/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	logged := map[run]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		seen := map[run]bool{}
		for _, r := range l.cfg.Pool.Running() {
			key := run{r.Pid, r.Run}
			seen[key] = true
			if logged[key] || now.Sub(r.Since) < l.cfg.After {
				continue
			}
			logged[key] = true
			l.count.Add(1)
			l.done.Add(1)
			go l.entry(r)
		}
		for key := range logged {
			if !seen[key] {
				delete(logged, key)
			}
		}
	}
}

// entry logs one slow request, with the stacks of its worker.
func (l *Log) entry(r bridge.Running) {
	defer l.done.Done()
	stack, err := l.cfg.Pool.Stacks(r.Pid, time.Second)
	if err != nil {
		stack = err.Error()
	} else {
		stack = bridge.FormatStacks(stack, l.cfg.Depth)
	}
	l.log.Warn("slow request", "pid", r.Pid, "request", r.Request,
		"elapsed", time.Since(r.Since).Round(time.Millisecond), "stack", stack)
}

// Package status shows a running pool to an operator, as PHP-FPM's status
// page does and more: a listener of the supervisor's (--status) serves
// the pool's state as JSON (/status, with a row per worker at
// /status?full), as OpenMetrics text for Prometheus (/metrics), a health
// check for a load balancer (/ping), a page for a person (/) and the
// Python stack of every busy worker (/stacks). The numbers are the pool's
// (bridge.Pool.Status), read when asked; only the listen queue's length
// is sampled, to keep the most seen. Nothing here is on a request's path.
package status

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// Source is what the status shows: a *bridge.Pool, or a fake in tests.
type Source interface {
	Status() bridge.Status
	Running() []bridge.Running
	Stacks(pid int, wait time.Duration) (string, error)
}

var _ Source = (*bridge.Pool)(nil)

// Config says what a Server shows.
type Config struct {
	Pool Source
	// What the document says of the daemon.
	Version, App, Mode string
	Started            time.Time
	// Listener is the socket the requests come on, whose accept queue is
	// shown; nil: none is shown.
	Listener syscall.Conn
	// Slow counts the slow requests (the slow log's); nil: none counted.
	Slow func() uint64
	// StackDepth is how many frames per thread /stacks shows (0: 20).
	StackDepth int
	// Logger receives what goes wrong; nil means slog.Default().
	Logger *slog.Logger
}

// Server serves the status of a pool.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux

	queueMax atomic.Int64 // the most connections seen waiting
	stop     context.CancelFunc
	sampling sync.WaitGroup
}

// queueEvery is how often the listen queue is sampled for its most seen.
const queueEvery = 100 * time.Millisecond

// New returns a Server for cfg; it samples the listen queue until Close.
func New(cfg Config) *Server {
	if cfg.StackDepth == 0 {
		cfg.StackDepth = 20
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.HandleFunc("GET /status", s.status)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /ping", s.ping)
	s.mux.HandleFunc("GET /stacks", s.stacks)
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	if cfg.Listener != nil {
		s.sampling.Add(1)
		go s.sample(ctx)
	}
	return s
}

// Close stops the sampling.
func (s *Server) Close() {
	s.stop()
	s.sampling.Wait()
}

// ServeHTTP serves the status listener's paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

var _ http.Handler = (*Server)(nil)

func (s *Server) sample(ctx context.Context) {
	defer s.sampling.Done()
	t := time.NewTicker(queueEvery)
	defer t.Stop()
	for {
		s.queue()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(s.JSON(r.URL.Query().Has("full")))
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	_, _ = w.Write(s.OpenMetrics())
}

// ping answers 200 while at least one worker can take a request.
func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	st := s.cfg.Pool.Status()
	switch {
	case st.Degraded != nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("degraded: workers keep dying young (" + strconv.Itoa(st.Degraded.Deaths) + " since " +
			st.Degraded.Since.UTC().Format(time.RFC3339) + "); the last: " + st.Degraded.Last + "\n"))
	case st.Idle == 0 && st.Size >= st.Workers.Max:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("no worker can take a request: " + strconv.Itoa(st.Busy) + " busy, " +
			strconv.Itoa(st.Starting) + " starting\n"))
	default:
		_, _ = w.Write([]byte("pong\n"))
	}
}

// stacks shows the Python stack of the worker of every request that runs.
func (s *Server) stacks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	running := s.cfg.Pool.Running()
	if len(running) == 0 {
		_, _ = w.Write([]byte("no request runs\n"))
		return
	}
	now := time.Now()
	for _, run := range running {
		head := "pid " + strconv.Itoa(run.Pid) + ": " + run.Request + ", running for " +
			now.Sub(run.Since).Round(time.Millisecond).String() + "\n"
		stack, err := s.cfg.Pool.Stacks(run.Pid, time.Second)
		if err != nil {
			stack = err.Error()
		} else {
			stack = bridge.FormatStacks(stack, s.cfg.StackDepth)
		}
		_, _ = w.Write([]byte(head + stack + "\n\n"))
	}
}

package main

// This file wires what an operator sees of a daemon: the status listener
// (package status) and the slow log (package slowlog), which run beside
// the pool, are started after it and stopped with the front.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/slowlog"
	"github.com/wsgibridge/wsgibridge/status"
)

// operateFlags are the flags of what an operator sees of a daemon.
type operateFlags struct {
	status     string
	public     bool
	statusPath string
	pingPath   string
	slowLog    time.Duration
	slowDepth  int

	// server makes the status document, once the pool runs; the
	// workers' status path asks it (document).
	server atomic.Pointer[status.Server]
}

// document is the status document the workers answer the status path
// with; nil until the pool runs.
func (o *operateFlags) document(full bool) []byte {
	if s := o.server.Load(); s != nil {
		return s.JSON(full)
	}
	return nil
}

func (o *operateFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.status, "status", "", "serve the pool's status over HTTP at unix:PATH or HOST:PORT: /status (JSON), /metrics (OpenMetrics), /ping, /stacks and a page at /; off by default")
	fs.BoolVar(&o.public, "status-public", false, "let --status listen on an address other hosts reach")
	fs.StringVar(&o.statusPath, "status-path", "", "fastcgi: answer a request for this path with the status JSON (?full: a row per worker), as PHP-FPM's pm.status_path; off by default")
	fs.StringVar(&o.pingPath, "ping-path", "", `fastcgi: answer a request for this path with "pong", as PHP-FPM's ping.path; off by default`)
	fs.DurationVar(&o.slowLog, "slow-log", 0, "log each request that runs longer than this, with the Python stack of its worker's threads; 0: off")
	fs.IntVar(&o.slowDepth, "slow-log-depth", 20, "frames per thread in a slow-log entry")
}

// check reports a flag that makes no sense.
func (o *operateFlags) check() error {
	if o.slowLog < 0 || o.slowDepth < 1 {
		return errors.New("--slow-log must be 0 or more and --slow-log-depth 1 or more")
	}
	for _, p := range []string{o.statusPath, o.pingPath} {
		if p != "" && p[0] != '/' {
			return fmt.Errorf("--status-path and --ping-path want a path like /wsgibridge-status, got %q", p)
		}
	}
	return nil
}

// listen opens the status listener, before the workers start: an
// address that cannot be had, or is refused, stops the daemon at once.
func (o *operateFlags) listen() (net.Listener, error) {
	if o.status == "" {
		return nil, nil
	}
	return status.Listen(o.status, o.public)
}

// operator is what runs beside the pool for the operator.
type operator struct {
	status *status.Server
	http   *http.Server
	slow   *slowlog.Log
}

// start starts the status server on l (nil: none) and the slow log;
// queue is the socket whose listen queue the status shows (nil: none).
func (o *operateFlags) start(log *slog.Logger, pool *bridge.Pool, l net.Listener, queue syscall.Conn, mode, app string, started time.Time) *operator {
	op := &operator{}
	if o.slowLog > 0 {
		op.slow = slowlog.Start(slowlog.Config{Pool: pool, After: o.slowLog, Depth: o.slowDepth, Logger: log})
	}
	if o.status == "" && o.statusPath == "" {
		return op
	}
	cfg := status.Config{Pool: pool, Version: version(), App: app, Mode: mode, Started: started,
		Listener: queue, StackDepth: o.slowDepth, Logger: log}
	if op.slow != nil {
		cfg.Slow = op.slow.Count
	}
	op.status = status.New(cfg)
	o.server.Store(op.status)
	if l == nil {
		return op
	}
	op.http = &http.Server{Handler: op.status, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := op.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("the status listener stopped", "err", err)
		}
	}()
	log.Info("serving the status", "listen", l.Addr().String())
	return op
}

// stop stops what start started.
func (op *operator) stop(ctx context.Context) {
	if op.http != nil {
		_ = op.http.Shutdown(ctx)
	}
	if op.status != nil {
		op.status.Close()
	}
	if op.slow != nil {
		op.slow.Stop()
	}
}

// version is this build's version: the module's, or the commit it was
// built from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

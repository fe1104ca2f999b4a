package main

// This file holds what the long-running modes (fastcgi, http) share: the
// pool flags, starting the pool, and the signal loop.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/systemd"
)

// mountKeep as --mount takes SCRIPT_NAME and PATH_INFO as the web server
// sent them (what the CGI hand-off's daemon uses, and right for carefully
// configured servers).
const mountKeep = "keep"

// daemonFlags are the flags of the modes that keep a pool of workers.
type daemonFlags struct {
	// fastcgi, when set, makes the workers serve the listening socket.
	fastcgi        *bridge.FastCGIConfig
	s              settings
	workers        string
	size           bridge.Size
	workerIdle     time.Duration
	backlog        int
	queueTimeout   time.Duration
	timeout        time.Duration
	importTimeout  time.Duration
	graceful       time.Duration
	maxRequests    int
	maxRSS         int
	jitter         int
	mount          string
	accessLog      bool
	logLevel       string
	idleTimeout    time.Duration
	reloadOnChange bool
	preload        bool
	op             operateFlags
	// notify tells systemd the service's state; nil when not under it.
	notify *systemd.Notifier
	// mode is the daemon's: fastcgi or http.
	mode string
	// explicit holds the flags set on the command line or by a script.
	explicit map[string]bool
}

func (d *daemonFlags) register(fs *flag.FlagSet) {
	appFlags(fs, &d.s)
	fs.StringVar(&d.workers, "workers", "2", "Python worker processes: N, or MIN:MAX for a pool that grows while every worker is busy and shrinks when they idle (0:MAX starts none until the first request)")
	fs.DurationVar(&d.workerIdle, "worker-idle", 10*time.Second, "with --workers MIN:MAX, retire a worker idle this long, down to MIN")
	fs.IntVar(&d.backlog, "backlog", 64, "requests that may wait while every worker is busy; more are answered 503 at once")
	fs.DurationVar(&d.queueTimeout, "queue-timeout", 10*time.Second, "longest a request may wait for a worker; then it is answered 503")
	fs.DurationVar(&d.timeout, "timeout", 60*time.Second, "longest a request may run in the app (then its worker is killed and the client gets 504); 0: no limit")
	fs.DurationVar(&d.importTimeout, "import-timeout", 60*time.Second, "longest a worker may take to start and import the app")
	fs.DurationVar(&d.graceful, "graceful-timeout", 30*time.Second, "on SIGTERM, how long requests in progress may take to finish")
	fs.IntVar(&d.maxRequests, "max-requests", 0, "recycle a worker after this many requests; 0: never")
	fs.IntVar(&d.maxRSS, "max-rss", 0, "recycle a worker whose resident memory passed this many MiB, after its current request; 0: never")
	fs.IntVar(&d.jitter, "max-requests-jitter", 0, "add 0..N at random to --max-requests per worker, so they do not all restart at once")
	fs.StringVar(&d.mount, "mount", "", `the app's mount point (SCRIPT_NAME), e.g. /blog; PATH_INFO is the request path below it; "keep": as the web server sent them`)
	fs.DurationVar(&d.idleTimeout, "idle-timeout", 0, "exit after this long without requests; 0: never")
	fs.BoolVar(&d.reloadOnChange, "reload-on-change", false, "before each request, reload the app if its source files changed")
	fs.BoolVar(&d.preload, "preload", false, "import the app once and fork the workers from it: they share its memory, and a new worker serves without importing (what the app makes at import, such as connections and threads, is then shared: see the README)")
	fs.BoolVar(&d.accessLog, "access-log", false, "log one line per request (status, duration); failed requests are always logged")
	fs.StringVar(&d.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	d.op.register(fs)
}

// newFlagSet returns the flag set of a daemon mode with the pool flags
// registered; the mode adds its own.
func (d *daemonFlags) newFlagSet(mode string, stderr io.Writer) *flag.FlagSet {
	d.mode = mode
	fs := flag.NewFlagSet("wsgibridge "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	d.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: wsgibridge %s [flags] APP|SCRIPT\n\nflags:\n", mode)
		fs.PrintDefaults()
	}
	return fs
}

// serve starts the pool, starts the front in front of it, and runs the
// signal loop until the daemon stops. front starts serving in the
// background (started is when the pool began importing the app) and
// returns a channel that reports it stopping by itself, and its graceful
// stop. l is closed if the pool cannot start.
func (d *daemonFlags) serve(log *slog.Logger, l net.Listener, front func(pool *bridge.Pool, started time.Time) (<-chan error, func(context.Context) error)) int {
	started := time.Now()
	// Before the workers start: they must not inherit the socket.
	d.notify = openNotify(log)
	defer d.notify.Close()
	statusL, err := d.op.listen()
	if err != nil {
		log.Error("cannot serve the status", "err", err)
		l.Close()
		return exitUsage
	}
	pool, code := d.startPool(log)
	if code != exitOK {
		l.Close()
		if statusL != nil {
			statusL.Close()
		}
		return code
	}
	serveErr, shutdown := front(pool, started)
	var queue syscall.Conn
	if d.fastcgi != nil {
		queue = d.fastcgi.Listener
	} else if sc, ok := l.(syscall.Conn); ok {
		queue = sc
	}
	op := d.op.start(log, pool, statusL, queue, d.mode, d.s.app, started)
	d.tell(log, d.notify.Ready(statusLine(pool)))
	if err := releaseExecutable(); err != nil {
		log.Debug("the memory of starting up is kept", "err", err)
	}
	return d.run(log, pool, serveErr, func(ctx context.Context) error {
		defer op.stop(ctx)
		return shutdown(ctx)
	})
}

// setup parses the flags and the app argument (an app or a script file)
// and returns the logger; code is non-zero when the mode must exit.
func (d *daemonFlags) setup(fs *flag.FlagSet, args []string, stderr io.Writer) (log *slog.Logger, code int) {
	if err := fs.Parse(args); err != nil {
		return nil, exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return nil, exitUsage
	}
	d.explicit = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { d.explicit[f.Name] = true })
	d.s.app = fs.Arg(0)
	if isScript(d.s.app) {
		var err error
		if d.s, err = readScript(d.s.app); err == nil {
			err = applyScript(fs, d.s, d.explicit)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			return nil, exitUsage
		}
	}
	lvl, err := parseLevel(d.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --log-level: %v\n", fs.Name(), err)
		return nil, exitUsage
	}
	if err := checkEnv(d.s.env); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return nil, exitUsage
	}
	if d.mount != "" && d.mount != mountKeep && !strings.HasPrefix(d.mount, "/") {
		fmt.Fprintf(stderr, "%s: --mount wants a path like /blog, or keep\n", fs.Name())
		return nil, exitUsage
	}
	if err := d.op.check(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return nil, exitUsage
	}
	if d.size, err = bridge.ParseSize(d.workers); err != nil {
		fmt.Fprintf(stderr, "%s: --workers: %v\n", fs.Name(), err)
		return nil, exitUsage
	}
	if d.backlog < 1 || d.workerIdle <= 0 || d.queueTimeout <= 0 || d.maxRSS < 0 {
		fmt.Fprintf(stderr, "%s: --backlog must be 1 or more, --worker-idle and --queue-timeout more than 0, --max-rss 0 or more\n", fs.Name())
		return nil, exitUsage
	}
	return newLogger(stderr, lvl, true), exitOK
}

// startPool starts the workers; an app that does not import stops the
// daemon here, with exit code 3, instead of being restarted forever.
func (d *daemonFlags) startPool(log *slog.Logger) (*bridge.Pool, int) {
	cacheDir, err := bridge.PrivateDir()
	if err != nil {
		log.Debug("worker code is not cached", "err", err)
	}
	env := d.s.env
	if len(env) > 0 {
		env = append(os.Environ(), env...)
	}
	pool, err := bridge.NewPool(bridge.PoolConfig{
		Worker: bridge.Config{
			App: d.s.app, Python: d.s.python, Dir: d.s.chdir, PythonPath: d.s.pythonpath,
			Env: env, Logger: log, CacheDir: cacheDir, FastCGI: d.fastcgi,
			Stacks: true, StackDepth: d.op.slowDepth,
		},
		Workers:           d.size,
		WorkerIdle:        d.workerIdle,
		Backlog:           d.backlog,
		QueueTimeout:      d.queueTimeout,
		Timeout:           d.timeout,
		ImportTimeout:     d.importTimeout,
		MaxRequests:       d.maxRequests,
		MaxRequestsJitter: d.jitter,
		MaxRSS:            int64(d.maxRSS) << 20,
		Preload:           d.preload,
	})
	var ie *bridge.ImportError
	switch {
	case errors.As(err, &ie):
		log.Error(ie.Msg)
		return nil, exitAppError
	case err != nil:
		log.Error("workers could not be started", "app", d.s.app, "err", err)
		return nil, exitAppError
	}
	return pool, exitOK
}

// run serves until a signal: SIGTERM or SIGINT drain and stop (a second
// one stops at once), SIGHUP reloads the app; with --idle-timeout it also
// stops after that long without requests. serveErr reports the front
// stopping by itself; shutdown stops the front gracefully. Under systemd
// it tells the service's state as it changes.
func (d *daemonFlags) run(log *slog.Logger, pool *bridge.Pool, serveErr <-chan error, shutdown func(context.Context) error) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	idle, stopIdle := ticker(d.idleTimeout > 0, min(d.idleTimeout/4, time.Second))
	defer stopIdle()
	status, stopStatus := ticker(d.notify != nil, statusEvery)
	defer stopStatus()
	watchdog, stopWatchdog := ticker(d.notify.Watchdog() > 0, d.notify.Watchdog())
	defer stopWatchdog()
	for {
		select {
		case <-idle:
			if pool.IdleFor() < d.idleTimeout {
				continue
			}
			log.Info("no requests for the idle timeout: stopping", "idle_timeout", d.idleTimeout)
			return d.stop(log, pool, sigs, shutdown)
		case err := <-serveErr:
			log.Error("the server stopped", "err", err)
			d.tell(log, d.notify.Stopping())
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = pool.Shutdown(ctx)
			cancel()
			return exitFailed
		case <-status:
			d.tell(log, d.notify.Status(statusLine(pool)))
		case <-watchdog:
			// Only while the pool's monitor goes round: a supervisor
			// stuck there is restarted by systemd.
			if time.Since(pool.Heartbeat()) < d.notify.Watchdog() {
				d.tell(log, d.notify.Alive())
			}
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				log.Info("stopping: finishing the requests in progress", "signal", sig.String(), "grace", d.graceful)
				return d.stop(log, pool, sigs, shutdown)
			}
			log.Info("reloading: starting fresh workers", "signal", sig.String())
			d.tell(log, d.notify.Reloading())
			go func() {
				defer func() { d.tell(log, d.notify.Ready(statusLine(pool))) }()
				if err := pool.Reload(); err != nil {
					log.Error("reload failed; the running workers stay", "err", err)
					return
				}
				log.Info("reloaded", "pids", pool.Stats().Pids)
				if err := releaseExecutable(); err != nil {
					log.Debug("the memory of reloading is kept", "err", err)
				}
			}()
		}
	}
}

// ticker returns a channel that ticks every d when on, else nil (which
// never ticks), and what stops it.
func ticker(on bool, d time.Duration) (<-chan time.Time, func()) {
	if !on {
		return nil, func() {}
	}
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// stop drains the front and the pool within --graceful-timeout; a
// further SIGTERM or SIGINT cuts it short.
func (d *daemonFlags) stop(log *slog.Logger, pool *bridge.Pool, sigs <-chan os.Signal, shutdown func(context.Context) error) int {
	d.tell(log, d.notify.Stopping())
	ctx, cancel := context.WithTimeout(context.Background(), d.graceful)
	defer cancel()
	go func() {
		for s := range sigs {
			if s != syscall.SIGHUP {
				log.Warn("second signal: stopping now", "signal", s.String())
				cancel()
				return
			}
		}
	}()
	ferr := shutdown(ctx)
	perr := pool.Shutdown(ctx)
	if ferr != nil || perr != nil {
		log.Warn("stopped before the requests in progress finished", "err", errors.Join(ferr, perr))
	} else {
		log.Info("stopped")
	}
	return exitOK
}

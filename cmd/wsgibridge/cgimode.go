package main

// This file is "wsgibridge cgi" and the script form: one request, read from
// the environment and stdin, answered on stdout.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/cgi"
	"github.com/wsgibridge/wsgibridge/handoff"
)

func runCGIFlags(args, environ []string, stdin io.Reader, stdout io.Writer, stderr *os.File) int {
	fs := flag.NewFlagSet("wsgibridge cgi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s settings
	appFlags(fs, &s)
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&s.pool, "pool", "", "hand the request to the wsgibridge fastcgi daemon at unix:PATH (or auto: a socket in a private folder); if it cannot be reached, serve one-shot")
	fs.BoolVar(&s.spawn, "spawn", false, "start the --pool daemon when nothing answers there (implies --pool auto)")
	fs.DurationVar(&s.idleTimeout, "idle-timeout", 10*time.Minute, "a daemon started by --spawn exits after this long without requests")
	fs.IntVar(&s.workers, "workers", 0, "Python workers of a daemon started by --spawn (default 2)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: wsgibridge cgi [flags] APP\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	lvl, err := parseLevel(*level)
	if err != nil {
		fmt.Fprintf(stderr, "wsgibridge cgi: --log-level: %v\n", err)
		return exitUsage
	}
	if err := checkEnv(s.env); err != nil {
		fmt.Fprintf(stderr, "wsgibridge cgi: %v\n", err)
		return exitUsage
	}
	if isScript(fs.Arg(0)) {
		return runScript(fs.Arg(0), environ, stdin, stdout, stderr)
	}
	s.app = fs.Arg(0)
	if s.spawn && s.pool == "" {
		s.pool = "auto"
	}
	return serveCGI(s, "", newLogger(stderr, lvl, false), environ, stdin, stdout, stderr)
}

func runScript(path string, environ []string, stdin io.Reader, stdout io.Writer, stderr *os.File) int {
	log := newLogger(stderr, slog.LevelInfo, false)
	s, err := readScript(path)
	if err == nil {
		// The daemon settings serve under mod_fcgid or systemd; here
		// they are only checked, so a mistake shows wherever it runs.
		err = checkScriptKeys(s)
	}
	if err != nil {
		log.Error(err.Error())
		if hasVar(environ, "REQUEST_METHOD") {
			_ = bridge.WriteError(cgi.NewResponseWriter(stdout), 500)
		}
		return exitUsage
	}
	if s.idleTimeout == 0 {
		s.idleTimeout = 10 * time.Minute
	}
	return serveCGI(s, path, log, environ, stdin, stdout, stderr)
}

func hasVar(environ []string, name string) bool {
	for _, kv := range environ {
		if strings.HasPrefix(kv, name+"=") && len(kv) > len(name)+1 {
			return true
		}
	}
	return false
}

// serveCGI serves the one request of this process: through the pool when
// one is set and can be reached, else one-shot. script is the script
// file's path, if the settings came from one.
func serveCGI(s settings, script string, log *slog.Logger, environ []string, stdin io.Reader, stdout io.Writer, stderr *os.File) int {
	req, err := cgi.ReadRequest(environ, stdin, lookup(environ, "TMPDIR"))
	if errors.Is(err, cgi.ErrNotCGI) {
		fmt.Fprintf(stderr, "wsgibridge cgi: REQUEST_METHOD is not set: this mode serves one request for a web server,\n"+
			"which sets the request in the environment (see the README for Apache).\n"+
			"To try the app by hand: REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 PATH_INFO=/ wsgibridge cgi %s\n", s.app)
		return exitUsage
	}
	if req.Body != nil {
		defer req.Body.Close()
	}
	// A write to a closed stdout must be an error we handle (the worker
	// is reaped), not a silent death by SIGPIPE.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// The web server sends SIGTERM when it gives up on us (its Timeout).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()

	if s.pool != "" {
		served, err := handoff.Serve(ctx, handoff.Config{
			Pool: s.pool, Spawn: s.spawn, Script: script, App: s.app, Python: s.python, Dir: s.chdir,
			PythonPath: s.pythonpath, Env: s.env, Workers: s.workers, IdleTimeout: s.idleTimeout, Logger: log,
		}, environ, req, stdout, stderr)
		if served {
			if err != nil {
				log.Error("request failed in the pool", "method", lookup(environ, "REQUEST_METHOD"), "uri", lookup(environ, "REQUEST_URI"), "err", err)
				return exitFailed
			}
			return exitOK
		}
		log.Warn("the pool could not be used; serving this request one-shot", "pool", s.pool, "err", err)
	}

	rw := cgi.NewResponseWriter(stdout)
	cacheDir, err := bridge.PrivateDir()
	if err != nil {
		log.Debug("worker code is not cached", "err", err)
	}
	w, err := bridge.Start(bridge.Config{
		CacheDir:   cacheDir,
		App:        s.app,
		Python:     s.python,
		Dir:        s.chdir,
		PythonPath: s.pythonpath,
		Env:        append(cgi.ChildEnv(environ), s.env...),
		Output:     stderr,
		Logger:     log,
		// Apache sends SIGKILL 3 s after its SIGTERM: end well before.
		StopGrace: time.Second,
	})
	if err != nil {
		log.Error("app could not be started", "app", s.app, "err", err)
		_ = bridge.WriteError(rw, 500)
		return exitAppError
	}
	defer w.Close(2 * time.Second)

	env := make([]bridge.Var, 0, len(req.Env))
	for _, kv := range req.Env {
		name, value, _ := strings.Cut(kv, "=")
		env = append(env, bridge.Var{Name: name, Value: value})
	}
	breq := &bridge.Request{Env: env, RunOnce: true}
	if req.Body != nil {
		breq.Body = req.Body
	}
	res, err := w.Serve(ctx, breq, rw)
	if ferr := rw.Flush(); ferr != nil && err == nil {
		err = fmt.Errorf("write response: %w", ferr)
	}
	// The response is complete: let the web server finish it while the
	// worker exits (Python's shutdown takes milliseconds with a big app).
	if c, ok := stdout.(io.Closer); ok && !errors.As(err, new(*bridge.ImportError)) {
		_ = c.Close()
	}
	var ie *bridge.ImportError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ie):
		log.Error(ie.Msg)
		_ = bridge.WriteError(rw, 500)
		return exitAppError
	}
	log.Error("request failed", "method", lookup(environ, "REQUEST_METHOD"), "uri", lookup(environ, "REQUEST_URI"),
		"status", res.Status, "err", err)
	if res.CutShort || res.Status == 0 {
		return exitFailed
	}
	return exitOK
}

func lookup(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// Package handoff is the CGI hand-off: "wsgibridge cgi --pool" (or a
// script with pool and spawn settings) passes its one request to a warm
// "wsgibridge fastcgi" daemon over a unix socket, through a FastCGI
// client (gofast), and relays the daemon's response as a CGI response, so
// a CGI-only host gets the latency of a warm pool. With Spawn it starts
// that daemon itself (daemon.go), in a folder only the user can open.
// Reading the CGI request is package cgi's; serving the request one-shot
// when no pool can be had is the command's.
package handoff

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/cgi"
	"github.com/yookoala/gofast"
)

// Config says which daemon serves the request, and how to start it.
type Config struct {
	// Pool is "unix:PATH", the daemon's socket, or "auto": a socket named
	// after Script (or App and Dir), in the user's private folder.
	Pool string
	// Spawn starts the daemon when nothing answers on the socket, or when
	// Script changed since it was started.
	Spawn bool
	// Script is the script file the settings came from, if any.
	Script string
	// What a spawned daemon runs, and how (see bridge.Config): its
	// workers (0: the daemon's default), and how long it may go without
	// requests before it exits.
	App, Python, Dir string
	PythonPath, Env  []string
	Workers          int
	IdleTimeout      time.Duration
	// Executable is the wsgibridge binary a spawned daemon runs; empty
	// means this process's own.
	Executable string
	// Logger receives what the hand-off does (a daemon started or
	// replaced); nil means slog.Default().
	Logger *slog.Logger
}

// spawnWait bounds a spawned daemon's start (the app's import included).
const spawnWait = 60 * time.Second

// socketPath returns the path of cfg's pool socket.
func socketPath(cfg Config) (string, error) {
	if path, ok := strings.CutPrefix(cfg.Pool, "unix:"); ok && path != "" {
		return path, nil
	}
	if cfg.Pool != "auto" {
		return "", fmt.Errorf("pool %q: want unix:PATH or auto", cfg.Pool)
	}
	dir, err := bridge.PrivateDir()
	if err != nil {
		return "", err
	}
	key := cfg.Script
	if key == "" {
		key = cfg.App + "\x00" + cfg.Dir
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "pool-"+hex.EncodeToString(sum[:6])+".sock"), nil
}

// Serve serves the request (environ, the process's CGI environment, and
// req, read from it) through the pool, writing the response to stdout
// and what the daemon logs for it to stderr. served is false when the
// pool could not be reached (or started): nothing was read or written
// then, and the caller serves the request itself. When ctx ends (the web
// server gave up on us) the daemon is told by the connection closing.
func Serve(ctx context.Context, cfg Config, environ []string, req *cgi.Request, stdout, stderr io.Writer) (served bool, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sock, err := socketPath(cfg)
	if err != nil {
		return false, err
	}
	var conn net.Conn
	if cfg.Spawn {
		conn, err = ensureDaemon(sock, cfg, environ)
	} else {
		conn, err = net.Dial("unix", sock)
	}
	if err != nil {
		return false, err
	}
	defer conn.Close()
	return true, relay(ctx, conn, environ, req, stdout, stderr)
}

// relay sends the request on conn and writes the daemon's response to
// stdout as a CGI response, as it arrives. When ctx ends or stdout fails
// (the web server's client went away), the connection is closed, so the
// daemon stops the request, and relay returns.
func relay(ctx context.Context, conn net.Conn, environ []string, req *cgi.Request, stdout io.Writer, stderr io.Writer) error {
	client, err := gofast.SimpleClientFactory(func() (net.Conn, error) { return conn, nil })()
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	params := make(map[string]string, len(environ))
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		params[name] = value
	}
	var body io.Reader = strings.NewReader("")
	if req.Body != nil {
		body = req.Body
	}
	resp, err := client.Do(&gofast.Request{Role: gofast.RoleResponder, Params: params, Stdin: io.NopCloser(body)})
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	// gofast's reader blocks for good on a response pipe nobody reads, so
	// giving up must close the pipes as well as the connection.
	var once sync.Once
	giveUp := func() {
		once.Do(func() {
			conn.Close()
			resp.Close()
		})
	}
	stop := context.AfterFunc(ctx, giveUp)
	defer stop()
	w := &cgiResponse{w: stdout, header: http.Header{}, failed: giveUp}
	var errs strings.Builder
	err = resp.WriteTo(w, io.MultiWriter(stderr, &errs))
	if err == nil && errs.Len() > 0 {
		err = errors.New(strings.TrimSpace(errs.String()))
	}
	if w.err != nil {
		return fmt.Errorf("hand-off: write the response: %w", w.err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("hand-off: %w", context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	return nil
}

// cgiResponse is the http.ResponseWriter gofast writes to: it writes a CGI
// response, each write going out at once so a streamed body stays
// streamed. After the first failed write it calls failed and takes what
// follows without writing it, so gofast never waits on it.
type cgiResponse struct {
	w      io.Writer
	header http.Header
	wrote  bool
	err    error
	failed func()
}

func (c *cgiResponse) Header() http.Header { return c.header }

func (c *cgiResponse) WriteHeader(status int) {
	if c.wrote {
		return
	}
	c.wrote = true
	var b strings.Builder
	fmt.Fprintf(&b, "Status: %d %s\r\n", status, http.StatusText(status))
	names := make([]string, 0, len(c.header))
	for name := range c.header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range c.header[name] {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	_, err := io.WriteString(c.w, b.String())
	c.fail(err)
}

func (c *cgiResponse) fail(err error) {
	if err != nil && c.err == nil {
		c.err = err
		c.failed()
	}
}

func (c *cgiResponse) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if c.err == nil {
		_, err := c.w.Write(p)
		c.fail(err)
	}
	return len(p), nil
}

package main

// This file holds the gateway from the HTTP front to the pool.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// gateway serves requests from a front on the pool.
type gateway struct {
	pool      *bridge.Pool
	mount     string // mountKeep: as the server sent it
	log       *slog.Logger
	accessLog bool
	watch     *codeWatch // nil: no reload on change

	active   atomic.Int64
	lastSeen atomic.Int64 // unix nanoseconds of the last request's start or end
	served   uint64       // the pool's Activity count when idleFor last looked
}

// mountKeep as --mount takes SCRIPT_NAME and PATH_INFO as the web server
// sent them (right for CGI hand-offs and carefully configured servers).
const mountKeep = "keep"

func newGateway(pool *bridge.Pool, started time.Time, d *daemonFlags, log *slog.Logger) *gateway {
	g := &gateway{pool: pool, mount: d.mount, log: log, accessLog: d.accessLog}
	if d.reloadOnChange {
		g.watch = newCodeWatch(pool.AppFiles(), started)
	}
	g.lastSeen.Store(time.Now().UnixNano())
	return g
}

// idleFor returns how long no request has been in progress.
func (g *gateway) idleFor() time.Duration {
	// Workers serving FastCGI themselves count their requests on the
	// pool's board instead.
	if served, busy := g.pool.Activity(); busy || served != g.served {
		g.served = served
		g.lastSeen.Store(time.Now().UnixNano())
	}
	if g.active.Load() > 0 {
		return 0
	}
	return time.Since(time.Unix(0, g.lastSeen.Load()))
}

// codeWatch notices when the app's source files change.
type codeWatch struct {
	mu    sync.Mutex
	mtime map[string]time.Time
}

// newCodeWatch watches files as the workers imported them, the import
// having begun at since.
func newCodeWatch(files []string, since time.Time) *codeWatch {
	w := &codeWatch{}
	w.snapshot(files, since)
	return w
}

// snapshot records the files' mtimes. A file changed after since (or just
// before: file times are coarse) is recorded as changed already, as the
// workers may have imported its old code. Its change time says so, not
// its mtime: an mtime can be set ahead, and a file touched ahead while
// the workers imported would otherwise never count as changed.
func (w *codeWatch) snapshot(files []string, since time.Time) {
	w.mtime = map[string]time.Time{}
	now := time.Now()
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		w.mtime[f] = fi.ModTime()
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		// A change time ahead of the clock (the clock was set back) is no
		// sign of anything; counting it would reload on every request.
		if ctime := time.Unix(st.Ctim.Unix()); ctime.After(since.Add(-20*time.Millisecond)) && !ctime.After(now) {
			w.mtime[f] = time.Time{}
		}
	}
}

func (w *codeWatch) changed() string {
	for f, t := range w.mtime {
		if fi, err := os.Stat(f); err != nil || !fi.ModTime().Equal(t) {
			return f
		}
	}
	return ""
}

// check reloads the pool before a request if the app's code changed, so
// the request runs the new code; requests wait while it reloads.
func (g *gateway) check() {
	w := g.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.changed()
	if f == "" {
		return
	}
	g.log.Info("the app's code changed: reloading", "file", f)
	since := time.Now()
	if err := g.pool.Reload(); err != nil {
		g.log.Error("reload failed; the running workers stay", "err", err)
	}
	w.snapshot(g.pool.AppFiles(), since)
}

var _ http.Handler = (*gateway)(nil)

// serve runs one request and logs it; it reports whether the response was
// cut short, which the front must make visible to the client.
func (g *gateway) serve(ctx context.Context, env []bridge.Var, body io.Reader, rw bridge.ResponseWriter) (cutShort bool) {
	start := time.Now()
	g.active.Add(1)
	defer func() {
		g.lastSeen.Store(time.Now().UnixNano())
		g.active.Add(-1)
	}()
	if g.watch != nil {
		g.check()
	}
	if g.mount != mountKeep {
		env = bridge.Mount(env, g.mount)
	}
	res, err := g.pool.Serve(ctx, &bridge.Request{Env: env, Body: body}, rw)
	if err != nil || g.accessLog {
		var method, uri string
		for _, v := range env {
			switch v.Name {
			case "REQUEST_METHOD":
				method = v.Value
			case "REQUEST_URI":
				uri = v.Value
			}
		}
		attrs := []any{"method", method, "uri", uri, "status", res.Status, "bytes", res.BodyBytes,
			"duration", time.Since(start).Round(time.Microsecond)}
		if err != nil {
			g.log.Error("request failed", append(attrs, "err", err)...)
		} else {
			g.log.Info("request", attrs...)
		}
	}
	return res.CutShort
}

// ServeHTTP serves a request from the HTTP front: the request becomes a
// CGI environ as a web server would make it (RFC 3875).
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.serve(r.Context(), httpEnv(r), r.Body, &httpWriter{w: w}) {
		// Makes net/http close the connection: a truncated response
		// instead of one that looks complete.
		panic(http.ErrAbortHandler)
	}
}

func httpEnv(r *http.Request) []bridge.Var {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
	}
	raddr, rport, _ := net.SplitHostPort(r.RemoteAddr)
	env := []bridge.Var{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "wsgibridge"},
		{Name: "REQUEST_METHOD", Value: r.Method},
		{Name: "REQUEST_URI", Value: r.RequestURI},
		{Name: "SERVER_PROTOCOL", Value: r.Proto},
		{Name: "SERVER_NAME", Value: host},
		{Name: "SERVER_PORT", Value: port},
		{Name: "REMOTE_ADDR", Value: raddr},
		{Name: "REMOTE_PORT", Value: rport},
		{Name: "SCRIPT_NAME", Value: ""},
		{Name: "PATH_INFO", Value: r.URL.Path},
		{Name: "QUERY_STRING", Value: r.URL.RawQuery},
		{Name: "HTTP_HOST", Value: r.Host},
	}
	if len(r.TransferEncoding) > 0 {
		// net/http moves Transfer-Encoding out of the header map.
		env = append(env, bridge.Var{Name: "HTTP_TRANSFER_ENCODING", Value: strings.Join(r.TransferEncoding, ", ")})
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		env = append(env, bridge.Var{Name: "CONTENT_TYPE", Value: ct})
	}
	if r.ContentLength > 0 || (r.ContentLength == 0 && r.Header.Get("Content-Length") != "") {
		env = append(env, bridge.Var{Name: "CONTENT_LENGTH", Value: strconv.FormatInt(r.ContentLength, 10)})
	}
	for name, values := range r.Header {
		key := "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		sep := ", "
		if key == "HTTP_COOKIE" {
			sep = "; "
		}
		env = append(env, bridge.Var{Name: key, Value: strings.Join(values, sep)})
	}
	return env
}

// httpWriter turns a CGI response into an HTTP one.
type httpWriter struct{ w http.ResponseWriter }

func (h *httpWriter) WriteHeader(status int, block []byte) error {
	hdr := h.w.Header()
	lines := bytes.Split(bytes.TrimSuffix(block, []byte("\r\n\r\n")), []byte("\r\n"))
	for _, line := range lines[1:] { // lines[0] is the Status line
		name, value, ok := bytes.Cut(line, []byte(": "))
		if ok {
			hdr.Add(string(name), string(value))
		}
	}
	h.w.WriteHeader(status)
	return nil
}

func (h *httpWriter) Write(p []byte) (int, error) { return h.w.Write(p) }

func (h *httpWriter) Flush() error { return http.NewResponseController(h.w).Flush() }

// Package gateway is the front of the http mode: it serves each HTTP
// request on a pool of workers (bridge.Pool), the request made into a CGI
// environ as a web server would make it (RFC 3875) and the worker's CGI
// response into an HTTP one. It logs each request (failures always, the
// rest with an access log) and, when asked, reloads the pool before a
// request when the app's source files changed. The listener and the
// http.Server around it are the command's.
package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// Config says how a Gateway serves.
type Config struct {
	// Pool runs the requests.
	Pool *bridge.Pool
	// Mount is the app's SCRIPT_NAME (see bridge.Mount), unless KeepMount
	// leaves SCRIPT_NAME and PATH_INFO as the request has them.
	Mount     string
	KeepMount bool
	// AccessLog logs every request; failed ones are logged either way.
	AccessLog bool
	// ReloadOnChange reloads the pool before a request when one of the
	// app's own source files changed since the workers imported it,
	// which began at Started.
	ReloadOnChange bool
	Started        time.Time
	// Logger receives the log lines; nil means slog.Default().
	Logger *slog.Logger
}

// Gateway serves HTTP requests on a pool.
type Gateway struct {
	cfg   Config
	log   *slog.Logger
	watch *codeWatch // nil: no reload on change
}

var _ http.Handler = (*Gateway)(nil)

// New returns a Gateway for cfg.
func New(cfg Config) *Gateway {
	g := &Gateway{cfg: cfg, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	if cfg.ReloadOnChange {
		g.watch = newCodeWatch(cfg.Pool.AppFiles(), cfg.Started)
	}
	return g
}

// check reloads the pool before a request if the app's code changed, so
// the request runs the new code; requests wait while it reloads.
func (g *Gateway) check() {
	w := g.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.changed()
	if f == "" {
		return
	}
	g.log.Info("the app's code changed: reloading", "file", f)
	since := time.Now()
	if err := g.cfg.Pool.Reload(); err != nil {
		g.log.Error("reload failed; the running workers stay", "err", err)
	}
	w.snapshot(g.cfg.Pool.AppFiles(), since)
}

// serve runs one request and logs it; it reports whether the response was
// cut short, which the front must make visible to the client.
func (g *Gateway) serve(ctx context.Context, env []bridge.Var, body io.Reader, rw bridge.ResponseWriter) (cutShort bool) {
	start := time.Now()
	if g.watch != nil {
		g.check()
	}
	if !g.cfg.KeepMount {
		env = bridge.Mount(env, g.cfg.Mount)
	}
	res, err := g.cfg.Pool.Serve(ctx, &bridge.Request{Env: env, Body: body}, rw)
	if err != nil || g.cfg.AccessLog {
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
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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

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
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
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
	// Limits bound a request's line and header fields.
	Limits Limits
	// Logger receives the log lines; nil means slog.Default().
	Logger *slog.Logger
}

// Limits bound what a request may send before its body, as gunicorn's
// limit_request_* settings do; 0 is no limit (net/http's 1 MiB on the
// whole header block still holds).
type Limits struct {
	// RequestLine is the longest request line, in bytes (else 414).
	RequestLine int
	// RequestFields is the most header fields (else 431).
	RequestFields int
	// RequestFieldSize is the longest header field line, in bytes, its
	// name included (else 431).
	RequestFieldSize int
}

// DefaultLimits are gunicorn's.
var DefaultLimits = Limits{RequestLine: 4094, RequestFields: 100, RequestFieldSize: 8190}

// maxHeaderBytes is the header block net/http reads for limits: every
// line at its longest, with its line end.
func (l Limits) maxHeaderBytes() int {
	if l.RequestLine <= 0 || l.RequestFields <= 0 || l.RequestFieldSize <= 0 {
		return http.DefaultMaxHeaderBytes
	}
	return l.RequestLine + 2 + l.RequestFields*(l.RequestFieldSize+2) + 2
}

// Gateway serves HTTP requests on a pool.
type Gateway struct {
	cfg   Config
	log   *slog.Logger
	watch *codeWatch // nil: no reload on change
	srv   *http.Server
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
	g.srv = &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       75 * time.Second,
		MaxHeaderBytes:    cfg.Limits.maxHeaderBytes(),
		ConnContext:       withConn,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return g
}

// Serve serves HTTP on l until Shutdown; it returns http.ErrServerClosed
// then.
func (g *Gateway) Serve(l net.Listener) error {
	// A line is never longer than the whole block net/http reads.
	return g.srv.Serve(&listener{Listener: l, maxLine: g.srv.MaxHeaderBytes + 4096})
}

// Shutdown stops accepting connections and waits for the requests in
// progress, until ctx ends.
func (g *Gateway) Shutdown(ctx context.Context) error {
	return g.srv.Shutdown(ctx)
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
// cut short, or the client left, which the front must make visible to the
// client by closing the connection.
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
		switch {
		case res.Status == bridge.StatusClientLeft:
			// Nobody's fault here; one line, as nginx logs its 499s.
			g.log.Info("request", append(attrs, "client", "went away")...)
		case err != nil:
			g.log.Error("request failed", append(attrs, "err", err)...)
		default:
			g.log.Info("request", attrs...)
		}
	}
	// A client that left gets nothing more: not net/http's empty 200.
	return res.CutShort || res.Status == bridge.StatusClientLeft
}

// ServeHTTP serves a request from the HTTP front: the request becomes a
// CGI environ as a web server would make it (RFC 3875). A request whose
// framing is faulty, or that is beyond the limits, is refused first.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h *head
	if c, ok := r.Context().Value(connKey{}).(*conn); ok {
		seen, ok := c.next(r)
		if !ok {
			g.refuse(w, r, http.StatusBadRequest, "its framing could not be followed: net/http and the gateway read the connection differently")
			return
		}
		h = &seen
	}
	if status, why := check(r, h, g.cfg.Limits); status != 0 {
		g.refuse(w, r, status, why)
		return
	}
	if i := strings.IndexByte(r.RequestURI, '#'); i >= 0 {
		// A fragment is the client's own (RFC 3986 3.5), never the app's.
		u, err := url.ParseRequestURI(r.RequestURI[:i])
		if err != nil {
			g.refuse(w, r, http.StatusBadRequest, "a request target that is only a fragment")
			return
		}
		r = r.WithContext(r.Context())
		r.URL, r.RequestURI = u, r.RequestURI[:i]
	}
	if h != nil && h.transferEncoding {
		// The scan follows no chunked body: the connection ends here.
		w.Header().Set("Connection", "close")
	}
	for _, name := range dropped(r) {
		g.log.Debug("dropped a request header with an underscore in its name", "header", name)
	}
	if g.serve(r.Context(), httpEnv(r), r.Body, &httpWriter{w: w}) {
		// Makes net/http close the connection: a truncated response
		// instead of one that looks complete.
		panic(http.ErrAbortHandler)
	}
}

// refuse answers a request the gateway does not serve, closes its
// connection, and logs why.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, status int, why string) {
	g.log.Warn("request refused", "status", status, "why", why, "remote", r.RemoteAddr,
		"method", r.Method, "uri", clip(r.RequestURI))
	w.Header().Set("Connection", "close")
	http.Error(w, strconv.Itoa(status)+" "+http.StatusText(status), status)
}

// check returns the status for a request the gateway refuses, and why;
// 0 for one it serves. h is what the scan saw of r, nil where r did not
// come through a scanned connection.
func check(r *http.Request, h *head, lim Limits) (int, string) {
	if h != nil {
		switch {
		case h.transferEncoding && !r.ProtoAtLeast(1, 1):
			return http.StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)"
		case h.transferEncoding && h.contentLength:
			return http.StatusBadRequest, "both Content-Length and Transfer-Encoding (RFC 9112 6.1)"
		case lim.RequestLine > 0 && len(h.line) > lim.RequestLine:
			return http.StatusRequestURITooLong, fmt.Sprintf("the request line has %d bytes, over --limit-request-line %d", len(h.line), lim.RequestLine)
		case lim.RequestFields > 0 && h.fields > lim.RequestFields:
			return http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("%d header fields, over --limit-request-fields %d", h.fields, lim.RequestFields)
		case lim.RequestFieldSize > 0 && h.longest > lim.RequestFieldSize:
			return http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("a header field of %d bytes, over --limit-request-field-size %d", h.longest, lim.RequestFieldSize)
		}
	}
	if r.URL.Scheme != "" || r.URL.Host != "" {
		if s := strings.ToLower(r.URL.Scheme); (s != "http" && s != "https") || !validAuthority(r.URL.Host) {
			return http.StatusBadRequest, "an absolute-form target whose scheme or authority is not valid (RFC 9112 3.2.2)"
		}
	}
	return 0, ""
}

// validAuthority tells whether s is host[:port] as RFC 3986 3.2.2 has it:
// a bracketed IPv6 address, or a name or IPv4 address of the characters a
// reg-name may hold.
func validAuthority(s string) bool {
	host := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[i:], "]") {
		host = s[:i]
		for _, c := range s[i+1:] {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		addr, err := netip.ParseAddr(inner)
		return ok && err == nil && addr.Is6()
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
		case c == '%' && i+2 < len(host) && isHex(host[i+1]) && isHex(host[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// clip shortens what goes into a log line from a request.
func clip(s string) string {
	const most = 200
	if len(s) > most {
		return s[:most] + "..."
	}
	return s
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
		if strings.IndexByte(name, '_') >= 0 {
			continue // see dropped
		}
		key := "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		sep := ", "
		if key == "HTTP_COOKIE" {
			sep = "; "
		}
		env = append(env, bridge.Var{Name: key, Value: strings.Join(values, sep)})
	}
	return env
}

// dropped returns the names of r's headers that httpEnv leaves out: those
// with an underscore, which would share their CGI name with the same one
// spelled with a dash (X_Real_User and X-Real-User, a client's and a
// proxy's), as nginx, Apache 2.4 and gunicorn leave them out.
func dropped(r *http.Request) []string {
	var out []string
	for name := range r.Header {
		if strings.IndexByte(name, '_') >= 0 {
			out = append(out, name)
		}
	}
	return out
}

// httpWriter turns a CGI response into an HTTP one.
type httpWriter struct{ w http.ResponseWriter }

func (h *httpWriter) WriteHeader(status int, block []byte) error {
	hdr := h.w.Header()
	lines := bytes.Split(bytes.TrimSuffix(block, []byte("\r\n\r\n")), []byte("\r\n"))
	for _, line := range lines {
		name, value, ok := bytes.Cut(line, []byte(": "))
		if ok && string(name) != "Status" {
			hdr.Add(string(name), string(value))
		}
	}
	h.w.WriteHeader(status)
	return nil
}

func (h *httpWriter) Write(p []byte) (int, error) { return h.w.Write(p) }

func (h *httpWriter) Flush() error { return http.NewResponseController(h.w).Flush() }

package bridge

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// nginxEnv is a typical environ from nginx's stock fastcgi_params.
var nginxEnv = []Var{
	{"QUERY_STRING", ""}, {"REQUEST_METHOD", "GET"}, {"CONTENT_TYPE", ""}, {"CONTENT_LENGTH", ""},
	{"SCRIPT_NAME", "/hello"}, {"REQUEST_URI", "/hello"}, {"DOCUMENT_URI", "/hello"},
	{"DOCUMENT_ROOT", "/usr/share/nginx/html"}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"REQUEST_SCHEME", "http"},
	{"GATEWAY_INTERFACE", "CGI/1.1"}, {"SERVER_SOFTWARE", "nginx/1.22.1"}, {"REMOTE_ADDR", "127.0.0.1"},
	{"REMOTE_PORT", "50000"}, {"SERVER_ADDR", "127.0.0.1"}, {"SERVER_PORT", "8080"}, {"SERVER_NAME", "localhost"},
	{"REDIRECT_STATUS", "200"}, {"HTTP_HOST", "127.0.0.1:8080"}, {"HTTP_USER_AGENT", "wrk"},
	{"HTTP_ACCEPT", "*/*"}, {"HTTP_CONNECTION", "keep-alive"},
}

func BenchmarkNormalize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := normalize(nginxEnv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRequest encodes the request frame the worker decodes with
// marshal.loads.
func BenchmarkEncodeRequest(b *testing.B) {
	env, _, _, _ := normalize(nginxEnv)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendHeader(buf[:0], frameRequest, 0, 1, 0)
		buf = appendEnviron(buf, env)
		putSize(buf, len(buf)-headerLen)
	}
}

// discard is a ResponseWriter that drops the response.
type discard struct{}

func (discard) WriteHeader(int, []byte) error { return nil }
func (discard) Write(p []byte) (int, error)   { return len(p), nil }
func (discard) Flush() error                  { return nil }

// BenchmarkPoolNoop runs requests through a one-worker pool on an app that
// answers an empty 200: the bridge's cost per request, Go and Python, with
// the app's own work left out.
func BenchmarkPoolNoop(b *testing.B) {
	dir := b.TempDir()
	app := filepath.Join(dir, "noop.py")
	if err := os.WriteFile(app, []byte("def application(e, s):\n    s('200 OK', [])\n    return []\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	pool, err := NewPool(PoolConfig{Worker: Config{App: app, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Shutdown(context.Background())
	req := &Request{Env: nginxEnv}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pool.Serve(ctx, req, discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

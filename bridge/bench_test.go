package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
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
	pool, err := NewPool(PoolConfig{Worker: Config{App: app, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, Workers: Size{1, 1}})
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

// BenchmarkFastCGIWorker sends nginx's request for /hello to a FastCGI
// worker over one kept connection, as nginx with fastcgi_keep_conn does,
// and reads the response to its END_REQUEST: the worker's cost per
// request (records, params, environ, response) plus one round trip.
func BenchmarkFastCGIWorker(b *testing.B) {
	p := startFCGIPool(b, 1, "hello")
	kv := make([]string, 0, 2*len(nginxEnv))
	for _, v := range nginxEnv {
		kv = append(kv, v.Name, v.Value)
	}
	req := tu.FCGIRequest(1, true, "", kv...)
	end := tu.FCGIRecord(tu.FCGIEndRequest, 1, make([]byte, 8))
	nc, err := net.Dial("unix", p.sock)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 64<<10)
	pid := p.pool.Stats().Pids[0]
	before := cpuTime(b, pid)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		var got []byte
		for !bytes.HasSuffix(got, end) {
			n, err := nc.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
	}
	b.ReportMetric(float64((cpuTime(b, pid)-before).Microseconds())/float64(b.N), "worker-cpu-µs/op")
}

// cpuTime returns the CPU time a process has used, user and system, from
// /proc (in clock ticks of 10 ms: measure many requests).
func cpuTime(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the line.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

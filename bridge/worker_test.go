package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
)

// recorder is a ResponseWriter that keeps what it was given.
type recorder struct {
	mu          sync.Mutex
	status      int
	block       string
	body        bytes.Buffer
	headerCalls int
	flushed     chan string // each flush sends the body so far, if not nil
}

func (r *recorder) WriteHeader(status int, block []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headerCalls++
	r.status, r.block = status, string(block)
	return nil
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.Write(p)
}

func (r *recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flushed != nil {
		select {
		case r.flushed <- r.body.String():
		default:
		}
	}
	return nil
}

// syncBuffer keeps log lines written from several goroutines.
type syncBuffer = testutil.SyncBuffer

// harness runs a worker on testdata/apps/probe.py and keeps its logs.
type harness struct {
	t      testing.TB
	w      *Worker
	log    *syncBuffer
	output *os.File
}

func probeApp(t testing.TB, callable string) string {
	p, err := filepath.Abs("../testdata/apps/probe.py")
	require.NoError(t, err)
	return p + ":" + callable
}

func newHarness(t testing.TB, app string) *harness {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "worker-output")
	require.NoError(t, err)
	h := &harness{t: t, log: &syncBuffer{}, output: out}
	h.w, err = Start(Config{
		App:    app,
		Env:    []string{"PATH=" + os.Getenv("PATH"), "WORKER_ONLY=1"},
		Output: out,
		Logger: slog.New(slog.NewTextHandler(h.log, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { h.w.Close(time.Second) })
	return h
}

// workerOutput returns what the worker wrote to stdout and stderr so far.
func (h *harness) workerOutput() string {
	b, err := os.ReadFile(h.output.Name())
	require.NoError(h.t, err)
	return string(b)
}

func env(path string, extra ...string) []Var {
	vars := []Var{
		{"REQUEST_METHOD", "GET"}, {"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", "localhost"}, {"SERVER_PORT", "80"},
		{"SCRIPT_NAME", ""}, {"PATH_INFO", path}, {"QUERY_STRING", ""},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars = setVar(vars, extra[i], extra[i+1])
	}
	return vars
}

func setVar(vars []Var, name, value string) []Var {
	for i := range vars {
		if vars[i].Name == name {
			vars[i].Value = value
			return vars
		}
	}
	return append(vars, Var{name, value})
}

func (h *harness) serve(req *Request) (*recorder, Result, error) {
	h.t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.w.Serve(ctx, req, rec)
	return rec, res, err
}

func (h *harness) get(path string, extra ...string) (*recorder, Result, error) {
	h.t.Helper()
	return h.serve(&Request{Env: env(path, extra...)})
}

// bothApps runs f against the probe app, bare and under wsgiref.validate.
func bothApps(t *testing.T, f func(t *testing.T, h *harness)) {
	for _, callable := range []string{"application", "validated"} {
		t.Run(callable, func(t *testing.T) { f(t, newHarness(t, probeApp(t, callable))) })
	}
}

func TestServeHello(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, res, err := h.get("/hello")
		require.NoError(t, err)
		assert.Equal(t, 200, res.Status)
		assert.Equal(t, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\n", rec.block)
		assert.Equal(t, "Hello, world!", rec.body.String())
		assert.Equal(t, int64(13), res.BodyBytes)
	})
}

// TestAppErrors covers each way an app can break the contract before its
// headers are sent: the client gets a clean 500 and the log names the
// mistake.
func TestAppErrors(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	tests := []struct {
		path string
		log  string
	}{
		{"/raise-before", "RuntimeError: raised before start_response on purpose"},
		{"/write-before-start", "write() called before start_response()"},
		{"/start-twice", "start_response() called a second time without exc_info"},
		{"/empty-then-raise", "RuntimeError: raised after empty chunks"},
		{"/str-body", "body chunks must be bytes, not str"},
		{"/int-status", "status must be str, not int"},
		{"/crlf-header", "control character"},
		{"/hop-header", "hop-by-hop header 'Connection'"},
		{"/sys-exit", "SystemExit: 1"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if tt.path == "/sys-exit" {
				// The worker exits after SystemExit: run it last on its own.
				h = newHarness(t, probeApp(t, "application"))
			}
			rec, res, err := h.get(tt.path)
			require.NoError(t, err)
			assert.Equal(t, 500, res.Status)
			assert.True(t, res.AppError)
			assert.Equal(t, 1, rec.headerCalls)
			assert.Equal(t, "Internal Server Error\n", rec.body.String())
			assert.NotContains(t, rec.body.String(), "Traceback", "tracebacks stay in the log")
			assert.Contains(t, h.log.String(), tt.log)
			assert.Contains(t, h.log.String(), "GET "+tt.path)
		})
	}
	// The worker that served the errors above still serves.
	h = newHarness(t, probeApp(t, "application"))
	for _, path := range []string{"/raise-before", "/str-body", "/hello"} {
		_, res, err := h.get(path)
		require.NoError(t, err)
		assert.NotZero(t, res.Status)
	}
	_, res, err := h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
}

func TestSysExitRecyclesWorker(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	_, res, err := h.get("/sys-exit")
	require.NoError(t, err)
	assert.Equal(t, 500, res.Status)
	assert.False(t, h.w.Usable(), "the worker said it exits")
	select {
	case <-h.w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("worker still running after the app raised SystemExit")
	}
}

func TestErrorAfterHeadersAborts(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		for _, path := range []string{"/raise-after", "/exc-info-after", "/short-length"} {
			rec, res, err := h.get(path)
			require.ErrorIs(t, err, ErrAborted, path)
			assert.Equal(t, 200, res.Status, path)
			assert.True(t, res.CutShort, path)
			assert.Equal(t, 1, rec.headerCalls, "never a second header block: "+path)
			assert.NotContains(t, rec.body.String(), "never")
		}
		assert.Contains(t, h.log.String(), "raised after headers on purpose")
		assert.Contains(t, h.log.String(), "late failure")
		assert.Contains(t, h.log.String(), "app sent 10 bytes of its Content-Length of 100")
		_, res, err := h.get("/hello")
		require.NoError(t, err, "the worker serves on after an abort")
		assert.Equal(t, 200, res.Status)
	})
}

func TestExcInfoBeforeHeadersReplacesStatus(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, res, err := h.get("/exc-info-before")
		require.NoError(t, err)
		assert.Equal(t, 503, res.Status)
		assert.Equal(t, "replaced", rec.body.String())
	})
}

func TestEmptyBodyStillSendsHeaders(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, res, err := h.get("/empty-body")
		require.NoError(t, err)
		assert.Equal(t, 200, res.Status)
		assert.Contains(t, rec.block, "X-Empty: yes\r\n")
		assert.Empty(t, rec.body.String())
	})
}

func TestWriteCallable(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, _, err := h.get("/write")
		require.NoError(t, err)
		assert.Equal(t, "written returned", rec.body.String())
	})
}

func TestCloseAlwaysCalled(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, _, err := h.get("/close")
		require.NoError(t, err)
		assert.Equal(t, "ab", rec.body.String())
		assert.Equal(t, 1, strings.Count(h.workerOutput(), "probe: close() called"))

		_, res, err := h.get("/close-on-raise")
		require.ErrorIs(t, err, ErrAborted)
		assert.True(t, res.CutShort)
		assert.Equal(t, 2, strings.Count(h.workerOutput(), "probe: close() called"))
	})
}

func TestFileWrapper(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		data := bytes.Repeat([]byte("0123456789abcdef"), 5000)
		path := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(path, data, 0o644))
		rec, _, err := h.get("/file-wrapper", "QUERY_STRING", path)
		require.NoError(t, err)
		assert.Equal(t, data, rec.body.Bytes())
	})
}

// TestInputNeverPastContentLength calls read() with no size, which PEP 3333
// allows and wsgiref.validate does not: it runs on the bare app only.
func TestInputNeverPastContentLength(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	body := strings.Repeat("x", 1000)
	req := func(path, length string) *Request {
		return &Request{Env: env(path, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", length), Body: strings.NewReader(body)}
	}
	rec, _, err := h.serve(req("/read-all", "100"))
	require.NoError(t, err)
	assert.Equal(t, "100 0", rec.body.String(), "read() stops at CONTENT_LENGTH, then b''")

	rec, _, err = h.serve(req("/read-more", "100"))
	require.NoError(t, err)
	assert.Equal(t, "100", rec.body.String())

	rec, _, err = h.serve(req("/read-all", "0"))
	require.NoError(t, err)
	assert.Equal(t, "0 0", rec.body.String())

	rec, _, err = h.serve(&Request{Env: env("/read-all", "REQUEST_METHOD", "POST"), Body: strings.NewReader(body)})
	require.NoError(t, err)
	assert.Equal(t, "0 0", rec.body.String(), "no CONTENT_LENGTH, no body")
}

func TestInputTerminated(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	rec, _, err := h.serve(&Request{Env: env("/read-all", "REQUEST_METHOD", "POST", "HTTP_TRANSFER_ENCODING", "chunked"), Body: strings.NewReader("chunked body")})
	require.NoError(t, err)
	assert.Equal(t, "12 0", rec.body.String())
	rec, _, err = h.serve(&Request{Env: env("/environ", "REQUEST_METHOD", "POST", "HTTP_TRANSFER_ENCODING", "chunked"), Body: strings.NewReader("x")})
	require.NoError(t, err)
	assert.Contains(t, rec.body.String(), "wsgi.input_terminated:bool")
}

// blockingReader returns its data, then blocks until closed, as a client
// that stopped sending does.
type blockingReader struct {
	data   io.Reader
	closed chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if n, err := b.data.Read(p); n > 0 || err != io.EOF {
		return n, err
	}
	<-b.closed
	return 0, io.EOF
}

func TestShortBodyDoesNotHang(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	// The app answers without reading a body whose source stalls: the
	// response is not held up, and the worker serves the next request.
	br := &blockingReader{data: strings.NewReader("abc"), closed: make(chan struct{})}
	defer close(br.closed)
	rec, _, err := h.serve(&Request{Env: env("/hello", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100"), Body: br})
	require.NoError(t, err)
	assert.Equal(t, "Hello, world!", rec.body.String())
	rec, _, err = h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, "Hello, world!", rec.body.String())
}

func TestReadline(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		body := "line one\nabcdef\nthird\nlast"
		rec, _, err := h.serve(&Request{Env: env("/readlines", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(len(body))), Body: strings.NewReader(body)})
		require.NoError(t, err)
		assert.Equal(t, "line one\n|abc|def\n|third\n|last", rec.body.String())
	})
}

func TestEchoLargeBody(t *testing.T) {
	h := newHarness(t, probeApp(t, "validated"))
	body := make([]byte, 8<<20+13)
	for i := range body {
		body[i] = byte(i * 7)
	}
	rec, _, err := h.serve(&Request{Env: env("/echo", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", strconv.Itoa(len(body))), Body: bytes.NewReader(body)})
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(body), sha256.Sum256(rec.body.Bytes()))
}

func TestStreamedChunkArrivesBeforeGeneratorEnds(t *testing.T) {
	h := newHarness(t, probeApp(t, "validated"))
	gate := filepath.Join(t.TempDir(), "gate")
	rec := &recorder{flushed: make(chan string, 4)}
	done := make(chan error, 1)
	go func() {
		_, err := h.w.Serve(context.Background(), &Request{Env: env("/stream", "QUERY_STRING", gate)}, rec)
		done <- err
	}()
	select {
	case got := <-rec.flushed:
		assert.Equal(t, "first chunk\n", got)
	case <-time.After(20 * time.Second):
		t.Fatal("first chunk not flushed while the generator waits")
	}
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	require.NoError(t, <-done)
	assert.Equal(t, "first chunk\nsecond chunk\n", rec.body.String())
}

func TestPrintDoesNotCorruptResponse(t *testing.T) {
	bothApps(t, func(t *testing.T, h *harness) {
		rec, _, err := h.get("/print")
		require.NoError(t, err)
		assert.Equal(t, "printed", rec.body.String())
		assert.Equal(t, 200, rec.status)
		assert.Contains(t, h.workerOutput(), "probe: printed to stdout")
	})
}

func TestEnvironLatin1AllBytes(t *testing.T) {
	var all []byte
	for i := 1; i < 256; i++ { // NUL is refused: see TestServeRefusesBadRequests
		all = append(all, byte(i))
	}
	h := newHarness(t, probeApp(t, "validated"))
	rec, _, err := h.get("/environ", "X_BYTES", string(all), "PATH_INFO", "/environ")
	require.NoError(t, err)
	assert.Contains(t, rec.body.String(), "\nX_BYTES="+string(all)+"\n")
	long := strings.Repeat("\xe9", 70000)
	rec, _, err = h.get("/environ", "X_LONG", long)
	require.NoError(t, err)
	assert.Contains(t, rec.body.String(), "\nX_LONG="+long+"\n")
}

func TestEnvironKeys(t *testing.T) {
	h := newHarness(t, probeApp(t, "validated"))
	rec, _, err := h.get("/environ", "HTTP_PROXY", "http://evil:3128", "HTTPS", "on", "HTTP_HOST", "example.org")
	require.NoError(t, err)
	got := rec.body.String()
	for _, want := range []string{
		"wsgi.version:tuple", "wsgi.input:Input", "wsgi.errors:", "wsgi.multithread:bool",
		"wsgi.multiprocess:bool", "wsgi.run_once:bool", "wsgi.file_wrapper:type",
		"wsgi.url_scheme=https", "SCRIPT_NAME=\n", "PATH_INFO=/environ", "QUERY_STRING=",
	} {
		assert.Contains(t, got, want)
	}
	assert.NotContains(t, got, "HTTP_PROXY", "httpoxy: a Proxy header never reaches the app")

	rec, _, err = h.get("/os-environ")
	require.NoError(t, err)
	assert.Contains(t, rec.body.String(), "WORKER_ONLY=1")
	assert.NotContains(t, rec.body.String(), "REQUEST_METHOD", "request data never reaches os.environ")
}

func TestServeRefusesBadRequests(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	tests := []struct {
		name   string
		vars   []string
		status int
	}{
		{"negative length", []string{"CONTENT_LENGTH", "-2"}, 400},
		{"plus sign", []string{"CONTENT_LENGTH", "+5"}, 400},
		{"NUL in value", []string{"HTTP_X", "a\x00b"}, 400},
		{"no method", []string{"REQUEST_METHOD", ""}, 500},
		{"bogus protocol", []string{"SERVER_PROTOCOL", "INCLUDED"}, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, res, err := h.get("/hello", tt.vars...)
			var se *StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.status, res.Status)
			assert.Equal(t, tt.status, rec.status)
		})
	}
	_, res, err := h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
}

func TestWorkerDeath(t *testing.T) {
	for _, tt := range []struct{ path, why string }{
		{"/exit", "exited with status 7"},
		{"/kill", "killed by signal 9"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			h := newHarness(t, probeApp(t, "application"))
			rec, res, err := h.get(tt.path)
			require.ErrorIs(t, err, ErrWorkerDied)
			assert.Contains(t, err.Error(), tt.why)
			assert.Contains(t, err.Error(), "pid "+strconv.Itoa(h.w.Pid()))
			assert.Equal(t, 502, res.Status)
			assert.Equal(t, 502, rec.status)
			assert.False(t, res.CutShort)
			assert.False(t, h.w.Usable())
		})
	}
}

// TestStopInterruptsApp: a request whose context ends is stopped inside
// the app (a sleep, a busy loop, one the first signal missed); the worker
// serves on.
func TestStopInterruptsApp(t *testing.T) {
	for _, path := range []string{"/sleep", "/loop", "/lose-first-stop"} {
		t.Run(path, func(t *testing.T) {
			h := newHarness(t, probeApp(t, "application"))
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			rec := &recorder{}
			res, err := h.w.Serve(ctx, &Request{Env: env(path, "QUERY_STRING", "60")}, rec)
			require.ErrorIs(t, err, ErrStopped)
			assert.Equal(t, 504, res.Status)
			assert.Equal(t, 504, rec.status)
			assert.Equal(t, 1, rec.headerCalls, "the worker's own 500 page is not sent after a stop")
			assert.True(t, h.w.Usable(), "the worker serves on")
			assert.Contains(t, err.Error(), "stopped the app in:\n", "the error tells where the app was")
			assert.Contains(t, err.Error(), "probe.py", "the error tells where the app was")
			assert.NotContains(t, h.workerOutput(), "Traceback", "the bridge logs the stop, not the worker")
			rec, _, err = h.get("/pid")
			require.NoError(t, err)
			assert.Equal(t, strconv.Itoa(h.w.Pid()), rec.body.String())
		})
	}
}

func TestStopClosesIterable(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{flushed: make(chan string, 4)}
	done := make(chan error, 1)
	var res Result
	go func() {
		var err error
		res, err = h.w.Serve(ctx, &Request{Env: env("/slow-stream")}, rec)
		done <- err
	}()
	assert.Equal(t, "first\n", <-rec.flushed)
	cancel() // the client went away
	err := <-done
	require.ErrorIs(t, err, ErrStopped)
	assert.True(t, res.CutShort)
	assert.Equal(t, "first\n", rec.body.String())
	assert.Contains(t, h.workerOutput(), "probe: close() called")
	assert.True(t, h.w.Usable())
}

// TestClientLeavesAfterWholeResponse: a web server closes the connection
// as soon as it has the Content-Length it was promised, while the app is
// still in its iterable's close(). That client did not leave early: the
// app is not stopped, close() runs to its end, and the request is a 200,
// not a 499. With a deadline, a close() that runs past it is still
// stopped.
func TestClientLeavesAfterWholeResponse(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	// serve runs /slow-close and leaves as a web server does, once the
	// whole body was flushed to it.
	serve := func(ctx context.Context, seconds string) (Result, error) {
		ctx, leave := context.WithCancel(ctx)
		defer leave()
		rec := &recorder{flushed: make(chan string, 4)}
		done := make(chan error, 1)
		var res Result
		go func() {
			var err error
			res, err = h.w.Serve(ctx, &Request{Env: env("/slow-close", "QUERY_STRING", seconds)}, rec)
			done <- err
		}()
		assert.Equal(t, "whole", <-rec.flushed)
		leave()
		err := <-done
		return res, err
	}

	res, err := serve(context.Background(), "0.3")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
	assert.False(t, res.CutShort)
	assert.Contains(t, h.workerOutput(), "probe: close() called", "close() ran to its end")

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = serve(ctx, "30")
	require.ErrorIs(t, err, ErrStopped, "close() ran past the request's deadline")
}

func TestStopKillsUninterruptibleApp(t *testing.T) {
	out, err := os.CreateTemp(t.TempDir(), "out")
	require.NoError(t, err)
	w, err := Start(Config{App: probeApp(t, "application"), Output: out, StopGrace: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer w.Close(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rec := &recorder{}
	res, err := w.Serve(ctx, &Request{Env: env("/masked-sleep")}, rec)
	require.ErrorIs(t, err, ErrStopped)
	assert.Equal(t, 504, res.Status)
	assert.False(t, w.Usable())
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("worker still running after the stop grace")
	}
}

func TestImportError(t *testing.T) {
	dir := t.TempDir()
	h := &harness{t: t, log: &syncBuffer{}}
	w, err := Start(Config{App: "no_such_module_here", Dir: dir, Output: nil, Logger: slog.New(slog.NewTextHandler(h.log, nil))})
	require.NoError(t, err)
	defer w.Close(time.Second)
	err = w.Ready(context.Background())
	var ie *ImportError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Msg, "app 'no_such_module_here' failed to import: ModuleNotFoundError: No module named 'no_such_module_here'")
	assert.Contains(t, ie.Msg, "cwd "+dir)
	assert.Contains(t, ie.Msg, "(python /")
}

func TestAppSpecs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "pkg"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pkg", "__init__.py"), nil, 0o644))
	app := "def application(e, s):\n    s('200 OK', [])\n    return [b'module']\n" +
		"class Holder:\n    def other(e, s):\n        s('200 OK', [])\n        return [b'dotted']\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pkg", "site.py"), []byte(app), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notcallable.py"), []byte("application = 3\n"), 0o644))
	lib := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(lib, "libapp.py"), []byte(strings.Replace(app, "module", "from pythonpath", 1)), 0o644))
	tests := []struct {
		spec string
		path []string
		body string
		err  string
	}{
		{spec: "pkg.site", body: "module"},
		{spec: "pkg.site:application", body: "module"},
		{spec: "pkg.site:Holder.other", body: "dotted"},
		{spec: "pkg/site.py", body: "module"},
		{spec: filepath.Join(dir, "pkg", "site.py") + ":Holder.other", body: "dotted"},
		{spec: "libapp", path: []string{lib}, body: "from pythonpath"},
		{spec: "pkg.site:nothing", err: "module 'pkg.site' has no attribute 'nothing'"},
		{spec: "notcallable", err: "'application' in 'notcallable' is int, which is not callable"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			w, err := Start(Config{App: tt.spec, Dir: dir, PythonPath: tt.path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)
			defer w.Close(time.Second)
			rec := &recorder{}
			_, err = w.Serve(context.Background(), &Request{Env: env("/")}, rec)
			if tt.err != "" {
				var ie *ImportError
				require.ErrorAs(t, err, &ie)
				assert.Contains(t, ie.Msg, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.body, rec.body.String())
		})
	}
}

func TestAppFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "pkg"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pkg", "__init__.py"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pkg", "helper.py"), []byte("X = 1\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mysite.py"), []byte("import json, pkg.helper\ndef application(e, s):\n    s('200 OK', [])\n    return []\n"), 0o644))
	w, err := Start(Config{App: "mysite", Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer w.Close(time.Second)
	require.NoError(t, w.Ready(context.Background()))
	assert.ElementsMatch(t, []string{
		filepath.Join(dir, "mysite.py"), filepath.Join(dir, "pkg", "__init__.py"), filepath.Join(dir, "pkg", "helper.py"),
	}, w.AppFiles(), "the app's own files, not the standard library's")
}

// TestWorkerStartsLight guards cold-start cost (a CGI request pays it every
// time): on the way to serving a request the worker imports no module that
// costs milliseconds (the signal module alone, via enum, costs 4 ms).
func TestWorkerStartsLight(t *testing.T) {
	w, err := Start(Config{App: lightApp(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer w.Close(time.Second)
	rec := &recorder{}
	_, err = w.Serve(context.Background(), &Request{Env: env("/")}, rec)
	require.NoError(t, err)
	assertLight(t, strings.Split(rec.body.String(), "\n"), "enum", "signal", "re", "traceback", "importlib.util")
}

// lightApp is an app that imports nothing and answers with the names of
// the modules loaded.
func lightApp(t testing.TB) string {
	dir := t.TempDir()
	app := "import sys\ndef application(e, s):\n    s('200 OK', [])\n    return ['\\n'.join(sorted(sys.modules)).encode()]\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "light.py"), []byte(app), 0o644))
	return filepath.Join(dir, "light.py")
}

// assertLight checks that none of the heavy modules was loaded, unless
// the interpreter loads it by itself (site hooks may load plenty; that is
// not the worker's doing).
func assertLight(t *testing.T, modules []string, heavy ...string) {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import sys; print('\\n'.join(sys.modules))").Output()
	require.NoError(t, err)
	baseline := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Contains(t, modules, "sys", "the app listed the modules loaded")
	for _, name := range heavy {
		if !slices.Contains(baseline, name) {
			assert.NotContains(t, modules, name)
		}
	}
}

func TestPythonNotFound(t *testing.T) {
	_, err := Start(Config{App: "x", Python: "/nonexistent/python3"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `python "/nonexistent/python3" not found`)
}

func TestWorkerServesManyRequests(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	var pids []string
	for i := 0; i < 5; i++ {
		rec, _, err := h.serve(&Request{Env: env("/pid", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "5000"), Body: strings.NewReader(strings.Repeat("u", 5000))})
		require.NoError(t, err)
		pids = append(pids, rec.body.String())
	}
	for _, p := range pids {
		assert.Equal(t, strconv.Itoa(h.w.Pid()), p, "the same worker serves every request, unread bodies and all")
	}
	assert.True(t, h.w.Usable())
}

func TestCloseEndsWorker(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	require.NoError(t, h.w.Ready(context.Background()))
	h.w.Close(5 * time.Second)
	select {
	case <-h.w.Exited():
	default:
		t.Fatal("Close returned before the worker exited")
	}
	assert.NoError(t, h.w.waitErr, "a closed worker exits cleanly")
}

func TestServeAfterWorkerGone(t *testing.T) {
	h := newHarness(t, probeApp(t, "application"))
	h.w.Kill()
	<-h.w.Exited()
	rec, res, err := h.get("/hello")
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrWorkerDied))
	assert.Equal(t, 502, res.Status)
	assert.Equal(t, 502, rec.status)
}

// TestStartWhenThePythonDiesAtOnce: a worker that dies before it reads
// its source (killed as it starts, or not Python at all) does not leave
// Start waiting to write the source for good.
func TestStartWhenThePythonDiesAtOnce(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	require.NoError(t, err)
	defer l.Close()
	f, err := l.(*net.UnixListener).File()
	require.NoError(t, err)
	defer f.Close()
	require.Greater(t, len(fastCGIBundle().data), 64<<10, "more than a pipe holds, or the write could not block")
	done := make(chan error, 1)
	go func() {
		w, err := Start(Config{App: "x", Python: "true", FastCGI: &FastCGIConfig{Listener: f}})
		if err == nil {
			err = w.Ready(context.Background())
			w.Close(time.Second)
		}
		done <- err
	}()
	select {
	case err := <-done:
		assert.Error(t, err, "a worker that is gone is not ready")
	case <-time.After(10 * time.Second):
		t.Fatal("Start waited for good for a worker that died")
	}
}

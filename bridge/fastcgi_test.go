package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// fcgiPool is a pool of FastCGI workers serving testdata/apps/probe.py on
// a unix socket, as the daemon runs them.
type fcgiPool struct {
	sock string
	log  *syncBuffer
	pool *Pool
}

func startFCGIPool(t testing.TB, workers int, callable string) *fcgiPool {
	t.Helper()
	return startFCGIPoolApp(t, workers, probeApp(t, callable))
}

// startFCGIPoolApp is startFCGIPool for any app; set changes the workers'
// FastCGI settings.
func startFCGIPoolApp(t testing.TB, workers int, app string, set ...func(*FastCGIConfig)) *fcgiPool {
	t.Helper()
	return startFCGIPoolSized(t, Size{workers, workers}, nil, app, set...)
}

// startFCGIPoolSized is startFCGIPoolApp for a pool of any size; pool, if
// not nil, changes the pool's settings.
func startFCGIPoolSized(t testing.TB, size Size, pool func(*PoolConfig), app string, set ...func(*FastCGIConfig)) *fcgiPool {
	t.Helper()
	workers := size.Max
	sock := filepath.Join(t.TempDir(), "w.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	ul := l.(*net.UnixListener)
	f, err := ul.File()
	require.NoError(t, err)
	ul.SetUnlinkOnClose(false)
	l.Close()
	log := &syncBuffer{}
	fc := &FastCGIConfig{Listener: f, Workers: workers}
	for _, s := range set {
		s(fc)
	}
	cfg := PoolConfig{
		Worker:  Config{App: app, Logger: slog.New(slog.NewTextHandler(log, nil)), FastCGI: fc, Stacks: true},
		Workers: size,
	}
	if pool != nil {
		pool(&cfg)
	}
	p, err := NewPool(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
		f.Close()
	})
	return &fcgiPool{sock: sock, log: log, pool: p}
}

// exchange sends b on a fresh connection, closes the connection's writing
// half as a web server done sending would, and returns all the worker
// sent until it closed the connection.
func (p *fcgiPool) exchange(t testing.TB, b []byte) []byte {
	t.Helper()
	return p.send(t, b, true)
}

// request sends b, a request that does not keep its connection, on a
// fresh connection left open as a web server waiting for the response
// does (a worker takes a closed one for a web server gone), and returns
// what the worker sent until it closed it.
func (p *fcgiPool) request(t testing.TB, b []byte) []byte {
	t.Helper()
	return p.send(t, b, false)
}

func (p *fcgiPool) send(t testing.TB, b []byte, closeWrite bool) []byte {
	t.Helper()
	nc, err := net.Dial("unix", p.sock)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	// The worker may close the connection before reading all of b.
	_, _ = nc.Write(b)
	if closeWrite {
		_ = nc.(*net.UnixConn).CloseWrite()
	}
	got, err := io.ReadAll(nc)
	if err != nil && !strings.Contains(err.Error(), "connection reset") {
		require.NoError(t, err, "the worker answers and closes the connection")
	}
	return got
}

func hello(id uint16, keep bool) []byte {
	return tu.FCGIRequest(id, keep, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/hello")
}

// healthy checks that the pool still answers a plain request.
func (p *fcgiPool) healthy(t testing.TB) {
	t.Helper()
	r := reply(t, p.exchange(t, hello(1, false)))
	assert.Equal(t, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello, world!", r.stdout[1], "a 200 has no Status line")
	assert.Equal(t, []end{{1, 0}}, r.ends)
}

// end is an END_REQUEST: the request's id and the protocol status.
type end struct {
	id     uint16
	status byte
}

// parsed is what a worker sent on a connection.
type parsed struct {
	stdout map[uint16]string
	ends   []end
	others []tu.FCGIReply
	// cut says the worker ended a response cut short, with a STDERR
	// record and tu.FCGINotARecord.
	cut bool
}

func reply(t testing.TB, b []byte) parsed {
	t.Helper()
	recs, cut, err := tu.ParseFCGI(b)
	require.NoError(t, err, "the worker sends well-formed records")
	p := parsed{stdout: map[uint16]string{}, cut: cut}
	for _, r := range recs {
		switch r.Type {
		case tu.FCGIStdout:
			p.stdout[r.ID] += string(r.Content)
		case tu.FCGIEndRequest:
			require.Len(t, r.Content, 8)
			p.ends = append(p.ends, end{r.ID, r.Content[4]})
		default:
			p.others = append(p.others, r)
		}
	}
	return p
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestFastCGIWorkerRequests: requests a web server may send, each served
// as FastCGI 1.0 says, with the worker healthy after each.
func TestFastCGIWorkerRequests(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	get := []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/hello"}
	var oneByteParams []byte
	for _, c := range tu.FCGIPairs(get...) {
		oneByteParams = append(oneByteParams, tu.FCGIRecord(tu.FCGIParams, 1, []byte{c})...)
	}
	body := strings.Repeat("0123456789abcdef", 200<<10) // 3.2 MiB: past what waits in memory
	tests := []struct {
		name   string
		in     []byte
		stdout []string // substrings of request 1's STDOUT, in order
		ends   []end
		check  func(t *testing.T, r parsed)
	}{
		{name: "a request", in: hello(1, false), stdout: []string{"Content-Type: text/plain; charset=utf-8\r\n", "Hello, world!"}, ends: []end{{1, 0}}},
		{name: "two requests on a kept connection", in: join(hello(1, true), hello(1, true)),
			stdout: []string{"Hello, world!", "Hello, world!"}, ends: []end{{1, 0}, {1, 0}}},
		{name: "params in one-byte records", in: join(tu.FCGIBegin(1, 1, false), oneByteParams,
			tu.FCGIRecord(tu.FCGIParams, 1, nil), tu.FCGIRecord(tu.FCGIStdin, 1, nil)),
			stdout: []string{"Hello, world!"}, ends: []end{{1, 0}}},
		{name: "a body in many records, past the memory part", in: tu.FCGIRequest(1, false, body,
			"REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/count", "CONTENT_LENGTH", "3276800"),
			stdout: []string{"\r\n\r\n3276800"}, ends: []end{{1, 0}}},
		{name: "a body longer than CONTENT_LENGTH is cut to it", in: tu.FCGIRequest(1, false, "abcdef",
			"REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/echo", "CONTENT_LENGTH", "3"),
			stdout: []string{"\r\n\r\nabc"}, ends: []end{{1, 0}}},
		{name: "GET_VALUES", in: tu.FCGIRecord(tu.FCGIGetValues, 0, tu.FCGIPairs("FCGI_MAX_CONNS", "", "FCGI_MPXS_CONNS", "", "OTHER", "")),
			check: func(t *testing.T, r parsed) {
				require.Len(t, r.others, 1)
				assert.Equal(t, byte(tu.FCGIGetValuesResult), r.others[0].Type)
				assert.Equal(t, tu.FCGIPairs("FCGI_MAX_CONNS", "1", "FCGI_MPXS_CONNS", "0"), r.others[0].Content)
			}},
		{name: "an unknown management record", in: join(tu.FCGIRecord(99, 0, []byte("x")), hello(1, false)),
			stdout: []string{"Hello, world!"}, ends: []end{{1, 0}},
			check: func(t *testing.T, r parsed) {
				require.Len(t, r.others, 1)
				assert.Equal(t, byte(tu.FCGIUnknownType), r.others[0].Type)
				assert.Equal(t, []byte{99, 0, 0, 0, 0, 0, 0, 0}, r.others[0].Content)
			}},
		{name: "an unknown role", in: join(tu.FCGIBegin(1, 2, false), tu.FCGIParamsRecords(1, get...), tu.FCGIRecord(tu.FCGIStdin, 1, nil)),
			ends: []end{{1, 3}}},
		{name: "a second request while one is open", in: join(tu.FCGIBegin(1, 1, false), tu.FCGIParamsRecords(1, get...),
			tu.FCGIBegin(2, 1, false), tu.FCGIRecord(tu.FCGIStdin, 1, nil)),
			stdout: []string{"Hello, world!"}, ends: []end{{2, 1}, {1, 0}}},
		{name: "aborted before the app runs", in: join(tu.FCGIBegin(1, 1, true), tu.FCGIParamsRecords(1, get...),
			tu.FCGIRecord(tu.FCGIAbortRequest, 1, nil), hello(1, false)),
			stdout: []string{"Hello, world!"}, ends: []end{{1, 0}, {1, 0}},
			check: func(t *testing.T, r parsed) {
				assert.Equal(t, 1, strings.Count(r.stdout[1], "Hello"), "the aborted request never ran")
			}},
		{name: "records of requests that are not open are ignored", in: join(tu.FCGIRecord(tu.FCGIStdin, 7, []byte("stray")),
			hello(1, true), tu.FCGIRecord(tu.FCGIStdin, 1, []byte("late")), hello(1, false)),
			stdout: []string{"Hello, world!", "Hello, world!"}, ends: []end{{1, 0}, {1, 0}}},
		{name: "a NUL byte in a variable", in: tu.FCGIRequest(1, false, "", append(get, "HTTP_X", "a\x00b")...),
			stdout: []string{"Status: 400 Bad Request\r\n"}, ends: []end{{1, 0}}},
		{name: "an invalid CONTENT_LENGTH", in: tu.FCGIRequest(1, false, "", append(get, "CONTENT_LENGTH", "-2")...),
			stdout: []string{"Status: 400 Bad Request\r\n"}, ends: []end{{1, 0}}},
		{name: "no REQUEST_METHOD", in: tu.FCGIRequest(1, false, "", "SERVER_PROTOCOL", "HTTP/1.1"),
			stdout: []string{"Status: 500 Internal Server Error\r\n"}, ends: []end{{1, 0}}},
		{name: "an error after the whole body keeps the connection", in: join(tu.FCGIRequest(1, true, "",
			"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "PATH_INFO", "/whole-then-raise"), hello(1, false)),
			stdout: []string{"Content-Length: 5\r\n\r\nwhole", "Hello, world!"}, ends: []end{{1, 0}, {1, 0}},
			check: func(t *testing.T, r parsed) {
				assert.Eventually(t, func() bool { return strings.Contains(p.log.String(), "raised after the whole body") },
					5*time.Second, 10*time.Millisecond, "the error is logged")
			}},
		{name: "an error after the headers ends the response as failed", in: join(tu.FCGIRequest(1, true, "",
			"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "PATH_INFO", "/raise-after"), hello(1, false)),
			stdout: []string{"\r\n\r\npartial "},
			check: func(t *testing.T, r parsed) {
				assert.True(t, r.cut, "a STDERR record and bytes that are not a record, not END_REQUEST")
				require.NotEmpty(t, r.others)
				assert.Contains(t, string(r.others[len(r.others)-1].Content), "the response is cut short: app raised in GET /raise-after")
				assert.NotContains(t, r.stdout[1], "Hello", "the connection closes: the request behind is not served")
			}},
		{name: "HEAD has no body", in: tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "HEAD", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/hello"),
			stdout: []string{"Content-Length: 13\r\n\r\n"}, ends: []end{{1, 0}},
			check: func(t *testing.T, r parsed) { assert.NotContains(t, r.stdout[1], "Hello") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := reply(t, p.exchange(t, tt.in))
			rest := r.stdout[1]
			for _, want := range tt.stdout {
				i := strings.Index(rest, want)
				require.GreaterOrEqual(t, i, 0, "%q not in %q", want, rest)
				rest = rest[i+len(want):]
			}
			if tt.stdout == nil {
				assert.Empty(t, r.stdout)
			}
			assert.Equal(t, tt.ends, r.ends)
			if tt.check != nil {
				tt.check(t, r)
			}
			p.healthy(t)
		})
	}
}

// TestFastCGIWorkerStalledRequests: requests whose web server stops
// halfway (a slow upload streamed by nginx with fastcgi_request_buffering
// off, or a peer that stalls) do not hold the only worker; each is served
// once the rest of it comes.
func TestFastCGIWorkerStalledRequests(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	body := strings.Repeat("upload ", 30000)
	post := tu.FCGIRequest(1, false, body, "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/echo", "CONTENT_LENGTH", strconv.Itoa(len(body)))
	cuts := map[string]int{
		"in BEGIN_REQUEST": 10,
		"in the params":    30,
		"in the body":      len(post) / 2,
		"before the end":   len(post) - 8,
	}
	conns := map[string]net.Conn{}
	for name, cut := range cuts {
		nc, err := net.Dial("unix", p.sock)
		require.NoError(t, err)
		defer nc.Close()
		require.NoError(t, nc.SetDeadline(time.Now().Add(30*time.Second)))
		_, err = nc.Write(post[:cut])
		require.NoError(t, err, name)
		conns[name] = nc
	}
	p.healthy(t)
	for name, nc := range conns {
		_, err := nc.Write(post[cuts[name]:])
		require.NoError(t, err, name)
		got, err := io.ReadAll(nc)
		require.NoError(t, err, name)
		r := reply(t, got)
		assert.True(t, strings.HasSuffix(r.stdout[1], "\r\n\r\n"+body), "%s: the whole body echoed", name)
		assert.Equal(t, []end{{1, 0}}, r.ends, name)
	}
}

// TestFastCGIWorkerMalformed: input that is not FastCGI, or breaks its
// limits, closes the connection unanswered and is logged; the worker
// serves on.
func TestFastCGIWorkerMalformed(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	get := []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/hello"}
	var bigParams []byte
	for i := 0; i < 5; i++ {
		bigParams = append(bigParams, tu.FCGIRecord(tu.FCGIParams, 1, tu.FCGIPairs("HTTP_X", strings.Repeat("x", 60000)))...)
	}
	var manyParams []string
	for i := 0; i < 1001; i++ {
		manyParams = append(manyParams, "HTTP_X"+strings.Repeat("Y", i%50)+string(rune('A'+i%26))+string(rune('A'+i/26)), "1")
	}
	badLength := binary.BigEndian.AppendUint32([]byte{0x80, 0, 0, 0}, 0)
	tests := []struct {
		name string
		in   []byte
		log  string
	}{
		{"version 2", []byte{2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, "not FastCGI (version byte 2)"},
		{"HTTP instead of FastCGI", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not FastCGI"},
		{"a pair longer than its record", join(tu.FCGIBegin(1, 1, false), tu.FCGIRecord(tu.FCGIParams, 1, []byte{5, 1, 'a'}),
			tu.FCGIRecord(tu.FCGIParams, 1, nil)), "malformed params"},
		{"a 4-byte length running out", join(tu.FCGIBegin(1, 1, false), tu.FCGIRecord(tu.FCGIParams, 1, badLength[:3]),
			tu.FCGIRecord(tu.FCGIParams, 1, nil)), "malformed params"},
		{"params over 256 KiB", join(tu.FCGIBegin(1, 1, false), bigParams), "params over 262144 bytes"},
		{"more than 1000 params", tu.FCGIRequest(1, false, "", append(get, manyParams...)...), "more than 1000 params"},
		{"STDOUT from the web server", join(tu.FCGIBegin(1, 1, false), tu.FCGIRecord(tu.FCGIStdout, 1, []byte("x"))),
			"record type 6 before the params ended"},
		{"a record type inside the body", join(tu.FCGIBegin(1, 1, false), tu.FCGIParamsRecords(1, append(get, "CONTENT_LENGTH", "5")...),
			tu.FCGIRecord(tu.FCGIParams, 1, []byte("x"))), "record type 4 inside the request body"},
		{"a short BEGIN_REQUEST", tu.FCGIRecord(tu.FCGIBeginRequest, 1, []byte{0, 1}), "a BEGIN_REQUEST of 2 bytes, not 8"},
		{"a long BEGIN_REQUEST", join(tu.FCGIRecord(tu.FCGIBeginRequest, 1, append([]byte{0, 1, 0}, make([]byte, 13)...)),
			tu.FCGIParamsRecords(1, get...), tu.FCGIRecord(tu.FCGIStdin, 1, nil)), "a BEGIN_REQUEST of 16 bytes, not 8"},
		{"a BEGIN_REQUEST with request id 0", join(tu.FCGIBegin(0, 1, false), tu.FCGIParamsRecords(0, get...),
			tu.FCGIRecord(tu.FCGIStdin, 0, nil)), "a BEGIN_REQUEST with request id 0"},
		{"a record cut short", join(tu.FCGIBegin(1, 1, false), []byte{1, 4, 0, 1, 0, 100, 0, 0}, []byte("only ten b")),
			"the web server closed the connection"},
		{"malformed GET_VALUES", tu.FCGIRecord(tu.FCGIGetValues, 0, []byte{9, 0, 'a'}), "malformed params"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := reply(t, p.exchange(t, tt.in))
			assert.Empty(t, r.ends)
			assert.Empty(t, r.stdout)
			assert.Eventually(t, func() bool { return strings.Contains(p.log.String(), tt.log) }, 5*time.Second, 10*time.Millisecond,
				"log %q in %s", tt.log, p.log.String())
			p.healthy(t)
		})
	}
}

// FuzzFastCGIWorker sends arbitrary bytes to a FastCGI worker: whatever
// comes, it answers with well-formed records or closes the connection,
// and serves the next web server connection.
func FuzzFastCGIWorker(f *testing.F) {
	get := []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/hello"}
	f.Add(hello(1, false))
	f.Add(join(hello(1, true), hello(2, false)))
	f.Add(tu.FCGIRequest(1, false, "abc", "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/echo", "CONTENT_LENGTH", "3"))
	f.Add(tu.FCGIRequest(1, false, "abc", "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/echo", "HTTP_TRANSFER_ENCODING", "chunked"))
	f.Add(tu.FCGIRecord(tu.FCGIGetValues, 0, tu.FCGIPairs("FCGI_MAX_CONNS", "")))
	f.Add(join(tu.FCGIBegin(1, 1, true), tu.FCGIParamsRecords(1, get...), tu.FCGIRecord(tu.FCGIAbortRequest, 1, nil)))
	f.Add(join(tu.FCGIBegin(1, 1, false), tu.FCGIParamsRecords(1, get...), tu.FCGIBegin(2, 1, false), tu.FCGIRecord(tu.FCGIStdin, 1, nil)))
	for _, file := range captured(f) {
		stream, err := os.ReadFile(file)
		require.NoError(f, err)
		f.Add(stream)
	}
	p := startFCGIPool(f, 1, "application")
	f.Fuzz(func(t *testing.T, in []byte) {
		reply(t, p.exchange(t, in))
		p.healthy(t)
	})
}

// captured returns the files of testdata/fastcgi: what nginx sent for
// one request each.
func captured(t testing.TB) []string {
	files, err := filepath.Glob("../testdata/fastcgi/*.fcgi")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

// TestFastCGIWorkerCapturedTraffic replays what nginx sent
// (testdata/fastcgi) and checks the environ and body the app gets.
func TestFastCGIWorkerCapturedTraffic(t *testing.T) {
	p := startFCGIPool(t, 1, "environ_and_body")
	tests := []struct {
		file    string
		environ []string // name=value pairs that must be there
		body    int      // -1: CONTENT_LENGTH's
	}{
		{"nginx-get.fcgi", []string{"REQUEST_METHOD=GET", "PATH_INFO=/blog/caf\xc3\xa9", "QUERY_STRING=q=1", "HTTP_COOKIE=a=b"}, 0},
		{"nginx-post.fcgi", []string{"REQUEST_METHOD=POST", "PATH_INFO=/upload"}, -1},
		{"nginx-chunked-keepconn.fcgi", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=12", "HTTP_TRANSFER_ENCODING=chunked"}, 12},
	}
	require.Len(t, captured(t), len(tests))
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join("../testdata/fastcgi", tt.file))
			require.NoError(t, err)
			r := reply(t, p.exchange(t, stream))
			require.Equal(t, []end{{1, 0}}, r.ends)
			_, out, ok := strings.Cut(r.stdout[1], "\r\n\r\n")
			require.True(t, ok, r.stdout[1])
			for _, kv := range tt.environ {
				assert.Contains(t, "\n"+out, "\n"+kv+"\n")
			}
			assert.NotContains(t, out, "HTTP_PROXY=", "httpoxy: the Proxy header never reaches the app")
			_, body, _ := strings.Cut(out, "\nbody=")
			if tt.body < 0 {
				_, cl, _ := strings.Cut("\n"+out, "\nCONTENT_LENGTH=")
				cl, _, _ = strings.Cut(cl, "\n")
				n, err := strconv.Atoi(cl)
				require.NoError(t, err)
				assert.Greater(t, n, 1000)
				tt.body = n
			}
			assert.Len(t, body, tt.body)
		})
	}
}

// TestFastCGIWorkerStartsLight: serving FastCGI, the worker imports no
// module the app does not (the socket module alone, through enum,
// selectors and collections, is a MiB in every worker).
func TestFastCGIWorkerStartsLight(t *testing.T) {
	p := startFCGIPoolApp(t, 1, lightApp(t))
	r := reply(t, p.exchange(t, hello(1, false)))
	require.Equal(t, []end{{1, 0}}, r.ends)
	_, out, _ := strings.Cut(r.stdout[1], "\r\n\r\n")
	assertLight(t, strings.Split(out, "\n"), "socket", "enum", "selectors", "collections", "traceback", "importlib.util")
}

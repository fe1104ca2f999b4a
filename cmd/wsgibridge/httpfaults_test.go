package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exchange sends raw bytes on a new connection to addr (closing its
// sending side after them when halfClose) and returns the responses that
// came back before the server closed the connection; open says that it
// was still open after the last one.
func exchange(t *testing.T, addr, raw string, halfClose bool) (resps []string, open bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(c, raw)
	require.NoError(t, err, "sending the request")
	if halfClose {
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
	}
	br := bufio.NewReader(c)
	for {
		// A short wait tells an open connection from one that goes on.
		if len(resps) > 0 {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			return resps, timedOut
		}
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resps = append(resps, fmt.Sprintf("%d %s", resp.StatusCode, body))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	}
}

// plainGets checks that n plain requests, each on its own connection,
// all succeed.
func plainGets(t *testing.T, addr string, n int) {
	t.Helper()
	failed := 0
	for range n {
		resps, _ := exchange(t, addr, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false)
		if len(resps) != 1 || resps[0] != "200 Hello, world!" {
			failed++
			t.Logf("a plain GET got %q", resps)
		}
	}
	assert.Zero(t, failed, "plain GETs that failed of %d", n)
}

// An aborted upload (Content-Length 100, 40 bytes sent, then the client
// closes) harms no other request: the worker stays in step with the
// bridge, nothing gets 502, and no worker is replaced.
func TestHTTPAbortedUpload(t *testing.T) {
	for _, workers := range []string{"1", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			d := startDaemon(t, "http", "--bind", addr, "--workers", workers, "--chdir", appsDir(t), "probe:application")
			plainGets(t, addr, 2)
			pids := d.workerPids(t)
			for range 10 {
				c, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				_, err = io.WriteString(c, "POST /read-all HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("x", 40))
				require.NoError(t, err)
				require.NoError(t, c.Close())
			}
			plainGets(t, addr, 40)
			assert.ElementsMatch(t, pids, d.workerPids(t), "no worker was replaced")
			log := d.log.String()
			assert.NotContains(t, log, "status=502")
			assert.NotContains(t, log, "ProtocolError")
			assert.Contains(t, log, `why="the client sent 40 of its CONTENT_LENGTH 100 bytes and went away"`)
		})
	}
}

// A chunked body that is malformed, or cut short, never reaches the app
// as a whole one: its read raises (BodyError, an OSError), which makes a
// 400 unless the app catches it; one line logs what was wrong.
func TestHTTPMalformedChunkedBody(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startDaemon(t, "http", "--bind", addr, "--workers", "2", "--chdir", appsDir(t), "probe:application")
	pids := d.workerPids(t)
	tests := []struct {
		name, body string
		halfClose  bool
		why        string
	}{
		{"a chunk size that is not a number", "5\r\nhello\r\n6_0\r\n world\r\n0\r\n\r\n", false, "after 5 bytes: invalid byte in chunk length"},
		{"a negative chunk size", "5\r\nhello\r\n-5\r\nworld\r\n0\r\n\r\n", false, "after 5 bytes: invalid byte in chunk length"},
		{"a chunk size with a sign", "+5\r\nhello\r\n0\r\n\r\n", false, "after 0 bytes: invalid byte in chunk length"},
		{"a bare LF after chunk data", "5\r\nhello\n0\r\n\r\n", false, "after 5 bytes: malformed chunked encoding"},
		{"no last chunk", "5\r\nhello\r\n", true, "the client sent 5 bytes of a chunked body and went away before its last chunk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, app := range []struct{ path, want string }{
				{"/read-all", "400 Bad Request\n"},
				{"/read-or-error", "200 raised BodyError after 0: "},
			} {
				before := len(d.log.String())
				resps, _ := exchange(t, addr, "POST "+app.path+" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.body, tt.halfClose)
				if tt.halfClose && len(resps) == 0 {
					// net/http takes the end of the stream for a client
					// that left: the request may end as a 499, with no
					// response, before the app's read raises.
					assert.Contains(t, waitLog(t, d, before, "status=499"), "status=499")
				} else {
					require.Len(t, resps, 1, app.path)
					assert.True(t, strings.HasPrefix(resps[0], app.want), "%s got %q", app.path, resps[0])
				}
				logged := waitLog(t, d, before, "request body broke off")
				assert.Equal(t, 1, strings.Count(logged, "request body broke off"), logged)
				assert.Contains(t, logged, tt.why)
			}
			plainGets(t, addr, 3)
		})
	}
	assert.ElementsMatch(t, pids, d.workerPids(t), "no worker was replaced")
}

// waitLog waits until the daemon's log after offset from holds want, and
// returns that part of the log.
func waitLog(t *testing.T, d *daemon, from int, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		logged := d.log.String()[from:]
		if strings.Contains(logged, want) || time.Now().After(deadline) {
			return logged
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Framing that RFC 9112 asks a server to treat as an error is refused and
// closes the connection, so nothing pipelined behind it is served; a
// fragment never reaches the app; an absolute-form target must be a valid
// http URI.
func TestHTTPFraming(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, "http", "--bind", addr, "--workers", "2", "--chdir", appsDir(t), "probe:application")
	const next = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
	tests := []struct {
		name, raw string
		want      []string // the responses, each a prefix
		open      bool
	}{
		{"Content-Length and Transfer-Encoding",
			"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
			[]string{"400 "}, false},
		{"Transfer-Encoding and Content-Length",
			"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
			[]string{"400 "}, false},
		{"Transfer-Encoding in HTTP/1.0",
			"POST /count HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			[]string{"400 "}, false},
		{"Transfer-Encoding in HTTP/1.0 kept alive",
			"POST /count HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Replace(next, "HTTP/1.1", "HTTP/1.0", 1),
			[]string{"400 "}, false},
		{"a chunked body is served, then the connection closes",
			"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + next,
			[]string{"200 5"}, false},
		{"bodies with a length stay in step when pipelined",
			"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloPOST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + next,
			[]string{"200 5", "200 3", "200 Hello, world!"}, true},
		{"a fragment", "GET /environ?page=1#posts-17408 HTTP/1.1\r\nHost: t\r\n\r\n", []string{"200 "}, true},
		{"an invalid authority", "PUT s://]ufd/: HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n" + next, []string{"400 "}, false},
		{"an authority with a bad port", "GET http://example.org:8x/hello HTTP/1.1\r\nHost: t\r\n\r\n", []string{"400 "}, false},
		{"a scheme that is not http", "GET ftp://example.org/hello HTTP/1.1\r\nHost: t\r\n\r\n", []string{"400 "}, false},
		{"a valid absolute form", "GET http://example.org/hello HTTP/1.1\r\nHost: t\r\n\r\n", []string{"200 Hello, world!"}, true},
		{"a valid IPv6 authority", "GET http://[::1]:8080/hello HTTP/1.1\r\nHost: t\r\n\r\n", []string{"200 Hello, world!"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resps, open := exchange(t, addr, tt.raw, false)
			require.Len(t, resps, len(tt.want), "%q", resps)
			for i, want := range tt.want {
				assert.True(t, strings.HasPrefix(resps[i], want), "response %d: %q", i, resps[i])
			}
			assert.Equal(t, tt.open, open, "whether the connection stayed open")
		})
	}
	resps, _ := exchange(t, addr, "GET /environ?page=1#posts-17408 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false)
	require.Len(t, resps, 1)
	assert.Contains(t, resps[0], "\nQUERY_STRING=page=1\n")
	assert.Contains(t, resps[0], "\nREQUEST_URI=/environ?page=1\n")
	assert.NotContains(t, resps[0], "posts-17408")
	resps, _ = exchange(t, addr, "GET /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false)
	require.Len(t, resps, 1)
	assert.Contains(t, resps[0], "\nREQUEST_URI=/environ\n")
	plainGets(t, addr, 3)
}

// The request line and the header fields have gunicorn's limits, and
// flags that change them.
func TestHTTPLimits(t *testing.T) {
	fields := func(n, size int) string {
		var b strings.Builder
		for i := range n {
			line := fmt.Sprintf("X-F%d: ", i)
			b.WriteString(line + strings.Repeat("v", size-len(line)) + "\r\n")
		}
		return b.String()
	}
	get := func(uriLen int, extra string) string {
		uri := "/hello?" + strings.Repeat("q", uriLen-len("/hello?"))
		return "GET " + uri + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + "\r\n"
	}
	// "GET " and " HTTP/1.1" take 13 bytes of the line.
	tests := []struct {
		name  string
		flags []string
		raw   string
		want  string
	}{
		{"a request line at the limit", nil, get(4094-13, ""), "200 "},
		{"a request line over it", nil, get(4095-13, ""), "414 "},
		{"fields at the limit", nil, get(20, fields(98, 20)), "200 "}, // with Host and Connection: 100
		{"a field over the limit", nil, get(20, fields(99, 20)), "431 "},
		{"a field at its size", nil, get(20, fields(1, 8190)), "200 "},
		{"a field over its size", nil, get(20, fields(1, 8191)), "431 "},
		{"a line limit of 100", []string{"--limit-request-line", "100"}, get(101-13, ""), "414 "},
		{"no line limit", []string{"--limit-request-line", "0"}, get(20000, ""), "200 "},
		{"no field limits", []string{"--limit-request-fields", "0", "--limit-request-field-size", "0"}, get(20, fields(300, 3000)), "200 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			args := append([]string{"http", "--bind", addr, "--workers", "1", "--access-log", "--chdir", appsDir(t)}, tt.flags...)
			d := startDaemon(t, append(args, "probe:application")...)
			resps, _ := exchange(t, addr, tt.raw, false)
			require.Len(t, resps, 1)
			assert.True(t, strings.HasPrefix(resps[0], tt.want), "got %.60q", resps[0])
			const served = "msg=request method=GET uri=/hello?"
			if tt.want == "200 " {
				assert.Contains(t, waitLog(t, d, 0, served), served)
			} else {
				logged := waitLog(t, d, 0, "request refused")
				assert.Contains(t, logged, "request refused")
				assert.NotContains(t, logged, served, "the app never saw it")
			}
			plainGets(t, addr, 2)
		})
	}
}

// TestNginxProxyFlask: nginx closes its connection to the http mode as
// soon as it has the Content-Length it was promised, which for Flask (a
// body flushed as the app yields it) is while the app is still in its
// iterable's close(). Those requests were served, not left: each is
// logged as a 200, and no app is stopped.
func TestNginxProxyFlask(t *testing.T) {
	python := needPythonModules(t, "flask")
	sock := filepath.Join(t.TempDir(), "http.sock")
	d := startDaemon(t, "http", "--bind", "unix:"+sock, "--workers", "2", "--access-log",
		"--chdir", appsDir(t), "--python", python, "flaskapp:app")
	n := startNginxConf(t, "proxy.conf", map[string]string{"HTTP": "unix:" + sock + ":"})
	const requests = 200
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range requests / 4 {
				code, body := get(t, n.base1+"/")
				assert.Equal(t, 200, code)
				assert.Equal(t, "Hello from Flask", body)
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		return strings.Count(d.log.String(), "msg=request method=GET uri=/ status=200") == requests
	}, 10*time.Second, 10*time.Millisecond, "every request logged as served:\n%s", d.log.String())
	assert.NotContains(t, d.log.String(), "status=499")
}

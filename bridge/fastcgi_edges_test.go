package bridge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// These tests hold the FastCGI workers to the edges of FastCGI 1.0 that a
// web server (or a peer that is not one) can reach: an abort while the
// app streams, a body whole before its STDIN ends, a header that stalls.

// endRequest is an END_REQUEST record's header for request id 1.
var endRequest = []byte{1, 3, 0, 1, 0, 8}

// conversation is a raw FastCGI connection to a pool's socket.
type conversation struct {
	t   *testing.T
	nc  net.Conn
	got []byte
}

func dial(t *testing.T, sock string) *conversation {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &conversation{t: t, nc: nc}
}

func (c *conversation) send(b []byte) {
	c.t.Helper()
	_, err := c.nc.Write(b)
	require.NoError(c.t, err)
}

// until reads until what came holds want n times, or within fails.
func (c *conversation) until(want []byte, n int, within time.Duration) {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(within)))
	buf := make([]byte, 4096)
	for bytes.Count(c.got, want) < n {
		k, err := c.nc.Read(buf)
		require.NoError(c.t, err, "waiting for %q; got %q", want, c.got)
		c.got = append(c.got, buf[:k]...)
	}
}

// TestFastCGIAbortWhileStreaming: FCGI_ABORT_REQUEST stops an app that
// streams (the signal may land while the worker writes a chunk), its
// clean-up runs, the request ends with one END_REQUEST well within 3 s,
// and the worker serves the next request on the same connection.
func TestFastCGIAbortWhileStreaming(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	for _, tc := range []struct{ path, cleanUp string }{
		{"/drip", "probe: close() called"},
		{"/drip-write", "probe: write loop ended"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := strings.Count(p.log.String(), tc.cleanUp)
			c := dial(t, p.sock)
			c.send(tu.FCGIRequest(1, true, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1",
				"SCRIPT_NAME", tc.path, "QUERY_STRING", "30"))
			c.until([]byte("drip\n"), 3, 10*time.Second)
			c.send(tu.FCGIRecord(tu.FCGIAbortRequest, 1, nil))
			c.until(endRequest, 1, 3*time.Second)
			c.send(hello(1, true))
			c.until(endRequest, 2, 10*time.Second)
			_, second, _ := bytes.Cut(c.got, endRequest)
			assert.Contains(t, string(second), "Hello, world!", "the next request on the connection is served")
			assert.Equal(t, 2, bytes.Count(c.got, endRequest), "one END_REQUEST each")
			assert.Eventually(t, func() bool { return strings.Count(p.log.String(), tc.cleanUp) > before },
				5*time.Second, 10*time.Millisecond, "the app was stopped and cleaned up")
		})
	}
}

// TestFastCGIBodyWholeBeforeItsEnd: once CONTENT_LENGTH bytes have come,
// the app runs without waiting for the empty STDIN record; a read past
// them returns at once, and what the web server sends after is drained,
// not given to the app; the connection then serves on, or closes only
// after the web server is done sending (closing with data unread would
// reset it).
func TestFastCGIBodyWholeBeforeItsEnd(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	for _, keep := range []bool{true, false} {
		t.Run(map[bool]string{true: "kept", false: "not kept"}[keep], func(t *testing.T) {
			c := dial(t, p.sock)
			c.send(tu.FCGIBegin(1, 1, keep))
			c.send(tu.FCGIParamsRecords(1, "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1",
				"SCRIPT_NAME", "/read-all", "CONTENT_LENGTH", "5"))
			c.send(tu.FCGIRecord(tu.FCGIStdin, 1, []byte("hello")))
			c.until(endRequest, 1, 10*time.Second)
			r := reply(t, c.got)
			assert.True(t, strings.HasSuffix(r.stdout[1], "\r\n\r\n5 0"), "the body whole, then its end at once: %q", r.stdout[1])
			c.send(join(tu.FCGIRecord(tu.FCGIStdin, 1, []byte("beyond")), tu.FCGIRecord(tu.FCGIStdin, 1, nil)))
			if keep {
				c.send(hello(1, true))
				c.until(endRequest, 2, 10*time.Second)
				assert.Contains(t, reply(t, c.got).stdout[1], "Hello, world!")
				return
			}
			require.NoError(t, c.nc.SetReadDeadline(time.Now().Add(10*time.Second)))
			rest, err := io.ReadAll(c.nc)
			assert.NoError(t, err, "closed, not reset")
			assert.Empty(t, rest, "nothing more for a request answered")
		})
	}
}

// TestFastCGIInputTerminated: wsgi.input_terminated is set on every
// FastCGI request (the input ends with STDIN), and on every request the
// bridge sends over the frames (it ends with E).
func TestFastCGIInputTerminated(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	r := reply(t, p.exchange(t, tu.FCGIRequest(1, false, "abc", "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/input-terminated", "CONTENT_LENGTH", "3")))
	assert.True(t, strings.HasSuffix(r.stdout[1], "\r\n\r\nTrue"), r.stdout[1])

	w, err := Start(Config{App: probeApp(t, "application")})
	require.NoError(t, err)
	defer w.Close(time.Second)
	rec := &recorder{}
	env := append(env("/input-terminated"), Var{"CONTENT_LENGTH", "3"})
	_, err = w.Serve(context.Background(), &Request{Env: env, Body: strings.NewReader("abc")}, rec)
	require.NoError(t, err)
	assert.Equal(t, "True", rec.body.String())
}

// TestFastCGIStalledHeader: a connection whose request's header stops
// halfway is closed after the header timeout, and logged; one whose body
// pauses longer than that is not (a slow upload may).
func TestFastCGIStalledHeader(t *testing.T) {
	p := startFCGIPoolApp(t, 1, probeApp(t, "application"), func(fc *FastCGIConfig) { fc.HeaderTimeout = time.Second })
	sock, log := p.sock, p.log

	stalled := dial(t, sock)
	stalled.send(tu.FCGIBegin(1, 1, false)[:3])
	upload := dial(t, sock)
	upload.send(tu.FCGIBegin(1, 1, false))
	upload.send(tu.FCGIParamsRecords(1, "REQUEST_METHOD", "POST", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/count", "CONTENT_LENGTH", "4"))
	upload.send(tu.FCGIRecord(tu.FCGIStdin, 1, []byte("ab")))

	start := time.Now()
	require.NoError(t, stalled.nc.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err := stalled.nc.Read(make([]byte, 1))
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "closed: %v", err)
	assert.Less(t, time.Since(start), 10*time.Second, "by the header timeout, not the minute a body may pause")
	assert.Eventually(t, func() bool {
		return strings.Contains(log.String(), "left a request's header unfinished for 1s")
	}, 5*time.Second, 10*time.Millisecond, log.String())

	time.Sleep(time.Second) // the upload pauses past the header timeout
	upload.send(join(tu.FCGIRecord(tu.FCGIStdin, 1, []byte("cd")), tu.FCGIRecord(tu.FCGIStdin, 1, nil)))
	upload.until(endRequest, 1, 10*time.Second)
	assert.True(t, strings.HasSuffix(reply(t, upload.got).stdout[1], "\r\n\r\n4"), "the slow upload is served")
}

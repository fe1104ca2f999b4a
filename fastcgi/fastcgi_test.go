package fastcgi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
	"github.com/yookoala/gofast"
)

func TestRecordEncoding(t *testing.T) {
	tests := []struct {
		name    string
		typ     uint8
		id      uint16
		content []byte
		want    []byte
	}{
		{"empty", typeStdout, 1, nil, []byte{1, 6, 0, 1, 0, 0, 0, 0}},
		{"padded", typeStdout, 0x0102, []byte("abc"), []byte{1, 6, 1, 2, 0, 3, 5, 0, 'a', 'b', 'c', 0, 0, 0, 0, 0}},
		{"exact", typeStdin, 7, []byte("12345678"), []byte{1, 5, 0, 7, 0, 8, 0, 0, '1', '2', '3', '4', '5', '6', '7', '8'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendRecord(nil, tt.typ, tt.id, tt.content)
			assert.Equal(t, tt.want, got)
			rr := newRecordReader(bytes.NewReader(got))
			h, content, err := rr.next()
			require.NoError(t, err)
			assert.Equal(t, tt.typ, h.typ)
			assert.Equal(t, tt.id, h.id)
			assert.Equal(t, string(tt.content), string(content))
		})
	}
}

func TestRecordReaderErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		err  string
	}{
		{"bad version", []byte{0, 6, 0, 1, 0, 0, 0, 0}, "unsupported protocol version 0"},
		{"truncated body", []byte{1, 6, 0, 1, 0, 10, 0, 0, 'a'}, "unexpected EOF"},
		{"truncated padding", []byte{1, 6, 0, 1, 0, 1, 255, 0, 'a'}, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := newRecordReader(bytes.NewReader(tt.in)).next()
			assert.ErrorContains(t, err, tt.err)
		})
	}
}

func TestAppendStreamSplits(t *testing.T) {
	content := bytes.Repeat([]byte("x"), 2*maxContent+5)
	b := appendStream(nil, typeStdout, 1, content)
	rr := newRecordReader(bytes.NewReader(b))
	var sizes []int
	var got []byte
	for {
		_, c, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		sizes = append(sizes, len(c))
		got = append(got, c...)
	}
	assert.Equal(t, []int{maxContent, maxContent, 5}, sizes)
	assert.Equal(t, content, got)
}

func TestPairs(t *testing.T) {
	long := strings.Repeat("v", 200)
	tests := []struct {
		name, value string
		want        []byte
	}{
		{"A", "b", []byte{1, 1, 'A', 'b'}},
		{"E", "", []byte{1, 0, 'E'}},
		{"L", long, append([]byte{1, 0x80, 0, 0, 200, 'L'}, long...)},
	}
	for _, tt := range tests {
		got := appendPair(nil, tt.name, tt.value)
		assert.Equal(t, tt.want, got)
		var n, v string
		require.NoError(t, decodePairs(got, func(name, value []byte) error {
			n, v = string(name), string(value)
			return nil
		}))
		assert.Equal(t, tt.name, n)
		assert.Equal(t, tt.value, v)
	}
}

func TestPairsMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"truncated name length", []byte{0x80, 0}},
		{"truncated value length", []byte{1}},
		{"name longer than data", []byte{5, 0, 'a'}},
		{"huge lengths", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'a'}},
		{"sum over data", []byte{0x80, 0, 0, 2, 0x80, 0, 0, 2, 'a', 'b', 'c'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodePairs(tt.in, func(_, _ []byte) error { return nil })
			assert.ErrorIs(t, err, errPairs)
		})
	}
}

// Builders of a web server's side of the conversation.

func beginRecord(id uint16, role uint16, flags byte) []byte {
	body := make([]byte, 8)
	binary.BigEndian.PutUint16(body, role)
	body[2] = flags
	return appendRecord(nil, typeBeginRequest, id, body)
}

func paramsRecords(id uint16, kv ...string) []byte {
	var p []byte
	for i := 0; i+1 < len(kv); i += 2 {
		p = appendPair(p, kv[i], kv[i+1])
	}
	return append(appendStream(nil, typeParams, id, p), appendRecord(nil, typeParams, id, nil)...)
}

func stdinRecords(id uint16, body string) []byte {
	return append(appendStream(nil, typeStdin, id, []byte(body)), appendRecord(nil, typeStdin, id, nil)...)
}

// fullRequest is BEGIN, PARAMS and STDIN of one request.
func fullRequest(id uint16, flags byte, body string, kv ...string) []byte {
	b := beginRecord(id, roleResponder, flags)
	b = append(b, paramsRecords(id, kv...)...)
	return append(b, stdinRecords(id, body)...)
}

// echoHandler answers with the params it got and the body, so tests can
// see both; a param WAIT names a channel in gates to wait on first.
type echoHandler struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
	calls int
}

func (h *echoHandler) ServeFastCGI(ctx context.Context, w *ResponseWriter, r *Request) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	var out strings.Builder
	for _, p := range r.Params {
		if p.Name == "WAIT" {
			h.mu.Lock()
			gate := h.gates[p.Value]
			h.mu.Unlock()
			select {
			case <-gate:
			case <-ctx.Done():
				return
			}
		}
		fmt.Fprintf(&out, "%s=%s\n", p.Name, p.Value)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fmt.Fprintf(&out, "body error: %v\n", err)
	}
	fmt.Fprintf(w, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n%sbody=%s", out.String(), body)
}

type testServer struct {
	srv  *Server
	addr string
	log  *lockedWriter
	done chan error
}

func startServer(t *testing.T, h Handler, configure func(*Server)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ts := &testServer{addr: l.Addr().String(), log: &lockedWriter{}, done: make(chan error, 1)}
	ts.srv = &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(ts.log, nil))}
	if configure != nil {
		configure(ts.srv)
	}
	go func() { ts.done <- ts.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, ts.srv.Shutdown(ctx))
		assert.ErrorIs(t, <-ts.done, ErrServerClosed)
	})
	return ts
}

// lockedWriter keeps the server's log lines for the test to read.
type lockedWriter = testutil.SyncBuffer

// client is the web server's end of one connection.
type client struct {
	t  *testing.T
	nc net.Conn
	rr *recordReader
}

func (ts *testServer) dial(t *testing.T) *client {
	nc, err := net.Dial("tcp", ts.addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	return &client{t: t, nc: nc, rr: newRecordReader(nc)}
}

func (c *client) send(b []byte) {
	_, err := c.nc.Write(b)
	require.NoError(c.t, err)
}

type reply struct {
	stdout      map[uint16]string
	ends        map[uint16][]byte // END_REQUEST bodies
	afterEnd    []string          // records for an id after its END_REQUEST
	types       []uint8
	closed      bool
	unknownType []byte
	values      map[string]string
}

// read reads records until want END_REQUESTs came, or the connection
// closed.
func (c *client) read(want int) reply {
	r := reply{stdout: map[uint16]string{}, ends: map[uint16][]byte{}, values: map[string]string{}}
	for len(r.ends) < want {
		h, content, err := c.rr.next()
		if err != nil {
			r.closed = true
			return r
		}
		r.types = append(r.types, h.typ)
		if _, ended := r.ends[h.id]; ended && h.id != 0 {
			r.afterEnd = append(r.afterEnd, fmt.Sprintf("type %d for id %d", h.typ, h.id))
		}
		switch h.typ {
		case typeStdout:
			r.stdout[h.id] += string(content)
		case typeEndRequest:
			r.ends[h.id] = append([]byte(nil), content...)
		case typeUnknownType:
			r.unknownType = append([]byte(nil), content...)
			return r
		case typeGetValuesResult:
			require.NoError(c.t, decodePairs(content, func(n, v []byte) error {
				r.values[string(n)] = string(v)
				return nil
			}))
			return r
		}
	}
	return r
}

// isClosed waits for the server to close the connection.
func (c *client) isClosed() bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Read(make([]byte, 1))
	return errors.Is(err, io.EOF)
}

func protocolStatus(end []byte) uint8 { return end[4] }

// healthy checks that a new connection is served: the server survived.
func (ts *testServer) healthy(t *testing.T) {
	t.Helper()
	c := ts.dial(t)
	c.send(fullRequest(1, 0, "ok", "REQUEST_METHOD", "GET"))
	r := c.read(1)
	assert.Contains(t, r.stdout[1], "body=ok")
	assert.Equal(t, []byte{0, 0, 0, 0, statusRequestComplete, 0, 0, 0}, r.ends[1])
}

func TestServeRequest(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	c := ts.dial(t)
	c.send(fullRequest(1, flagKeepConn, "hello body", "REQUEST_METHOD", "POST", "X", strings.Repeat("v", 300)))
	r := c.read(1)
	assert.Equal(t, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nREQUEST_METHOD=POST\nX="+strings.Repeat("v", 300)+"\nbody=hello body", r.stdout[1])
	assert.Equal(t, statusRequestComplete, protocolStatus(r.ends[1]))
	// The stream ends with an empty STDOUT, then END_REQUEST.
	assert.Equal(t, []uint8{typeStdout, typeStdout, typeEndRequest}, r.types)

	// Kept: the same id again on the same connection.
	c.send(fullRequest(1, flagKeepConn, "again", "REQUEST_METHOD", "GET"))
	r = c.read(1)
	assert.Contains(t, r.stdout[1], "body=again")
}

func TestCloseWithoutKeepConn(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	c := ts.dial(t)
	c.send(fullRequest(1, 0, "", "REQUEST_METHOD", "GET"))
	r := c.read(1)
	assert.Contains(t, r.stdout[1], "REQUEST_METHOD=GET")
	assert.True(t, c.isClosed(), "the connection closes after END_REQUEST without FCGI_KEEP_CONN")
}

// TestParamsStraddleRecords splits the params stream at every byte, so
// lengths and names straddle record boundaries (catalog A13).
func TestParamsStraddleRecords(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	var p []byte
	p = appendPair(p, "REQUEST_METHOD", "GET")
	p = appendPair(p, "LONG_NAME_"+strings.Repeat("N", 130), strings.Repeat("v", 140))
	c := ts.dial(t)
	c.send(beginRecord(1, roleResponder, 0))
	for i := range p {
		c.send(appendRecord(nil, typeParams, 1, p[i:i+1]))
	}
	c.send(appendRecord(nil, typeParams, 1, nil))
	c.send(stdinRecords(1, ""))
	r := c.read(1)
	assert.Contains(t, r.stdout[1], "LONG_NAME_"+strings.Repeat("N", 130)+"="+strings.Repeat("v", 140))
}

// TestMultiplexedSlowRequest runs two requests on one connection: the
// first waits (and leaves a body larger than the in-memory buffer unread)
// until the second has been answered.
func TestMultiplexedSlowRequest(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"slow": make(chan struct{})}}
	ts := startServer(t, h, func(s *Server) { s.StdinMemory = 1024 })
	c := ts.dial(t)
	big := strings.Repeat("0123456789", 20000)
	c.send(beginRecord(1, roleResponder, flagKeepConn))
	c.send(paramsRecords(1, "WAIT", "slow"))
	c.send(stdinRecords(1, big))
	c.send(fullRequest(2, flagKeepConn, "fast", "REQUEST_METHOD", "GET"))
	r := c.read(1)
	require.Contains(t, r.ends, uint16(2), "the second request is answered while the first waits")
	assert.Contains(t, r.stdout[2], "body=fast")
	close(h.gates["slow"])
	r = c.read(1)
	assert.Contains(t, r.stdout[1], "body="+big)
	assert.Empty(t, r.afterEnd)
}

// TestBodiesBeyondMemoryTotal: bodies waiting together beyond
// StdinMemoryTotal arrive intact (the rest waits on disk), and the memory
// they held is given back when their requests end.
func TestBodiesBeyondMemoryTotal(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"hold": make(chan struct{})}}
	const total = 100_000
	ts := startServer(t, h, func(s *Server) { s.StdinMemoryTotal = total })
	big := strings.Repeat("0123456789", 20000)
	var clients []*client
	for i := 0; i < 3; i++ {
		c := ts.dial(t)
		c.send(fullRequest(1, 0, big, "WAIT", "hold"))
		clients = append(clients, c)
	}
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.calls == 3
	}, 5*time.Second, 10*time.Millisecond)
	free := ts.srv.budget.Free()
	assert.Less(t, free, int64(total), "the waiting bodies hold memory")
	assert.GreaterOrEqual(t, free, int64(0))
	close(h.gates["hold"])
	for _, c := range clients {
		r := c.read(1)
		assert.Contains(t, r.stdout[1], "body="+big)
	}
	assert.Eventually(t, func() bool { return ts.srv.budget.Free() == total }, 5*time.Second, 10*time.Millisecond,
		"the memory the bodies held is given back")
}

func TestGetValues(t *testing.T) {
	ts := startServer(t, &echoHandler{}, func(s *Server) { s.MaxConns = 7; s.MaxRequests = 9 })
	c := ts.dial(t)
	var q []byte
	for _, n := range []string{"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS", "OTHER"} {
		q = appendPair(q, n, "")
	}
	c.send(appendRecord(nil, typeGetValues, 0, q))
	r := c.read(1)
	assert.Equal(t, map[string]string{"FCGI_MAX_CONNS": "7", "FCGI_MAX_REQS": "9", "FCGI_MPXS_CONNS": "1"}, r.values)
}

func TestUnknownTypes(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	c := ts.dial(t)
	c.send(appendRecord(nil, 42, 0, nil))
	r := c.read(1)
	assert.Equal(t, []byte{42, 0, 0, 0, 0, 0, 0, 0}, r.unknownType)
	c.send(appendRecord(nil, 99, 3, []byte("x")))
	r = c.read(1)
	assert.Equal(t, byte(99), r.unknownType[0])
	c.send(fullRequest(1, 0, "after", "REQUEST_METHOD", "GET"))
	assert.Contains(t, c.read(1).stdout[1], "body=after")
}

func TestUnknownRole(t *testing.T) {
	h := &echoHandler{}
	ts := startServer(t, h, nil)
	c := ts.dial(t)
	c.send(beginRecord(1, 2, flagKeepConn)) // authorizer
	r := c.read(1)
	assert.Equal(t, statusUnknownRole, protocolStatus(r.ends[1]))
	c.send(fullRequest(1, 0, "", "REQUEST_METHOD", "GET"))
	assert.Contains(t, c.read(1).stdout[1], "REQUEST_METHOD=GET")
	assert.Equal(t, 1, h.calls)
}

func TestAbortRequest(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"never": make(chan struct{})}}
	ts := startServer(t, h, nil)
	c := ts.dial(t)
	c.send(beginRecord(1, roleResponder, flagKeepConn))
	c.send(paramsRecords(1, "WAIT", "never"))
	c.send(appendRecord(nil, typeStdin, 1, []byte("abc")))
	c.send(appendRecord(nil, typeAbortRequest, 1, nil))
	r := c.read(1)
	assert.Equal(t, statusRequestComplete, protocolStatus(r.ends[1]))

	// Aborted while its params were still coming.
	c.send(beginRecord(2, roleResponder, flagKeepConn))
	c.send(appendRecord(nil, typeAbortRequest, 2, nil))
	r2 := c.read(1)
	assert.Contains(t, r2.ends, uint16(2))

	// Nothing more for the aborted ids, and the connection serves on.
	c.send(fullRequest(1, 0, "next", "REQUEST_METHOD", "GET"))
	r = c.read(1)
	assert.Empty(t, r.afterEnd)
	assert.Contains(t, r.stdout[1], "body=next")
	assert.Equal(t, []uint8{typeStdout, typeStdout, typeEndRequest}, r.types, "exactly one END_REQUEST per request")
}

func TestOverloaded(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"hold": make(chan struct{})}}
	ts := startServer(t, h, func(s *Server) { s.MaxRequests = 1 })
	c := ts.dial(t)
	c.send(beginRecord(1, roleResponder, flagKeepConn))
	c.send(paramsRecords(1, "WAIT", "hold"))
	c.send(beginRecord(2, roleResponder, flagKeepConn))
	r := c.read(1)
	assert.Equal(t, statusOverloaded, protocolStatus(r.ends[2]))
	close(h.gates["hold"])
	c.send(stdinRecords(1, ""))
	assert.Contains(t, c.read(1).ends, uint16(1))
	ts.healthy(t)
}

// TestMalformedInput sends each kind of bad input on its own connection:
// that connection closes, and the server keeps serving.
func TestMalformedInput(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		log  string
	}{
		{"bad version", []byte{2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, "unsupported protocol version 2"},
		{"short BEGIN_REQUEST", appendRecord(nil, typeBeginRequest, 1, []byte{0, 1}), "BEGIN_REQUEST body of 2 bytes"},
		{"BEGIN_REQUEST twice", append(beginRecord(1, roleResponder, 0), beginRecord(1, roleResponder, 0)...), "which is in progress"},
		{"STDIN before params end", append(beginRecord(1, roleResponder, 0), appendRecord(nil, typeStdin, 1, []byte("x"))...), "STDIN before the end of params"},
		{"bad pairs", append(beginRecord(1, roleResponder, 0), append(appendRecord(nil, typeParams, 1, []byte{0x80, 0, 0, 9, 1, 'a'}), appendRecord(nil, typeParams, 1, nil)...)...), "malformed name-value pairs"},
		{"params too large", append(beginRecord(1, roleResponder, 0), appendStream(nil, typeParams, 1, make([]byte, 300<<10))...), "exceed 262144 bytes"},
		{"too many params", append(beginRecord(1, roleResponder, 0), paramsRecords(1, strings.Split(strings.Repeat("a,b,", 1001), ",")...)...), "more than 1000 params"},
		{"PARAMS after params end", append(append(beginRecord(1, roleResponder, 0), paramsRecords(1, "A", "b")...), appendRecord(nil, typeParams, 1, []byte{1, 1, 'a', 'b'})...), "PARAMS after the end of params"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &echoHandler{}, nil)
			c := ts.dial(t)
			c.send(tt.in)
			assert.True(t, c.isClosed())
			ts.healthy(t)
			assert.Eventually(t, func() bool { return strings.Contains(ts.logString(), tt.log) }, 5*time.Second, 10*time.Millisecond, ts.logString())
			assert.Eventually(t, func() bool { return ts.srv.Active() == 0 }, 5*time.Second, time.Millisecond, "no request left counted")
		})
	}
}

func (ts *testServer) logString() string {
	return ts.log.String()
}

func TestDeadlines(t *testing.T) {
	tests := []struct {
		name  string
		send  []byte
		phase string
	}{
		{"silent", nil, "first record"},
		{"params never end", append(beginRecord(1, roleResponder, 0), appendRecord(nil, typeParams, 1, appendPair(nil, "A", "b"))...), "params"},
		{"stdin never ends", append(append(beginRecord(1, roleResponder, 0), paramsRecords(1, "A", "b")...), appendRecord(nil, typeStdin, 1, []byte("x"))...), "stdin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &echoHandler{}, func(s *Server) {
				s.FirstByteTimeout, s.ParamsTimeout, s.StdinTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
			})
			c := ts.dial(t)
			c.send(tt.send)
			assert.True(t, c.isClosed())
			assert.Eventually(t, func() bool {
				return strings.Contains(ts.logString(), "waiting_for="+strings.ReplaceAll(tt.phase, " ", "")) || strings.Contains(ts.logString(), `waiting_for="`+tt.phase+`"`)
			}, 5*time.Second, 10*time.Millisecond, ts.logString())
			assert.Eventually(t, func() bool { return ts.srv.Active() == 0 }, 5*time.Second, 10*time.Millisecond)
		})
	}
}

func TestIdleKeptConnectionCloses(t *testing.T) {
	ts := startServer(t, &echoHandler{}, func(s *Server) { s.IdleTimeout = 200 * time.Millisecond })
	c := ts.dial(t)
	c.send(fullRequest(1, flagKeepConn, "", "REQUEST_METHOD", "GET"))
	c.read(1)
	assert.True(t, c.isClosed())
}

func TestShutdownDrains(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"hold": make(chan struct{})}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &Server{Handler: h, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	nc, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	defer nc.Close()
	c := &client{t: t, nc: nc, rr: newRecordReader(nc)}
	c.send(fullRequest(1, flagKeepConn, "in flight", "WAIT", "hold"))
	require.Eventually(t, func() bool { return srv.Active() == 1 }, 5*time.Second, time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	assert.ErrorIs(t, <-served, ErrServerClosed)
	_, err = net.DialTimeout("tcp", l.Addr().String(), time.Second)
	assert.Error(t, err, "no new connections during shutdown")
	close(h.gates["hold"])
	r := c.read(1)
	assert.Contains(t, r.stdout[1], "body=in flight", "the request in flight finishes")
	require.NoError(t, <-shut)
	assert.True(t, c.isClosed())
}

// TestGofastClient uses gofast, a Go FastCGI client, against the server.
func TestGofastClient(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	for _, body := range []string{"", "small", strings.Repeat("big body ", 30000)} {
		cl, err := gofast.SimpleClientFactory(gofast.SimpleConnFactory("tcp", ts.addr))()
		require.NoError(t, err)
		req := &gofast.Request{
			Role:   gofast.RoleResponder,
			Params: map[string]string{"REQUEST_METHOD": "POST", "CONTENT_LENGTH": fmt.Sprint(len(body))},
			Stdin:  io.NopCloser(strings.NewReader(body)),
		}
		resp, err := cl.Do(req)
		require.NoError(t, err)
		rec := httptest.NewRecorder()
		var stderr bytes.Buffer
		require.NoError(t, resp.WriteTo(rec, &stderr))
		assert.Equal(t, 200, rec.Code)
		assert.Contains(t, rec.Body.String(), "REQUEST_METHOD=POST\n")
		assert.True(t, strings.HasSuffix(rec.Body.String(), "body="+body))
		assert.Empty(t, stderr.String())
		cl.Close()
	}
}

// TestOutputWaitsForStdin: a handler that answers before reading the body
// gets its output held until the body has ended, as nginx stops sending a
// body once the response has begun.
func TestOutputWaitsForStdin(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, w *ResponseWriter, r *Request) {
		fmt.Fprint(w, "Status: 200 OK\r\n\r\n")
		_, _ = w.Write(bytes.Repeat([]byte("x"), 100<<10)) // over 64 KiB: a flush
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "|read %d", len(b))
	})
	ts := startServer(t, h, nil)
	c := ts.dial(t)
	c.send(beginRecord(1, roleResponder, 0))
	c.send(paramsRecords(1, "REQUEST_METHOD", "POST"))
	c.send(appendRecord(nil, typeStdin, 1, []byte("first part ")))
	require.NoError(t, c.nc.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err := c.nc.Read(make([]byte, 1))
	var ne net.Error
	require.ErrorAs(t, err, &ne, "no output before the body ends")
	require.True(t, ne.Timeout())
	require.NoError(t, c.nc.SetReadDeadline(time.Now().Add(20*time.Second)))
	c.send(stdinRecords(1, "second part"))
	r := c.read(1)
	assert.True(t, strings.HasSuffix(r.stdout[1], "|read 22"), r.stdout[1][len(r.stdout[1])-20:])
}

// TestCapturedTraffic replays what nginx sent (testdata/*.fcgi) and checks
// the params and body the handler gets.
func TestCapturedTraffic(t *testing.T) {
	tests := []struct {
		file   string
		params []string // name=value pairs that must be there
		body   int
	}{
		{"nginx-get.fcgi", []string{"REQUEST_METHOD=GET", "DOCUMENT_URI=/blog/caf\xc3\xa9", "QUERY_STRING=q=1", "HTTP_PROXY=http://evil", "HTTP_COOKIE=a=b"}, 0},
		{"nginx-post.fcgi", []string{"REQUEST_METHOD=POST", "SCRIPT_NAME=/upload"}, -1},
		{"nginx-chunked-keepconn.fcgi", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=12", "HTTP_TRANSFER_ENCODING=chunked"}, 12},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join("testdata", tt.file))
			require.NoError(t, err)
			ts := startServer(t, &echoHandler{}, nil)
			c := ts.dial(t)
			c.send(stream)
			r := c.read(1)
			require.Contains(t, r.ends, uint16(1))
			for _, p := range tt.params {
				assert.Contains(t, r.stdout[1], "\n"+p+"\n")
			}
			var length int
			for _, line := range strings.Split(r.stdout[1], "\n") {
				if v, ok := strings.CutPrefix(line, "CONTENT_LENGTH="); ok {
					length, _ = strconv.Atoi(v)
				}
			}
			_, body, _ := strings.Cut(r.stdout[1], "\nbody=")
			if tt.body >= 0 {
				assert.Len(t, body, tt.body)
			} else {
				assert.Len(t, body, length)
				assert.Greater(t, length, 1000)
			}
		})
	}
}

// TestStdinAfterItsEnd: STDIN for a request whose body has ended is
// dropped, never added after the EOF the handler saw.
func TestStdinAfterItsEnd(t *testing.T) {
	ts := startServer(t, &echoHandler{}, nil)
	c := ts.dial(t)
	stream := fullRequest(1, flagKeepConn, "body", "REQUEST_METHOD", "POST")
	stream = append(stream, appendRecord(nil, typeStdin, 1, []byte("smuggled"))...)
	c.send(stream)
	r := c.read(1)
	assert.True(t, strings.HasSuffix(r.stdout[1], "body=body"), r.stdout[1])
	c.send(fullRequest(1, 0, "next", "REQUEST_METHOD", "GET"))
	assert.Contains(t, c.read(1).stdout[1], "body=next")
}

// TestSlowRequestDoesNotBlockItsConnection: while a request whose whole
// input has come runs long, a later request on the same connection is
// answered, and an abort of the slow one is seen.
func TestSlowRequestDoesNotBlockItsConnection(t *testing.T) {
	h := &echoHandler{gates: map[string]chan struct{}{"slow": make(chan struct{}), "never": make(chan struct{})}}
	ts := startServer(t, h, nil)
	c := ts.dial(t)
	c.send(fullRequest(1, flagKeepConn, "", "WAIT", "slow"))
	time.Sleep(50 * time.Millisecond) // request 1 is running, alone
	c.send(fullRequest(2, flagKeepConn, "second", "REQUEST_METHOD", "GET"))
	r := c.read(1)
	require.Contains(t, r.ends, uint16(2), "request 2 is answered while request 1 runs")
	assert.Contains(t, r.stdout[2], "body=second")
	close(h.gates["slow"])
	assert.Contains(t, c.read(1).ends, uint16(1))

	c.send(fullRequest(3, flagKeepConn, "", "WAIT", "never"))
	time.Sleep(50 * time.Millisecond)
	c.send(appendRecord(nil, typeAbortRequest, 3, nil))
	r = c.read(1)
	assert.Contains(t, r.ends, uint16(3), "the abort of the running request is seen")
	c.send(fullRequest(1, 0, "after", "REQUEST_METHOD", "GET"))
	assert.Contains(t, c.read(1).stdout[1], "body=after")
}

// TestClosedConnectionCancelsRequest: a connection closed while its
// request runs cancels the request.
func TestClosedConnectionCancelsRequest(t *testing.T) {
	canceled := make(chan error, 1)
	ts := startServer(t, HandlerFunc(func(ctx context.Context, w *ResponseWriter, r *Request) {
		<-ctx.Done()
		canceled <- context.Cause(ctx)
	}), nil)
	c := ts.dial(t)
	c.send(fullRequest(1, flagKeepConn, "", "REQUEST_METHOD", "GET"))
	time.Sleep(50 * time.Millisecond)
	c.nc.Close()
	select {
	case err := <-canceled:
		assert.ErrorIs(t, err, ErrConnClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not canceled when its connection closed")
	}
}

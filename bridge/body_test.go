package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A body that breaks off (the client goes away, or sends a malformed
// chunked body) never reaches the app as a whole one: a read that gets to
// the break raises BodyError, an OSError, which unhandled makes a 400; one
// log line says what broke; and the worker serves on.
func TestBrokenBody(t *testing.T) {
	short := func() io.Reader { return strings.NewReader("only 14 bytes.") }
	malformed := func() io.Reader {
		return io.MultiReader(strings.NewReader("hello"), iotest.ErrReader(errors.New("invalid byte in chunk length")))
	}
	gone := func() io.Reader {
		return io.MultiReader(strings.NewReader("hello"), iotest.ErrReader(io.ErrUnexpectedEOF))
	}
	length := []string{"REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100"}
	chunked := []string{"REQUEST_METHOD", "POST", "HTTP_TRANSFER_ENCODING", "chunked"}
	why14 := "the body ended after 14 of its CONTENT_LENGTH 100 bytes"
	whyMalformed := "reading the body failed after 5 bytes: invalid byte in chunk length"
	whyGone := "the client sent 5 bytes of a chunked body and went away before its last chunk"
	tests := []struct {
		name   string
		path   string
		vars   []string
		body   func() io.Reader
		status int
		answer string // the body, or a part of it
		why    string // "": the app answers before the break
		// wsgiref.validate refuses read() without a size, which the
		// bare app uses.
		bareOnly bool
	}{
		{"short read()", "/read-all", length, short, 400, "Bad Request", why14, true},
		{"short read(n)", "/count", length, short, 400, "Bad Request", why14, false},
		{"short readline", "/readlines", length, short, 400, "Bad Request", why14, false},
		{"short caught", "/read-or-error", length, short, 200, "raised BodyError after 0: " + why14, why14, false},
		{"malformed read()", "/read-all", chunked, malformed, 400, "Bad Request", whyMalformed, true},
		{"malformed caught", "/read-or-error", chunked, malformed, 200, "raised BodyError after 0: " + whyMalformed, whyMalformed, false},
		{"gone chunked", "/count", chunked, gone, 400, "Bad Request", whyGone, false},
		{"not read", "/hello", chunked, malformed, 200, "Hello, world!", "", false},
	}
	bothApps(t, func(t *testing.T, h *harness) {
		pid := h.w.Pid()
		for _, tt := range tests {
			if tt.bareOnly && strings.HasSuffix(t.Name(), "validated") {
				continue
			}
			t.Run(tt.name, func(t *testing.T) {
				before := len(h.log.String())
				rec, res, err := h.serve(&Request{Env: env(tt.path, tt.vars...), Body: tt.body()})
				require.NoError(t, err)
				assert.Equal(t, tt.status, res.Status)
				assert.False(t, res.AppError, "a broken body is the client's fault, not the app's")
				assert.Contains(t, rec.body.String(), tt.answer)
				logged := h.log.String()[before:]
				if tt.why == "" {
					// The app answered before the break, perhaps before it was read.
					assert.LessOrEqual(t, strings.Count(logged, "request body broke off"), 1, logged)
				} else {
					assert.Equal(t, 1, strings.Count(logged, "request body broke off"), logged)
					assert.Contains(t, logged, tt.why)
				}
				assert.NotContains(t, logged, "Traceback")

				rec, _, err = h.get("/hello")
				require.NoError(t, err)
				assert.Equal(t, "Hello, world!", rec.body.String())
				assert.Equal(t, pid, h.w.Pid(), "the worker serves on")
			})
		}
	})
}

// pieces gives data in reads of the sizes sizes cycles through, then err.
type pieces struct {
	data  []byte
	sizes []byte
	i     int
	err   error
}

func (p *pieces) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, p.err
	}
	n := min(len(b), len(p.data), int(p.sizes[p.i%len(p.sizes)])+1)
	p.i++
	copy(b, p.data[:n])
	p.data = p.data[n:]
	return n, nil
}

// FuzzBody sends a body to a worker that breaks off at cut (when cut is
// within it), with or without a CONTENT_LENGTH, in pieces of arbitrary
// sizes, and has the app read it in arbitrary sizes (0: by lines): the
// app gets the whole body or a read that raises, never a cut body as a
// whole one; and the worker serves the next request.
func FuzzBody(f *testing.F) {
	f.Add([]byte("hello, world"), uint32(100), false, uint32(4096), []byte{7})
	f.Add([]byte("hello, world"), uint32(5), false, uint32(4096), []byte{0, 3})
	f.Add([]byte("line one\nline two\n"), uint32(9), true, uint32(0), []byte{2})
	f.Add([]byte("line one\nline two"), uint32(17), true, uint32(0), []byte{255})
	f.Add(bytes.Repeat([]byte("0123456789abcdef"), 5000), uint32(70000), true, uint32(65536), []byte{255, 13})
	f.Add(bytes.Repeat([]byte("x"), 70000), uint32(65536), false, uint32(1), []byte{200})
	h := newHarness(f, probeApp(f, "application"))
	pid := h.w.Pid()
	// Not h.serve: f's helpers are not for the fuzz function.
	serve := func(req *Request) (*recorder, Result, error) {
		rec := &recorder{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := h.w.Serve(ctx, req, rec)
		return rec, res, err
	}
	f.Fuzz(func(t *testing.T, body []byte, cut uint32, chunked bool, readSize uint32, sizes []byte) {
		if len(sizes) == 0 {
			sizes = []byte{255}
		}
		whole := int(cut) >= len(body)
		src := &pieces{data: body, sizes: sizes, err: io.EOF}
		vars := []string{"REQUEST_METHOD", "POST", "QUERY_STRING", strconv.Itoa(int(readSize))}
		if chunked {
			vars = append(vars, "HTTP_TRANSFER_ENCODING", "chunked")
		} else {
			vars = append(vars, "CONTENT_LENGTH", strconv.Itoa(len(body)))
		}
		if !whole {
			src.data, src.err = body[:cut], io.ErrUnexpectedEOF
			if chunked {
				src.err = errors.New("malformed chunked encoding")
			}
		}
		rec, _, err := serve(&Request{Env: env("/digest", vars...), Body: src})
		require.NoError(t, err)
		if whole {
			sum := sha256.Sum256(body)
			assert.Equal(t, fmt.Sprintf("whole %d %x", len(body), sum), rec.body.String())
		} else {
			var got int
			_, err := fmt.Sscanf(rec.body.String(), "raised BodyError after %d", &got)
			require.NoError(t, err, "a cut body: %q", rec.body.String())
			assert.LessOrEqual(t, got, int(cut), "the app read no more than came")
		}
		rec, _, err = serve(&Request{Env: env("/hello")})
		require.NoError(t, err)
		require.Equal(t, "Hello, world!", rec.body.String())
		require.Equal(t, pid, h.w.Pid(), "the worker serves on")
	})
}

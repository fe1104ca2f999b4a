package cgi

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		body    bool
		toEOF   bool
		wantErr error
	}{
		{"get", []string{"REQUEST_METHOD=GET"}, false, false, nil},
		{"post with length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=5"}, true, false, nil},
		{"zero length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=000"}, false, false, nil},
		{"chunked", []string{"REQUEST_METHOD=POST", "HTTP_TRANSFER_ENCODING=chunked"}, true, true, nil},
		{"chunked with length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=3", "HTTP_TRANSFER_ENCODING=chunked"}, true, false, nil},
		{"no method", []string{"PATH=/bin"}, false, false, ErrNotCGI},
		{"empty method", []string{"REQUEST_METHOD="}, false, false, ErrNotCGI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ReadRequest(tt.env, strings.NewReader("hello"), t.TempDir())
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.env, r.Env)
			assert.Equal(t, tt.toEOF, r.BodyToEOF)
			assert.Equal(t, tt.body, r.Body != nil)
			if r.Body != nil {
				b, err := io.ReadAll(r.Body)
				require.NoError(t, err)
				assert.Equal(t, "hello", string(b))
				require.NoError(t, r.Body.Close())
			}
		})
	}
}

func TestChildEnv(t *testing.T) {
	in := []string{
		"PATH=/usr/bin", "HOME=/var/www", "LANG=C.UTF-8", "LC_ALL=C", "TZ=UTC", "PYTHONPATH=/srv/lib",
		"REQUEST_METHOD=GET", "HTTP_PROXY=http://evil", "HTTP_HOST=x", "QUERY_STRING=a=1",
		"REMOTE_ADDR=1.2.3.4", "SCRIPT_FILENAME=/x", "DOCUMENT_ROOT=/srv", "CONTENT_LENGTH=3",
		"HTTPS=on", "SERVER_SOFTWARE=Apache", "UNIQUE_ID=abc",
	}
	assert.Equal(t, []string{"PATH=/usr/bin", "HOME=/var/www", "LANG=C.UTF-8", "LC_ALL=C", "TZ=UTC", "PYTHONPATH=/srv/lib"}, ChildEnv(in))
}

func TestResponseWriter(t *testing.T) {
	var out bytes.Buffer
	w := NewResponseWriter(&out)
	require.NoError(t, w.WriteHeader(200, []byte("Status: 200 OK\r\n\r\n")))
	_, err := w.Write([]byte("body"))
	require.NoError(t, err)
	assert.Empty(t, out.String(), "nothing goes out before Flush: header and body leave together")
	require.NoError(t, w.Flush())
	assert.Equal(t, "Status: 200 OK\r\n\r\nbody", out.String())
}

// gatedReader hands out its data only while open is not closed.
type gatedReader struct {
	data io.Reader
	open chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.open
	return g.data.Read(p)
}

func TestSpoolKeepsReadingWhileNobodyReads(t *testing.T) {
	data := make([]byte, 5<<20+7)
	for i := range data {
		data[i] = byte(i * 31)
	}
	// The source must be drained although the reader has not started:
	// that is what unblocks Apache.
	src := bytes.NewReader(data)
	s := NewSpool(src, 64<<10, t.TempDir())
	defer s.Close()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err == io.EOF
	}, 10*time.Second, time.Millisecond, "the source was not read to its end")
	s.mu.Lock()
	assert.NotNil(t, s.file, "over the memory limit the spool uses a file")
	assert.LessOrEqual(t, len(s.mem), 64<<10)
	s.mu.Unlock()
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(s, 100)))
	require.NoError(t, err)
	rest, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(data), sha256.Sum256(append(got, rest...)))
}

func TestSpoolWaitsForData(t *testing.T) {
	g := &gatedReader{data: strings.NewReader("late"), open: make(chan struct{})}
	s := NewSpool(g, 1024, t.TempDir())
	defer s.Close()
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(s)
		got <- string(b)
	}()
	select {
	case <-got:
		t.Fatal("Read returned before the source had anything")
	case <-time.After(50 * time.Millisecond):
	}
	close(g.open)
	assert.Equal(t, "late", <-got)
}

func TestSpoolPassesErrors(t *testing.T) {
	boom := errors.New("client went away")
	s := NewSpool(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), 1024, t.TempDir())
	b, err := io.ReadAll(s)
	assert.Equal(t, "abc", string(b))
	assert.ErrorIs(t, err, boom)
	require.NoError(t, s.Close())
	_, err = s.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrClosed)
}

func TestSpoolFileError(t *testing.T) {
	s := NewSpool(strings.NewReader(strings.Repeat("x", 100)), 10, "/nonexistent-dir")
	_, err := io.ReadAll(s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cgi: spool request body")
}

package cgi

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		body    bool
		wantErr error
	}{
		{"get", []string{"REQUEST_METHOD=GET"}, false, nil},
		{"post with length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=5"}, true, nil},
		{"zero length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=000"}, false, nil},
		{"chunked", []string{"REQUEST_METHOD=POST", "HTTP_TRANSFER_ENCODING=chunked"}, true, nil},
		{"chunked with length", []string{"REQUEST_METHOD=POST", "CONTENT_LENGTH=3", "HTTP_TRANSFER_ENCODING=chunked"}, true, nil},
		{"no method", []string{"PATH=/bin"}, false, ErrNotCGI},
		{"empty method", []string{"REQUEST_METHOD="}, false, ErrNotCGI},
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
	require.NoError(t, w.WriteHeader(200, []byte("Content-Type: text/plain\r\n\r\n")))
	_, err := w.Write([]byte("body"))
	require.NoError(t, err)
	assert.Empty(t, out.String(), "nothing goes out before Flush: header and body leave together")
	require.NoError(t, w.Flush())
	assert.Equal(t, "Content-Type: text/plain\r\n\r\nbody", out.String())
}

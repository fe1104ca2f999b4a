package gateway

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/bridge"
)

// TestHTTPEnv: an HTTP request becomes the CGI environ a web server would
// give (RFC 3875): the request line, the host split into name and port,
// the body's framing, and each header as HTTP_*, repeated ones joined.
func TestHTTPEnv(t *testing.T) {
	tests := []struct {
		name    string
		request string
		want    map[string]string
		absent  []string
	}{
		{
			name:    "a GET",
			request: "GET /a/b%20c?x=1&y HTTP/1.1\r\nHost: example.org:8080\r\nUser-Agent: t\r\n\r\n",
			want: map[string]string{"REQUEST_METHOD": "GET", "REQUEST_URI": "/a/b%20c?x=1&y", "SERVER_PROTOCOL": "HTTP/1.1",
				"SERVER_NAME": "example.org", "SERVER_PORT": "8080", "SCRIPT_NAME": "", "PATH_INFO": "/a/b c",
				"QUERY_STRING": "x=1&y", "HTTP_HOST": "example.org:8080", "HTTP_USER_AGENT": "t", "GATEWAY_INTERFACE": "CGI/1.1"},
			absent: []string{"CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_TRANSFER_ENCODING"},
		},
		{
			name:    "a host without a port",
			request: "GET / HTTP/1.0\r\nHost: example.org\r\n\r\n",
			want:    map[string]string{"SERVER_NAME": "example.org", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.0"},
		},
		{
			name:    "a body with a length",
			request: "POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
			want:    map[string]string{"CONTENT_LENGTH": "5", "CONTENT_TYPE": "text/plain"},
			absent:  []string{"HTTP_TRANSFER_ENCODING"},
		},
		{
			name:    "an empty body with a length",
			request: "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			want:    map[string]string{"CONTENT_LENGTH": "0"},
		},
		{
			name:    "a chunked body",
			request: "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			want:    map[string]string{"HTTP_TRANSFER_ENCODING": "chunked"},
			absent:  []string{"CONTENT_LENGTH"},
		},
		{
			name:    "a header with an underscore is not the app's",
			request: "GET / HTTP/1.1\r\nHost: h\r\nX-Real-User: alice\r\nX_Real_User: mallory\r\n\r\n",
			want:    map[string]string{"HTTP_X_REAL_USER": "alice"},
		},
		{
			name:    "repeated headers",
			request: "GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\nCookie: c=1\r\nCookie: d=2\r\n\r\n",
			want:    map[string]string{"HTTP_ACCEPT": "a, b", "HTTP_COOKIE": "c=1; d=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tt.request)))
			require.NoError(t, err)
			got := map[string]string{}
			for _, v := range httpEnv(r) {
				assert.NotContains(t, got, v.Name, "each name once")
				got[v.Name] = v.Value
			}
			for name, value := range tt.want {
				assert.Equal(t, value, got[name], name)
			}
			for _, name := range tt.absent {
				assert.NotContains(t, got, name)
			}
		})
	}
}

// TestHTTPWriter: a worker's CGI header block becomes the response's
// status and headers, a repeated header kept repeated.
func TestHTTPWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &httpWriter{w: rec}
	assert.NoError(t, w.WriteHeader(201, []byte("Status: 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n")))
	_, err := w.Write([]byte("body"))
	assert.NoError(t, err)
	assert.Equal(t, 201, rec.Code)
	assert.Equal(t, "text/plain", rec.Header().Get("Content-Type"))
	assert.Equal(t, []string{"a=1", "b=2"}, rec.Header().Values("Set-Cookie"))
	assert.Empty(t, rec.Header().Values("Status"))
	assert.Equal(t, "body", rec.Body.String())

	// A 200 comes without a Status line.
	rec = httptest.NewRecorder()
	w = &httpWriter{w: rec}
	assert.NoError(t, w.WriteHeader(200, []byte("Content-Type: text/plain\r\nX-A: 1\r\n\r\n")))
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "text/plain", rec.Header().Get("Content-Type"))
	assert.Equal(t, "1", rec.Header().Get("X-A"))
}

var _ bridge.ResponseWriter = (*httpWriter)(nil)

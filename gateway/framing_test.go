package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scan feeds stream to a scanner in pieces of size bytes.
func scan(stream string, size int) *scanner {
	s := newScanner(1 << 20)
	for len(stream) > 0 {
		n := min(size, len(stream))
		s.feed([]byte(stream[:n]))
		stream = stream[n:]
	}
	return s
}

func TestScanner(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []head
		lost   bool
	}{
		{
			name:   "one request",
			stream: "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
			want:   []head{{line: "GET / HTTP/1.1", fields: 2, longest: len("Accept: */*")}},
		},
		{
			name:   "bodies with a length are passed over",
			stream: "POST /a HTTP/1.1\r\nContent-Length: 20\r\n\r\nGET /x HTTP/1.1\r\n\r\nZGET /b HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
			want: []head{
				{line: "POST /a HTTP/1.1", fields: 1, longest: len("Content-Length: 20"), contentLength: true},
				{line: "GET /b HTTP/1.1", fields: 1, longest: len("Content-Length: 0"), contentLength: true},
				{line: "GET /c HTTP/1.1"},
			},
		},
		{
			name:   "bare line feeds, as net/http takes them",
			stream: "GET /a HTTP/1.1\nHost: h\n\nGET /b HTTP/1.1\n\n",
			want:   []head{{line: "GET /a HTTP/1.1", fields: 1, longest: 7}, {line: "GET /b HTTP/1.1"}},
		},
		{
			name:   "a continued line belongs to its field",
			stream: "GET / HTTP/1.1\r\nX-A: 1\r\n  continued here\r\n\r\n",
			want:   []head{{line: "GET / HTTP/1.1", fields: 1, longest: len("  continued here")}},
		},
		{
			name:   "framing headers in any case",
			stream: "POST / HTTP/1.1\r\ncontent-LENGTH: 1\r\ntransfer-encoding: chunked\r\n\r\n",
			want:   []head{{line: "POST / HTTP/1.1", fields: 2, longest: len("transfer-encoding: chunked"), contentLength: true, transferEncoding: true}},
			lost:   true,
		},
		{
			name:   "a chunked body is not followed",
			stream: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
			want:   []head{{line: "POST / HTTP/1.1", fields: 1, longest: len("Transfer-Encoding: chunked"), transferEncoding: true}},
			lost:   true,
		},
		{
			name:   "differing lengths",
			stream: "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxxGET / HTTP/1.1\r\n\r\n",
			want:   []head{{line: "POST / HTTP/1.1", fields: 2, longest: len("Content-Length: 1"), contentLength: true}},
			lost:   true,
		},
		{
			name:   "the same length twice",
			stream: "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length:  2 \r\n\r\nxxGET / HTTP/1.1\r\n\r\n",
			want: []head{
				{line: "POST / HTTP/1.1", fields: 2, longest: len("Content-Length:  2 "), contentLength: true},
				{line: "GET / HTTP/1.1"},
			},
		},
		{
			name:   "a length with a sign",
			stream: "POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nxxGET / HTTP/1.1\r\n\r\n",
			want:   []head{{line: "POST / HTTP/1.1", fields: 1, longest: len("Content-Length: +2"), contentLength: true}},
			lost:   true,
		},
		{
			name:   "an empty line first",
			stream: "\r\nGET / HTTP/1.1\r\n\r\n",
			lost:   true,
		},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 3, 7, 1 << 20} {
			s := scan(tt.stream, size)
			assert.Equal(t, tt.want, s.complete, "%s, in pieces of %d", tt.name, size)
			assert.Equal(t, tt.lost, s.state == scanLost, "%s, in pieces of %d: lost", tt.name, size)
		}
	}
}

func TestScannerLongLine(t *testing.T) {
	s := newScanner(100)
	s.feed([]byte("GET /" + strings.Repeat("a", 90)))
	assert.Equal(t, scanHead, s.state)
	s.feed([]byte(strings.Repeat("a", 10)))
	assert.Equal(t, scanLost, s.state)
	assert.Nil(t, s.cur, "what a lost scan held is let go")
}

func TestIsLine(t *testing.T) {
	r := &http.Request{Method: "GET", RequestURI: "/a b", Proto: "HTTP/1.1"}
	assert.True(t, isLine("GET /a b HTTP/1.1", r))
	for _, line := range []string{"GET /a b HTTP/1.0", "GET /a  HTTP/1.1", "POST /a b HTTP/1.1", "GET /a b HTTP/1.1 ", ""} {
		assert.False(t, isLine(line, r), line)
	}
}

func TestCheck(t *testing.T) {
	req := func(line string) *http.Request {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(line + "\r\nHost: h\r\n\r\n")))
		require.NoError(t, err, line)
		return r
	}
	lim := Limits{RequestLine: 30, RequestFields: 3, RequestFieldSize: 20}
	tests := []struct {
		name   string
		line   string
		h      *head
		status int
	}{
		{"plain", "GET / HTTP/1.1", &head{line: "GET / HTTP/1.1", fields: 3, longest: 20}, 0},
		{"not scanned", "GET / HTTP/1.1", nil, 0},
		{"both lengths", "POST / HTTP/1.1", &head{contentLength: true, transferEncoding: true}, 400},
		{"TE in 1.0", "POST / HTTP/1.0", &head{transferEncoding: true}, 400},
		{"TE in 1.1", "POST / HTTP/1.1", &head{transferEncoding: true}, 0},
		{"a long line", "GET / HTTP/1.1", &head{line: strings.Repeat("x", 31)}, 414},
		{"many fields", "GET / HTTP/1.1", &head{fields: 4}, 431},
		{"a long field", "GET / HTTP/1.1", &head{longest: 21}, 431},
		{"absolute", "GET http://example.org:80/x HTTP/1.1", nil, 0},
		{"absolute https", "GET HTTPS://example.org/x HTTP/1.1", nil, 0},
		{"absolute, another scheme", "GET ftp://example.org/x HTTP/1.1", nil, 400},
		{"absolute, a bad authority", "PUT s://]ufd/: HTTP/1.1", nil, 400},
		{"absolute, a bad host", "GET http://exa<mple.org/x HTTP/1.1", nil, 400},
	}
	for _, tt := range tests {
		status, why := check(req(tt.line), tt.h, lim)
		assert.Equal(t, tt.status, status, "%s: %s", tt.name, why)
		assert.Equal(t, status == 0, why == "", tt.name)
	}
}

func TestValidAuthority(t *testing.T) {
	for _, s := range []string{"example.org", "example.org:8080", "EXAMPLE.org:", "127.0.0.1", "[::1]", "[::1]:80", "a-b_c~d%20e", "sub!$&'()*+,;=x"} {
		assert.True(t, validAuthority(s), s)
	}
	for _, s := range []string{"", ":80", "]ufd", "[::1", "::1", "[127.0.0.1]", "a:b", "a:8x", "a b", "a%2", "a%zz", "a/b", "a@b", "[::1]x"} {
		assert.False(t, validAuthority(s), s)
	}
}

// FuzzScanner: the scan and net/http agree on where each request starts,
// for every request net/http reads before the scan stops following (at
// a Transfer-Encoding, or a block net/http refuses).
func FuzzScanner(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /q HTTP/1.0\n\n"), uint8(3))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nGET/ HTTP/1.1\r\n\r\n"), uint8(1))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"), uint8(7))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nGET / HTTP/1.1\r\n\r\n"), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, piece uint8) {
		s := scan(string(stream), int(piece)+1)
		br := bufio.NewReader(bytes.NewReader(stream))
		for i := 0; ; i++ {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if i >= len(s.complete) {
				t.Fatalf("net/http read request %d (%q), the scan did not: %+v", i, r.Method+" "+r.RequestURI, s.complete)
			}
			h := s.complete[i]
			if !isLine(h.line, r) {
				t.Fatalf("request %d: net/http read %q %q %q, the scan %q", i, r.Method, r.RequestURI, r.Proto, h.line)
			}
			if h.transferEncoding {
				return
			}
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
		}
	})
}

package bridge

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func vars(kv ...string) []Var {
	var out []Var
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, Var{kv[i], kv[i+1]})
	}
	return out
}

func asMap(vs []Var) map[string]string {
	m := map[string]string{}
	for _, v := range vs {
		m[v.Name] = v.Value
	}
	return m
}

func TestNormalize(t *testing.T) {
	base := []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1"}
	tests := []struct {
		name   string
		in     []string
		want   map[string]string // keys that must have these values
		absent []string
		length int64
		toEOF  bool
	}{
		{
			name: "defaults for missing keys",
			in:   []string{"HTTP_HOST", "example.org:8080"},
			want: map[string]string{
				"SCRIPT_NAME": "", "PATH_INFO": "", "QUERY_STRING": "",
				"SERVER_NAME": "example.org", "SERVER_PORT": "8080", "wsgi.url_scheme": "http",
			},
			length: -1,
		},
		{
			name:   "a length not known",
			in:     []string{"CONTENT_LENGTH", "-1"},
			absent: []string{"CONTENT_LENGTH"},
			length: -1,
			toEOF:  true,
		},
		{
			name:   "server name and port kept when given",
			in:     []string{"HTTP_HOST", "other", "SERVER_NAME", "real", "SERVER_PORT", "81"},
			want:   map[string]string{"SERVER_NAME": "real", "SERVER_PORT": "81"},
			length: -1,
		},
		{
			name:   "ipv6 host",
			in:     []string{"HTTP_HOST", "[::1]:8443", "HTTPS", "on"},
			want:   map[string]string{"SERVER_NAME": "[::1]", "SERVER_PORT": "8443", "wsgi.url_scheme": "https"},
			length: -1,
		},
		{
			name:   "https default port",
			in:     []string{"REQUEST_SCHEME", "https"},
			want:   map[string]string{"SERVER_NAME": "localhost", "SERVER_PORT": "443", "wsgi.url_scheme": "https"},
			length: -1,
		},
		{
			name:   "script name slash moves to path info",
			in:     []string{"SCRIPT_NAME", "/", "PATH_INFO", ""},
			want:   map[string]string{"SCRIPT_NAME": "", "PATH_INFO": "/"},
			length: -1,
		},
		{
			name:   "script name trailing slash",
			in:     []string{"SCRIPT_NAME", "/app/", "PATH_INFO", "x"},
			want:   map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/x"},
			length: -1,
		},
		{
			name:   "path info kept as given",
			in:     []string{"SCRIPT_NAME", "/app", "PATH_INFO", "/caf\xc3\xa9/%2F"},
			want:   map[string]string{"SCRIPT_NAME": "/app", "PATH_INFO": "/caf\xc3\xa9/%2F"},
			length: -1,
		},
		{
			name:   "content length",
			in:     []string{"CONTENT_LENGTH", "000123"},
			want:   map[string]string{"CONTENT_LENGTH": "000123"},
			length: 123,
		},
		{
			name:   "chunked without a length runs to its end",
			in:     []string{"HTTP_TRANSFER_ENCODING", "Chunked"},
			length: -1,
			toEOF:  true,
		},
		{
			name:   "a length wins over chunked",
			in:     []string{"HTTP_TRANSFER_ENCODING", "chunked", "CONTENT_LENGTH", "12"},
			want:   map[string]string{"CONTENT_LENGTH": "12"},
			length: 12,
		},
		{
			name:   "empty content length is absent",
			in:     []string{"CONTENT_LENGTH", ""},
			absent: []string{"CONTENT_LENGTH"},
			length: -1,
		},
		{
			name: "dropped names",
			in: []string{"HTTP_PROXY", "http://evil", "HTTP_CONTENT_LENGTH", "5", "HTTP_CONTENT_TYPE", "x",
				"HTTP_x_lower", "1", "HTTP_", "1", "wsgi.input", "x", "HTTP_X_FINE", "ok", "DJANGO_SETTINGS_MODULE", "s"},
			want:   map[string]string{"HTTP_X_FINE": "ok", "DJANGO_SETTINGS_MODULE": "s"},
			absent: []string{"HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_x_lower", "HTTP_", "wsgi.input"},
			length: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, length, toEOF, err := normalize(vars(append(append([]string{}, base...), tt.in...)...))
			require.NoError(t, err)
			m := asMap(out)
			for k, v := range tt.want {
				assert.Equal(t, v, m[k], k)
			}
			for _, k := range tt.absent {
				assert.NotContains(t, m, k)
			}
			assert.Equal(t, tt.length, length)
			assert.Equal(t, tt.toEOF, toEOF)
			assert.Equal(t, "GET", m["REQUEST_METHOD"])
		})
	}
}

func TestNormalizeRefuses(t *testing.T) {
	tests := []struct {
		name   string
		in     []string
		status int
		msg    string
	}{
		{"no method", []string{"SERVER_PROTOCOL", "HTTP/1.1"}, 500, "REQUEST_METHOD"},
		{"method not a token", []string{"REQUEST_METHOD", "G T", "SERVER_PROTOCOL", "HTTP/1.1"}, 500, "REQUEST_METHOD"},
		{"no protocol", []string{"REQUEST_METHOD", "GET"}, 500, "SERVER_PROTOCOL"},
		{"bogus protocol", []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/9x"}, 500, "SERVER_PROTOCOL"},
	}
	for _, cl := range []string{"-2", "-01", "+5", "abc", "1e3", " 5", "5,5", "9223372036854775808", "0x10", "5 "} {
		tests = append(tests, struct {
			name   string
			in     []string
			status int
			msg    string
		}{"content length " + cl, []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "CONTENT_LENGTH", cl}, 400, "CONTENT_LENGTH"})
	}
	tests = append(tests, struct {
		name   string
		in     []string
		status int
		msg    string
	}{"NUL", []string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "QUERY_STRING", "a\x00"}, 400, "NUL"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := normalize(vars(tt.in...))
			var se *StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.status, se.Status)
			assert.Contains(t, se.Msg, tt.msg)
		})
	}
}

// FuzzNormalize checks that no environ makes normalize panic, and that
// what it accepts keeps the rules the app relies on.
func FuzzNormalize(f *testing.F) {
	f.Add("GET", "HTTP/1.1", "/", "/x", "5", "example.org:80")
	f.Add("POST", "HTTP/1.0", "/app/", "", "", "[::1]:")
	f.Add("GET", "HTTP/2", "", "/%0a", "0009", ":")
	f.Fuzz(func(t *testing.T, method, proto, scriptName, pathInfo, length, host string) {
		out, n, _, err := normalize(vars("REQUEST_METHOD", method, "SERVER_PROTOCOL", proto,
			"SCRIPT_NAME", scriptName, "PATH_INFO", pathInfo, "CONTENT_LENGTH", length, "HTTP_HOST", host))
		if err != nil {
			return
		}
		m := asMap(out)
		for _, k := range []string{"REQUEST_METHOD", "SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("accepted environ lacks %s", k)
			}
		}
		if strings.HasSuffix(m["SCRIPT_NAME"], "/") {
			t.Fatalf("SCRIPT_NAME %q ends in a slash", m["SCRIPT_NAME"])
		}
		noSlash := func(s string) string { return strings.ReplaceAll(s, "/", "") }
		if !strings.HasPrefix(scriptName, m["SCRIPT_NAME"]) || noSlash(m["SCRIPT_NAME"]+m["PATH_INFO"]) != noSlash(scriptName+pathInfo) {
			t.Fatalf("path changed: %q+%q -> %q+%q", scriptName, pathInfo, m["SCRIPT_NAME"], m["PATH_INFO"])
		}
		if n < -1 || (length == "" && n != -1) {
			t.Fatalf("length %q gave %d", length, n)
		}
	})
}

func TestMount(t *testing.T) {
	tests := []struct {
		name       string
		in         []string
		prefix     string
		scriptName string
		pathInfo   string
	}{
		{"stock nginx params", []string{"SCRIPT_NAME", "/blog/post/1", "DOCUMENT_URI", "/blog/post/1"}, "", "", "/blog/post/1"},
		{"stock nginx params, mounted", []string{"SCRIPT_NAME", "/blog/post/1", "DOCUMENT_URI", "/blog/post/1"}, "/blog", "/blog", "/post/1"},
		{"mount point itself", []string{"SCRIPT_NAME", "/blog", "DOCUMENT_URI", "/blog"}, "/blog/", "/blog", ""},
		{"prefix is not a segment", []string{"SCRIPT_NAME", "/blogger", "DOCUMENT_URI", "/blogger"}, "/blog", "/blog", "/blogger"},
		{"path info given", []string{"SCRIPT_NAME", "/app", "PATH_INFO", "/x/y"}, "/app", "/app", "/x/y"},
		{"path info with the prefix", []string{"SCRIPT_NAME", "", "PATH_INFO", "/app/x"}, "/app", "/app", "/x"},
		{"another split of the server's", []string{"SCRIPT_NAME", "/app/some", "PATH_INFO", "/path"}, "/app", "/app", "/some/path"},
		{"a split, at the root", []string{"SCRIPT_NAME", "/blog/", "PATH_INFO", "/x"}, "", "", "/blog/x"},
		{"only script name", []string{"SCRIPT_NAME", "/a/b"}, "", "", "/a/b"},
		{"nothing", nil, "/app", "/app", ""},
		{"decoded bytes kept", []string{"SCRIPT_NAME", "/caf\xc3\xa9", "DOCUMENT_URI", "/caf\xc3\xa9"}, "", "", "/caf\xc3\xa9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := asMap(Mount(vars(tt.in...), tt.prefix))
			assert.Equal(t, tt.scriptName, m["SCRIPT_NAME"])
			assert.Equal(t, tt.pathInfo, m["PATH_INFO"])
		})
	}
}

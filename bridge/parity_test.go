package bridge

import (
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parityScript runs the worker's make_environ (the environ rules of a
// worker serving FastCGI itself) on each environ read from stdin.
const parityScript = `
import json, sys
sys.path.insert(0, ".")
from wsgibridge.fastcgi import environ as w
out = []
for pairs in json.load(sys.stdin):
    try:
        env, length, to_eof = w.make_environ(dict(pairs), w.KEEP)
        out.append({"env": env, "length": length, "toEOF": to_eof})
    except w.Refused as exc:
        out.append({"status": exc.status})
json.dump(out, sys.stdout)
`

// latin1 maps each byte to the rune of the same value, the way the worker
// decodes CGI variables, so that JSON carries any bytes unchanged.
func latin1(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// TestEnvironRulesParity: the Python rules of a FastCGI worker and the Go
// rules of normalize agree on every environ of a large generated set:
// the same refusals, the same environ, length and end-of-input flag.
func TestEnvironRulesParity(t *testing.T) {
	names := []string{"REQUEST_METHOD", "SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
		"SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "HTTPS", "REQUEST_SCHEME", "CONTENT_LENGTH",
		"HTTP_TRANSFER_ENCODING", "HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_X_Y", "HTTP_x_y", "HTTP_",
		"wsgi.input", "DOCUMENT_URI", "A=B", "HTTP_X\x00"}
	values := []string{"", "GET", "G T", "HTTP/1.1", "HTTP/", "HTTP/9x", "/", "//", "/app/", "/app", "/caf\xc3\xa9",
		"x", "on", "ON", "1", "https", "HTTPS", "example.org:8080", "[::1]:8443", "[::1]", ":", "host:",
		"chunked", "gzip, Chunked", "0", "000123", "-1", "+5", "1e3", " 5", "9223372036854775808",
		"123456789012345678", "a\x00b", "\xff\xfe", "POST", "1\xb2"}
	rng := rand.New(rand.NewPCG(1, 2))
	var cases [][]Var
	for i := 0; i < 3000; i++ {
		var env []Var
		if rng.IntN(10) > 0 {
			env = append(env, Var{"REQUEST_METHOD", "GET"}, Var{"SERVER_PROTOCOL", "HTTP/1.1"})
		}
		seen := map[string]bool{}
		for j := rng.IntN(8); j > 0; j-- {
			name := names[rng.IntN(len(names))]
			if seen[name] || (name == "REQUEST_METHOD" || name == "SERVER_PROTOCOL") && len(env) > 0 {
				continue // a web server sends each name once
			}
			seen[name] = true
			env = append(env, Var{name, values[rng.IntN(len(values))]})
		}
		cases = append(cases, env)
	}
	in := make([][][2]string, len(cases))
	for i, env := range cases {
		in[i] = [][2]string{}
		for _, v := range env {
			in[i] = append(in[i], [2]string{latin1(v.Name), latin1(v.Value)})
		}
	}
	payload, err := json.Marshal(in)
	require.NoError(t, err)
	cmd := exec.Command("python3", "-c", parityScript)
	cmd.Stdin = strings.NewReader(string(payload))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var got []struct {
		Env    map[string]any
		Length int64
		ToEOF  bool
		Status int
	}
	require.NoError(t, json.Unmarshal(out, &got))
	require.Len(t, got, len(cases))
	for i, env := range cases {
		want, length, toEOF, err := normalize(env)
		if err != nil {
			var se *StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, se.Status, got[i].Status, "case %d %q: %v", i, env, err)
			continue
		}
		if !assert.Zero(t, got[i].Status, "case %d %q: Python refused, Go did not", i, env) {
			continue
		}
		wantMap := map[string]any{}
		for _, v := range want {
			wantMap[latin1(v.Name)] = latin1(v.Value)
		}
		assert.Equal(t, wantMap, got[i].Env, "case %d %q", i, env)
		assert.Equal(t, length, got[i].Length, "case %d %q", i, env)
		assert.Equal(t, toEOF, got[i].ToEOF, "case %d %q", i, env)
	}
}

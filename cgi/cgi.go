// Package cgi reads a CGI request (RFC 3875) from a process's environment
// and standard input, and writes a CGI response to its standard output.
// It knows nothing of Python or FastCGI.
package cgi

import (
	"bufio"
	"errors"
	"io"
	"strings"

	"github.com/wsgibridge/wsgibridge/internal/spool"
)

// ErrNotCGI is returned by ReadRequest when REQUEST_METHOD is not set: the
// process was not started by a web server.
var ErrNotCGI = errors.New("cgi: REQUEST_METHOD is not set: not started by a web server")

// Request is a CGI request.
type Request struct {
	// Env holds every variable of the environment, as "NAME=value": the
	// meta-variables and whatever the server added (SetEnv, PATH).
	Env []string
	// Body is the request body, read from standard input as fast as the
	// server writes it (see package spool), or nil when the request has
	// none: no CONTENT_LENGTH (or 0) and not chunked. Close it when done.
	Body io.ReadCloser
}

// spoolMemory is how much of an unread body is held in memory before the
// rest is spooled to a temporary file.
const spoolMemory = 1 << 20

// ReadRequest reads the request from environ (as os.Environ gives it) and
// stdin. Spooled body bytes beyond memory go to a file in tmpDir
// (os.TempDir() if empty).
func ReadRequest(environ []string, stdin io.Reader, tmpDir string) (*Request, error) {
	r := &Request{Env: environ}
	var method, length, te string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		switch name {
		case "REQUEST_METHOD":
			method = value
		case "CONTENT_LENGTH":
			length = value
		case "HTTP_TRANSFER_ENCODING":
			te = value
		}
	}
	if method == "" {
		return nil, ErrNotCGI
	}
	// Standard input is read only when it may carry a body; how much of
	// it the app gets is the bridge's rule.
	if strings.TrimLeft(length, "0") != "" || strings.Contains(strings.ToLower(te), "chunked") {
		body := spool.New(spoolMemory, tmpDir)
		go body.Fill(stdin)
		r.Body = body
	}
	return r, nil
}

// keepForChild names what a child process may inherit from a CGI
// environment. Under CGI the environment is the request, so everything
// else (HTTP_PROXY above all: httpoxy, CVE-2016-1000110) stays out.
var keepForChild = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true,
	"LANGUAGE": true, "TZ": true, "TMPDIR": true, "LD_LIBRARY_PATH": true,
	"VIRTUAL_ENV": true, "SYSTEMROOT": true,
}

// ChildEnv returns the variables of environ that a child process may
// inherit: PATH, HOME, the locale (LANG, LC_*), TZ, TMPDIR, PYTHON* and a
// few more; never a request meta-variable.
func ChildEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if keepForChild[name] || strings.HasPrefix(name, "LC_") || strings.HasPrefix(name, "PYTHON") {
			out = append(out, kv)
		}
	}
	return out
}

// ResponseWriter writes a CGI response. The header block goes out with the
// first body bytes, in one write where it can.
type ResponseWriter struct {
	w *bufio.Writer
}

// NewResponseWriter returns a ResponseWriter that writes to w (standard
// output).
func NewResponseWriter(w io.Writer) *ResponseWriter {
	return &ResponseWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

// WriteHeader writes the CGI header block (a 200 has no Status line).
func (rw *ResponseWriter) WriteHeader(status int, block []byte) error {
	_, err := rw.w.Write(block)
	return err
}

// Write writes body bytes.
func (rw *ResponseWriter) Write(p []byte) (int, error) {
	return rw.w.Write(p)
}

// Flush sends what was written to the web server now.
func (rw *ResponseWriter) Flush() error {
	return rw.w.Flush()
}

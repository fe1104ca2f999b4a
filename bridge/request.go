package bridge

// This file holds the request model: the CGI environ as the web server gave
// it, the body, and the rules that turn that into a PEP 3333 environ.

import (
	"fmt"
	"io"
	"strings"
)

// Var is one CGI meta-variable. Values are the bytes the web server sent;
// the worker decodes them as latin-1 (PEP 3333 "native strings").
type Var struct {
	Name, Value string
}

// lookup returns the value of the variable name in env, "" if absent.
func lookup(env []Var, name string) string {
	for _, v := range env {
		if v.Name == name {
			return v.Value
		}
	}
	return ""
}

// Request is one request as the CGI contract has it.
type Request struct {
	// Env holds the CGI meta-variables (REQUEST_METHOD, PATH_INFO,
	// HTTP_*, and whatever else the server sets).
	Env []Var
	// Body is the request body, or nil. The app reads at most
	// CONTENT_LENGTH bytes of it; a chunked request (no CONTENT_LENGTH,
	// HTTP_TRANSFER_ENCODING naming chunked) reads it to io.EOF; without
	// either there is no body. Serve may
	// return while a Read on Body is still blocked; the caller ends that
	// Read by closing Body's source.
	Body io.Reader
	// RunOnce sets wsgi.run_once: the worker serves this one request.
	RunOnce bool
}

// StatusError is a request the bridge refuses before the app sees it;
// Status is the HTTP status the client gets.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// maxContentLengthDigits keeps CONTENT_LENGTH within an int64.
const maxContentLengthDigits = 18

// normalize checks env and returns the environ the app gets, the content
// length (-1 when absent), and whether a body without a length runs to
// its end (a chunked request, which Apache's mod_proxy_fcgi and mod_cgi
// stream without CONTENT_LENGTH). Rules, by catalog row:
//   - B1: REQUEST_METHOD and SERVER_PROTOCOL are the web server's duty;
//     missing or bogus is a 500 (the gateway is misconfigured).
//   - B2: CONTENT_LENGTH is digits only; empty means absent; -1 means
//     unknown (the body runs to the end of the input); else 400.
//   - B3: SCRIPT_NAME ending in "/" gives that slash to PATH_INFO.
//   - B4: a NUL byte anywhere is a 400.
//   - B5, B10, G1: HTTP_PROXY, HTTP_CONTENT_LENGTH, HTTP_CONTENT_TYPE and
//     HTTP_* names other than [A-Z0-9_] are dropped; wsgi.* names are ours.
//   - B9: QUERY_STRING, SCRIPT_NAME, PATH_INFO, SERVER_NAME and
//     SERVER_PORT are always present.
func normalize(in []Var) (env []Var, length int64, toEOF bool, err error) {
	out := make([]Var, 0, len(in)+6)
	var method, proto, scriptName, pathInfo, host, https, scheme, te string
	var haveQuery, haveName, havePort, unknown bool
	length = -1
	for _, v := range in {
		if strings.IndexByte(v.Value, 0) >= 0 || strings.IndexByte(v.Name, 0) >= 0 {
			return nil, 0, false, &StatusError{400, fmt.Sprintf("NUL byte in %q", v.Name)}
		}
		switch v.Name {
		case "REQUEST_METHOD":
			method = v.Value
		case "SERVER_PROTOCOL":
			proto = v.Value
		case "SCRIPT_NAME":
			scriptName = v.Value
			continue
		case "PATH_INFO":
			pathInfo = v.Value
			continue
		case "QUERY_STRING":
			haveQuery = true
		case "SERVER_NAME":
			haveName = v.Value != ""
		case "SERVER_PORT":
			havePort = v.Value != ""
		case "HTTP_HOST":
			host = v.Value
		case "HTTPS":
			https = v.Value
		case "REQUEST_SCHEME":
			scheme = v.Value
		case "HTTP_TRANSFER_ENCODING":
			te = v.Value
		case "CONTENT_LENGTH":
			if v.Value == "" {
				continue
			}
			if v.Value == "-1" {
				// A body of unknown length (Caddy's, for a chunked or
				// an HTTP/2 body): read to the end of the input.
				unknown = true
				continue
			}
			n, ok := parseContentLength(v.Value)
			if !ok {
				return nil, 0, false, &StatusError{400, fmt.Sprintf("invalid CONTENT_LENGTH %q", v.Value)}
			}
			length = n
		case "HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE":
			continue
		}
		if !validName(v.Name) {
			continue
		}
		out = append(out, v)
	}
	if method == "" || !isToken(method) {
		return nil, 0, false, &StatusError{500, fmt.Sprintf("gateway misconfigured: REQUEST_METHOD is %q", method)}
	}
	if !validProtocol(proto) {
		return nil, 0, false, &StatusError{500, fmt.Sprintf("gateway misconfigured: SERVER_PROTOCOL is %q", proto)}
	}
	if strings.HasSuffix(scriptName, "/") {
		scriptName = strings.TrimRight(scriptName, "/")
		pathInfo = "/" + strings.TrimPrefix(pathInfo, "/")
	}
	out = append(out, Var{"SCRIPT_NAME", scriptName}, Var{"PATH_INFO", pathInfo})
	if !haveQuery {
		out = append(out, Var{"QUERY_STRING", ""})
	}
	urlScheme := "http"
	if strings.EqualFold(https, "on") || https == "1" || strings.EqualFold(scheme, "https") {
		urlScheme = "https"
	}
	if !haveName || !havePort {
		name, port := splitHost(host, urlScheme)
		if !haveName {
			out = append(out, Var{"SERVER_NAME", name})
		}
		if !havePort {
			out = append(out, Var{"SERVER_PORT", port})
		}
	}
	out = append(out, Var{"wsgi.url_scheme", urlScheme})
	toEOF = unknown || length < 0 && strings.Contains(strings.ToLower(te), "chunked")
	return out, length, toEOF, nil
}

func parseContentLength(s string) (int64, bool) {
	if len(s) == 0 || len(s) > maxContentLengthDigits {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validName accepts what a web server can mean as a variable name: no
// wsgi.* (those are the bridge's), and HTTP_* only in its canonical form,
// so that two spellings of one header cannot both reach the app.
func validName(name string) bool {
	if name == "" || strings.HasPrefix(name, "wsgi.") || strings.IndexByte(name, '=') >= 0 {
		return false
	}
	if !strings.HasPrefix(name, "HTTP_") {
		return true
	}
	for i := len("HTTP_"); i < len(name); i++ {
		c := name[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return len(name) > len("HTTP_")
}

func validProtocol(p string) bool {
	rest, ok := strings.CutPrefix(p, "HTTP/")
	if !ok || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c == '.') {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (a method name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return s != ""
}

// splitHost derives SERVER_NAME and SERVER_PORT from a Host header, for
// front ends that do not send them.
func splitHost(host, scheme string) (name, port string) {
	port = "80"
	if scheme == "https" {
		port = "443"
	}
	if host == "" {
		return "localhost", port
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		if p := host[i+1:]; p != "" {
			port = p
		}
		host = host[:i]
	}
	return host, port
}

// Mount gives the app the mount point the operator chose instead of the one
// the server sent: SCRIPT_NAME becomes prefix ("" or "/app"), and PATH_INFO
// the request path below it, whatever split the server made. The path is
// SCRIPT_NAME joined with PATH_INFO if the server sent a non-empty
// PATH_INFO, else DOCUMENT_URI, else SCRIPT_NAME (nginx's stock
// fastcgi_params send the whole path as SCRIPT_NAME and no PATH_INFO,
// which no WSGI router can use). The prefix is stripped from the path when
// the path starts with it at a segment boundary. (The FastCGI worker's
// split_path does the same.)
func Mount(env []Var, prefix string) []Var {
	prefix = strings.TrimRight(prefix, "/")
	var pathInfo, docURI, scriptName string
	si, pi := -1, -1
	for i, v := range env {
		switch v.Name {
		case "PATH_INFO":
			pathInfo, pi = v.Value, i
		case "DOCUMENT_URI":
			docURI = v.Value
		case "SCRIPT_NAME":
			scriptName, si = v.Value, i
		}
	}
	path := pathInfo
	if script := strings.TrimRight(scriptName, "/"); path != "" && script != "" {
		path = script + "/" + strings.TrimLeft(path, "/")
	}
	if path == "" {
		path = docURI
	}
	if path == "" {
		path = scriptName
	}
	if rest, ok := strings.CutPrefix(path, prefix); ok && (rest == "" || rest[0] == '/') {
		path = rest
	}
	if si >= 0 {
		env[si].Value = prefix
	} else {
		env = append(env, Var{"SCRIPT_NAME", prefix})
	}
	if pi >= 0 {
		env[pi].Value = path
	} else {
		env = append(env, Var{"PATH_INFO", path})
	}
	return env
}

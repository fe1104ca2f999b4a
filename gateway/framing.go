package gateway

// This file holds what net/http does not tell a handler about how a
// request was framed. It drops Transfer-Encoding from the header, and
// Content-Length beside a chunked one, and ignores Transfer-Encoding in
// HTTP/1.0; so a handler cannot see the requests RFC 9112 (section 6.1)
// asks a server to treat as faulty, Content-Length beside
// Transfer-Encoding and Transfer-Encoding in HTTP/1.0, whose framing a
// proxy in front may read otherwise than we do: the ground of request
// smuggling. Nor does it count the header fields or measure them.
//
// So each connection scans the header blocks as net/http reads them, and
// keeps what it saw of each (a head) for the handler, which takes them in
// order: net/http serves a connection's requests one after the other. The
// scan follows the framing only where it is plain (no body, or a
// Content-Length); after a chunked body it stops, and the response to that
// request closes the connection. A handler that finds no head, or one
// whose request line is not its request's, refuses the request and closes
// the connection: the two readings of the stream disagree.

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// head is what the scan saw of one request's header block.
type head struct {
	line    string // the request line, without its line end
	fields  int    // header fields
	longest int    // the longest field line, without its line end
	// The framing headers as sent, before net/http removes them.
	contentLength    bool
	transferEncoding bool
}

// scanner follows a connection's bytes from one header block to the next.
type scanner struct {
	state    int    // scanHead, scanBody or scanLost
	cur      []byte // the line being read
	maxLine  int    // past this a line is net/http's to refuse
	h        head   // the block being read
	inHead   bool   // its request line was read
	lengths  []string
	skip     int64  // body bytes left to pass over
	complete []head // the blocks read whole, not yet taken
}

const (
	scanHead = iota // reading a header block
	scanBody        // passing over a body of known length
	scanLost        // the framing is not followed further
)

func newScanner(maxLine int) *scanner {
	return &scanner{maxLine: maxLine}
}

// feed takes the next bytes read from the connection.
func (s *scanner) feed(p []byte) {
	for len(p) > 0 {
		switch s.state {
		case scanLost:
			return
		case scanBody:
			n := int64(len(p))
			if n > s.skip {
				n = s.skip
			}
			s.skip -= n
			p = p[n:]
			if s.skip == 0 {
				s.state = scanHead
			}
		case scanHead:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				s.add(p)
				return
			}
			s.add(p[:i])
			p = p[i+1:]
			if s.state == scanLost {
				return
			}
			s.line(bytes.TrimSuffix(s.cur, []byte("\r")))
			s.cur = s.cur[:0]
		}
	}
}

func (s *scanner) add(p []byte) {
	if len(s.cur)+len(p) > s.maxLine {
		// net/http refuses such a block (431) and closes.
		s.lose()
		return
	}
	s.cur = append(s.cur, p...)
}

func (s *scanner) lose() {
	s.state = scanLost
	s.cur = nil
}

// line takes one line of a header block.
func (s *scanner) line(l []byte) {
	if !s.inHead {
		if len(l) == 0 {
			s.lose() // net/http wants the request line first: 400
			return
		}
		s.h = head{line: string(l)}
		s.inHead = true
		s.lengths = s.lengths[:0]
		return
	}
	if len(l) == 0 {
		s.end()
		return
	}
	if l[0] == ' ' || l[0] == '\t' {
		// A continued line belongs to the field before it.
		s.h.longest = max(s.h.longest, len(l))
		return
	}
	s.h.fields++
	s.h.longest = max(s.h.longest, len(l))
	name, value, _ := bytes.Cut(l, []byte(":"))
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		s.h.contentLength = true
		s.lengths = append(s.lengths, string(bytes.Trim(value, " \t")))
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		s.h.transferEncoding = true
	}
}

// end ends a header block and finds where the next one starts, as
// net/http frames the body.
func (s *scanner) end() {
	s.complete = append(s.complete, s.h)
	s.inHead = false
	if s.h.transferEncoding {
		// A chunked body, whose request's response closes the
		// connection; or one net/http refuses (501), or the handler
		// does (HTTP/1.0): either closes it too.
		s.lose()
		return
	}
	if len(s.lengths) == 0 {
		return
	}
	for _, v := range s.lengths[1:] {
		if v != s.lengths[0] {
			s.lose() // refused by net/http
			return
		}
	}
	n, err := strconv.ParseUint(s.lengths[0], 10, 63)
	if err != nil {
		s.lose() // refused by net/http
		return
	}
	if n > 0 {
		s.state, s.skip = scanBody, int64(n)
	}
}

// conn is a connection whose reads are scanned.
type conn struct {
	net.Conn
	mu   sync.Mutex
	scan *scanner
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.scan.feed(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// next returns the head of r, the oldest one not yet taken; false when
// the scan did not see it.
func (c *conn) next(r *http.Request) (head, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.scan.complete) == 0 {
		return head{}, false
	}
	h := c.scan.complete[0]
	c.scan.complete = c.scan.complete[1:]
	return h, isLine(h.line, r)
}

// isLine tells whether line is r's request line, as net/http parsed it.
func isLine(line string, r *http.Request) bool {
	m, u := len(r.Method), len(r.RequestURI)
	return len(line) == m+1+u+1+len(r.Proto) && line[:m] == r.Method && line[m] == ' ' &&
		line[m+1:m+1+u] == r.RequestURI && line[m+1+u] == ' ' && line[m+2+u:] == r.Proto
}

// listener makes each accepted connection a conn.
type listener struct {
	net.Listener
	maxLine int
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, scan: newScanner(l.maxLine)}, nil
}

type connKey struct{}

// withConn is the http.Server's ConnContext: it gives the handler its
// connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, sc)
	}
	return ctx
}

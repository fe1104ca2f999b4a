package fastcgi

// This file answers a FastCGI request without a worker: when every worker
// is busy and the wait is full, the supervisor itself tells the web server
// to come back later, rather than leave the request to time out.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Record types and the protocol status of FastCGI 1.0 that Overloaded uses.
const (
	typeBeginRequest = 1
	typeEndRequest   = 3
	typeStdin        = 5
	typeStdout       = 6
	statusOverloaded = 2 // FCGI_OVERLOADED
)

// ErrNoRequest is returned by Overloaded when the connection ended, or
// the deadline passed, before a request began on it.
var ErrNoRequest = errors.New("fastcgi: no request came on the connection")

// Overloaded answers the request on conn with 503 Service Unavailable, a
// short body and Retry-After, and an END_REQUEST whose protocol status is
// FCGI_OVERLOADED, then closes conn. It reads the request to its end
// first (or until deadline), so that the close does not reset the
// connection under the answer.
func Overloaded(conn net.Conn, deadline time.Time) error {
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	br := bufio.NewReader(conn)
	id, err := readRequest(br)
	if id == 0 {
		return errors.Join(ErrNoRequest, err)
	}
	// Past the deadline the request's end may not have come: the answer
	// goes out anyway, with a moment to do so.
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	const body = "503 Service Unavailable: every worker is busy; try again shortly\n"
	head := "Status: 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	out := appendRecord(nil, typeStdout, id, []byte(head+body))
	out = appendRecord(out, typeStdout, id, nil)
	out = appendRecord(out, typeEndRequest, id, []byte{0, 0, 0, 0, statusOverloaded, 0, 0, 0})
	if _, err := conn.Write(out); err != nil {
		return fmt.Errorf("fastcgi: answer an overloaded request: %w", err)
	}
	return nil
}

// readRequest reads records until the first request's STDIN ends; it
// returns the request's id, 0 if none began.
func readRequest(br *bufio.Reader) (uint16, error) {
	var id uint16
	var h [8]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return id, err
		}
		kind, rid := h[1], binary.BigEndian.Uint16(h[2:4])
		n := int(binary.BigEndian.Uint16(h[4:6])) + int(h[6])
		if _, err := br.Discard(n); err != nil {
			return id, err
		}
		switch {
		case kind == typeBeginRequest && id == 0 && rid != 0:
			id = rid
		case kind == typeStdin && rid == id && id != 0 && n-int(h[6]) == 0:
			return id, nil
		}
	}
}

// appendRecord appends a record of kind for request id holding content,
// padded to a multiple of 8 bytes.
func appendRecord(b []byte, kind byte, id uint16, content []byte) []byte {
	pad := -len(content) & 7
	b = append(b, 1, kind, byte(id>>8), byte(id), byte(len(content)>>8), byte(len(content)), byte(pad), 0)
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// Package fastcgi implements the responder role of FastCGI 1.0: it accepts
// connections from a web server (nginx fastcgi_pass, Apache
// mod_proxy_fcgi, ...), decodes requests into CGI params and a body
// stream, and writes each response as FCGI_STDOUT records. It knows
// nothing of Python; a Handler serves the requests.
package fastcgi

// This file holds the record layer: the 8-byte header, the record types,
// and reading and writing records with padding.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const headerLen = 8

// Record types (FastCGI 1.0, section 8).
const (
	typeBeginRequest    = 1
	typeAbortRequest    = 2
	typeEndRequest      = 3
	typeParams          = 4
	typeStdin           = 5
	typeStdout          = 6
	typeStderr          = 7
	typeData            = 8
	typeGetValues       = 9
	typeGetValuesResult = 10
	typeUnknownType     = 11
)

// Roles, the BEGIN_REQUEST flag, and END_REQUEST protocol statuses.
const (
	roleResponder = 1

	flagKeepConn = 1

	statusRequestComplete uint8 = 0
	statusOverloaded      uint8 = 2
	statusUnknownRole     uint8 = 3
)

// maxContent is the largest content we write in one record: the largest
// multiple of 8 under the 16-bit limit, so full records need no padding.
const maxContent = 65528

// Errors from reading records. Each closes the connection it came on.
var (
	errVersion = errors.New("fastcgi: unsupported protocol version")
)

type header struct {
	version  uint8
	typ      uint8
	id       uint16
	length   uint16
	padding  uint8
	reserved uint8
}

// recordReader reads records into one fixed buffer: a record is at most
// 65535 + 255 bytes, so no length a peer sends can make us allocate.
type recordReader struct {
	r   io.Reader
	buf [headerLen + 65535 + 255]byte
}

// next reads one record; content is valid until the next call.
func (rr *recordReader) next() (header, []byte, error) {
	if _, err := io.ReadFull(rr.r, rr.buf[:headerLen]); err != nil {
		return header{}, nil, err
	}
	h := header{
		version: rr.buf[0],
		typ:     rr.buf[1],
		id:      binary.BigEndian.Uint16(rr.buf[2:4]),
		length:  binary.BigEndian.Uint16(rr.buf[4:6]),
		padding: rr.buf[6],
	}
	if h.version != 1 {
		return h, nil, fmt.Errorf("%w %d", errVersion, h.version)
	}
	n := int(h.length) + int(h.padding)
	if _, err := io.ReadFull(rr.r, rr.buf[headerLen:headerLen+n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, fmt.Errorf("fastcgi: read record body: %w", err)
	}
	return h, rr.buf[headerLen : headerLen+int(h.length)], nil
}

// appendRecord appends one record of at most 65535 content bytes, padded
// to a multiple of 8.
func appendRecord(b []byte, typ uint8, id uint16, content []byte) []byte {
	pad := -len(content) & 7
	b = append(b, 1, typ, byte(id>>8), byte(id), byte(len(content)>>8), byte(len(content)), byte(pad), 0)
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

// appendStream appends content as records of type typ, split at
// maxContent; an empty content appends nothing.
func appendStream(b []byte, typ uint8, id uint16, content []byte) []byte {
	for len(content) > 0 {
		n := min(len(content), maxContent)
		b = appendRecord(b, typ, id, content[:n])
		content = content[n:]
	}
	return b
}

func appendEndRequest(b []byte, id uint16, appStatus uint32, protoStatus uint8) []byte {
	var body [8]byte
	binary.BigEndian.PutUint32(body[:4], appStatus)
	body[4] = protoStatus
	return appendRecord(b, typeEndRequest, id, body[:])
}

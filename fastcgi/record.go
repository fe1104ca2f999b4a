// Package fastcgi implements the responder role of FastCGI 1.0: it accepts
// connections from a web server (nginx fastcgi_pass, Apache
// mod_proxy_fcgi, ...), decodes requests into CGI params and a body
// stream, and writes each response as FCGI_STDOUT records. It knows
// nothing of Python; a Handler serves the requests.
package fastcgi

// This file holds the record layer: the 8-byte header, the record types,
// and reading and writing records with padding.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
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
	version uint8
	typ     uint8
	id      uint16
	length  uint16
	padding uint8
}

// recordReader reads records in place from a buffered reader whose buffer
// holds the largest record (65535 + 255 bytes after the header), so no
// length a peer sends can make us allocate.
type recordReader struct {
	r    *bufio.Reader
	last int // bytes of the previous record, discarded on the next call
}

// readerSize fits the header and the largest content and padding.
const readerSize = headerLen + 65535 + 255

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

// newRecordReader takes a pooled buffer; release gives it back.
func newRecordReader(r io.Reader) *recordReader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return &recordReader{r: br}
}

func (rr *recordReader) release() {
	rr.r.Reset(nil)
	readers.Put(rr.r)
	rr.r = nil
}

// next reads one record; content is valid until the next call.
func (rr *recordReader) next() (header, []byte, error) {
	if _, err := rr.r.Discard(rr.last); err != nil {
		return header{}, nil, err
	}
	rr.last = 0
	hb, err := rr.r.Peek(headerLen)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hb) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return header{}, nil, err
	}
	h := header{
		version: hb[0],
		typ:     hb[1],
		id:      binary.BigEndian.Uint16(hb[2:4]),
		length:  binary.BigEndian.Uint16(hb[4:6]),
		padding: hb[6],
	}
	if h.version != 1 {
		return h, nil, fmt.Errorf("%w %d", errVersion, h.version)
	}
	n := headerLen + int(h.length) + int(h.padding)
	rec, err := rr.r.Peek(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, fmt.Errorf("fastcgi: read record body: %w", err)
	}
	rr.last = n
	return h, rec[headerLen : headerLen+int(h.length)], nil
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

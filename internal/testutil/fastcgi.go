package testutil

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// FastCGI record types, as the tests send and expect them.
const (
	FCGIBeginRequest    = 1
	FCGIAbortRequest    = 2
	FCGIEndRequest      = 3
	FCGIParams          = 4
	FCGIStdin           = 5
	FCGIStdout          = 6
	FCGIStderr          = 7
	FCGIData            = 8
	FCGIGetValues       = 9
	FCGIGetValuesResult = 10
	FCGIUnknownType     = 11
)

// FCGIRecord returns one FastCGI record, padded to a multiple of 8 bytes
// as web servers send them.
func FCGIRecord(typ byte, id uint16, content []byte) []byte {
	pad := -len(content) & 7
	b := []byte{1, typ, byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), byte(pad), 0}
	return append(append(b, content...), make([]byte, pad)...)
}

// FCGIBegin returns a BEGIN_REQUEST record for role (1: responder),
// asking to keep the connection when keep is set.
func FCGIBegin(id uint16, role uint16, keep bool) []byte {
	var flags byte
	if keep {
		flags = 1
	}
	return FCGIRecord(FCGIBeginRequest, id, []byte{byte(role >> 8), byte(role), flags, 0, 0, 0, 0, 0})
}

// FCGIPairs encodes name-value pairs, with 4-byte lengths where needed.
func FCGIPairs(kv ...string) []byte {
	var b []byte
	for p := 0; p+1 < len(kv); p += 2 {
		for _, s := range kv[p : p+2] {
			if len(s) < 128 {
				b = append(b, byte(len(s)))
			} else {
				b = binary.BigEndian.AppendUint32(b, uint32(len(s))|1<<31)
			}
		}
		b = append(b, kv[p]+kv[p+1]...)
	}
	return b
}

// FCGIParamsRecords returns the PARAMS stream of a request: the pairs in
// one record, then the empty record that ends the stream.
func FCGIParamsRecords(id uint16, kv ...string) []byte {
	return append(FCGIRecord(FCGIParams, id, FCGIPairs(kv...)), FCGIRecord(FCGIParams, id, nil)...)
}

// FCGIRequest returns a whole responder request: BEGIN_REQUEST, the
// params, the body in STDIN records and the empty STDIN record.
func FCGIRequest(id uint16, keep bool, body string, kv ...string) []byte {
	b := append(FCGIBegin(id, 1, keep), FCGIParamsRecords(id, kv...)...)
	for len(body) > 0 {
		n := min(len(body), 65535)
		b = append(b, FCGIRecord(FCGIStdin, id, []byte(body[:n]))...)
		body = body[n:]
	}
	return append(b, FCGIRecord(FCGIStdin, id, nil)...)
}

// FCGIReply is one record a FastCGI application sent.
type FCGIReply struct {
	Type    byte
	ID      uint16
	Content []byte
}

// FCGINotARecord is how a wsgibridge worker ends a response it cuts
// short, after a STDERR record saying why: eight bytes that are not a
// record, so that no web server takes the response for complete.
var FCGINotARecord = make([]byte, 8)

// ParseFCGI splits b into records; it fails on a record that is not
// FastCGI 1.0 or is cut short, but for FCGINotARecord at the very end,
// after a STDERR record (cut then says so).
func ParseFCGI(b []byte) (records []FCGIReply, cut bool, err error) {
	var out []FCGIReply
	for len(b) > 0 {
		if len(b) == 8 && bytes.Equal(b, FCGINotARecord) && len(out) > 0 && out[len(out)-1].Type == FCGIStderr {
			return out, true, nil
		}
		if len(b) < 8 {
			return out, false, fmt.Errorf("a record header cut short: % x", b)
		}
		if b[0] != 1 {
			return out, false, fmt.Errorf("record version %d", b[0])
		}
		n, pad := int(binary.BigEndian.Uint16(b[4:])), int(b[6])
		if len(b) < 8+n+pad {
			return out, false, fmt.Errorf("a record cut short: %d of %d bytes", len(b)-8, n+pad)
		}
		out = append(out, FCGIReply{Type: b[1], ID: binary.BigEndian.Uint16(b[2:]), Content: b[8 : 8+n]})
		b = b[8+n+pad:]
	}
	return out, false, nil
}

package fastcgi

import (
	"bytes"
	"os"
	"testing"
)

// nginxGet is a request as nginx sends it (testdata/nginx-get.fcgi).
func nginxGet(b *testing.B) []byte {
	stream, err := os.ReadFile("testdata/nginx-get.fcgi")
	if err != nil {
		b.Fatal(err)
	}
	return stream
}

// BenchmarkReadRecords reads the records of one nginx request.
func BenchmarkReadRecords(b *testing.B) {
	stream := nginxGet(b)
	r := bytes.NewReader(stream)
	rr := newRecordReader(r)
	defer rr.release()
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		rr.r.Reset(r)
		rr.last = 0
		for {
			if _, _, err := rr.next(); err != nil {
				break
			}
		}
	}
}

// BenchmarkDecodeParams decodes the params of one nginx request.
func BenchmarkDecodeParams(b *testing.B) {
	rr := newRecordReader(bytes.NewReader(nginxGet(b)))
	var params []byte
	for {
		h, content, err := rr.next()
		if err != nil {
			break
		}
		if h.typ == typeParams {
			params = append(params, content...)
		}
	}
	b.SetBytes(int64(len(params)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		_ = decodePairs(params, func(name, value []byte) error {
			n++
			return nil
		})
	}
}

// BenchmarkWriteResponse encodes a small response and its end, as one
// write.
func BenchmarkWriteResponse(b *testing.B) {
	body := []byte("Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!")
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		out := appendStream(buf[:0], typeStdout, 1, body)
		out = appendRecord(out, typeStdout, 1, nil)
		_ = appendEndRequest(out, 1, 0, statusRequestComplete)
	}
}

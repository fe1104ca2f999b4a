package fastcgi

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// seeds returns the captured web-server traffic in testdata/ (see
// testdata/README.md) and streams made by the test builders.
func seeds(f *testing.F) [][]byte {
	out := [][]byte{
		fullRequest(1, flagKeepConn, "body", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "4"),
		append(fullRequest(1, flagKeepConn, "", "A", "b"), fullRequest(2, 0, "x", "C", "d")...),
		append(beginRecord(1, roleResponder, flagKeepConn), appendRecord(nil, typeAbortRequest, 1, nil)...),
		appendRecord(nil, typeGetValues, 0, appendPair(nil, "FCGI_MAX_CONNS", "")),
	}
	files, err := filepath.Glob("testdata/*.fcgi")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzPairs(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Add([]byte{0x80, 0, 0, 1, 0, 'a'})
	f.Fuzz(func(t *testing.T, p []byte) {
		var again []byte
		err := decodePairs(p, func(name, value []byte) error {
			again = appendPair(again, string(name), string(value))
			return nil
		})
		if err != nil {
			return
		}
		// Lengths may be spelled in 4 bytes where 1 would do, so compare
		// what the pairs say, not the bytes.
		var first, second [][2]string
		collect := func(dst *[][2]string) func(n, v []byte) error {
			return func(n, v []byte) error {
				*dst = append(*dst, [2]string{string(n), string(v)})
				return nil
			}
		}
		if decodePairs(p, collect(&first)) != nil || decodePairs(again, collect(&second)) != nil {
			t.Fatal("pairs accepted once, refused the second time")
		}
		if len(first) != len(second) {
			t.Fatalf("round trip changed the pairs: %q vs %q", first, second)
		}
		for i := range first {
			if first[i] != second[i] {
				t.Fatalf("round trip changed pair %d: %q vs %q", i, first[i], second[i])
			}
		}
	})
}

// FuzzConn feeds any byte stream to a connection: it must end, never
// panic, and leave no request counted.
func FuzzConn(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		srv := &Server{Handler: &echoHandler{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxParamsBytes: 4096, MaxParams: 50, StdinMemory: 4096}
		srv.init()
		client, server := net.Pipe()
		srv.slots <- struct{}{}
		c := srv.newConn(server)
		done := make(chan struct{})
		go func() {
			c.serve()
			close(done)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = io.Copy(client, bytes.NewReader(stream))
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection did not end after its peer closed")
		}
		if n := srv.Active(); n != 0 {
			t.Fatalf("%d requests still counted", n)
		}
	})
}

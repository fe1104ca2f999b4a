package fastcgi

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// overloaded runs Overloaded on one end of a socket pair after the web
// server's side wrote sent (closing its writing half when done), and
// returns what came back and Overloaded's error.
func overloaded(t *testing.T, sent []byte, done bool, wait time.Duration) ([]tu.FCGIReply, error) {
	t.Helper()
	ours, theirs := socketPair(t)
	errc := make(chan error, 1)
	go func() { errc <- Overloaded(ours, time.Now().Add(wait)) }()
	_, err := theirs.Write(sent)
	require.NoError(t, err)
	if done {
		require.NoError(t, theirs.(*net.UnixConn).CloseWrite())
	}
	got, err := io.ReadAll(theirs)
	require.NoError(t, err, "the answer is read, the connection is not reset")
	recs, _, err := tu.ParseFCGI(got)
	require.NoError(t, err)
	return recs, <-errc
}

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", t.TempDir()+"/s")
	require.NoError(t, err)
	defer l.Close()
	theirs, err := net.Dial("unix", l.Addr().String())
	require.NoError(t, err)
	ours, err := l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { theirs.Close() })
	return ours, theirs
}

func TestOverloaded(t *testing.T) {
	body := strings.Repeat("x", 100000)
	req := tu.FCGIRequest(7, true, body, "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "100000")
	for _, tt := range []struct {
		name string
		sent []byte
		done bool
		wait time.Duration
	}{
		{"a request with a body", req, false, 10 * time.Second},
		{"a web server that ends the connection", req, true, 10 * time.Second},
		// The body does not end: the answer goes out at the deadline.
		{"a request that never ends", req[:len(req)-8], false, 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := overloaded(t, tt.sent, tt.done, tt.wait)
			require.NoError(t, err)
			require.Len(t, recs, 3)
			assert.Equal(t, byte(tu.FCGIStdout), recs[0].Type)
			assert.Equal(t, uint16(7), recs[0].ID)
			head, text, ok := strings.Cut(string(recs[0].Content), "\r\n\r\n")
			require.True(t, ok)
			assert.True(t, strings.HasPrefix(head, "Status: 503 Service Unavailable\r\n"), head)
			assert.Contains(t, head, "\r\nRetry-After: 1")
			assert.Contains(t, text, "every worker is busy")
			assert.Empty(t, recs[1].Content, "STDOUT ends")
			assert.Equal(t, byte(tu.FCGIEndRequest), recs[2].Type)
			assert.Equal(t, []byte{0, 0, 0, 0, 2, 0, 0, 0}, recs[2].Content, "FCGI_OVERLOADED")
		})
	}
}

func TestOverloadedWithoutARequest(t *testing.T) {
	recs, err := overloaded(t, nil, true, time.Second)
	assert.Empty(t, recs)
	assert.True(t, errors.Is(err, ErrNoRequest), "%v", err)
}

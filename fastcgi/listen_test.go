package fastcgi

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListenUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := Listen("unix:"+path, 0o660)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	_, err = Listen("unix:"+path, 0o660)
	assert.ErrorContains(t, err, "something already listens on")

	// Left behind by a process that died: removed and listened on again.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	l, err = Listen("unix:"+path, 0o600)
	require.NoError(t, err)
	l.Close()

	file := filepath.Join(t.TempDir(), "not-a-socket")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o644))
	_, err = Listen("unix:"+file, 0o660)
	assert.ErrorContains(t, err, "is not a socket; not removing it")
	b, _ := os.ReadFile(file)
	assert.Equal(t, "keep me", string(b))
}

func TestListenTCP(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := Listen(addr, 0)
		require.NoError(t, err, addr)
		c, err := net.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		c.Close()
		l.Close()
	}
	_, err := Listen("127.0.0.1:99999", 0)
	assert.ErrorContains(t, err, "fastcgi: listen on 127.0.0.1:99999")
}

func TestAllowedAddrs(t *testing.T) {
	allowed, err := ParseAddrs(" 127.0.0.2, ::1 ")
	require.NoError(t, err)
	ts := startServer(t, &echoHandler{}, func(s *Server) { s.AllowedAddrs = allowed })
	c := ts.dial(t) // from 127.0.0.1: not in the list
	assert.True(t, c.isClosed())
	assert.Eventually(t, func() bool { return strings.Contains(ts.logString(), "not in FCGI_WEB_SERVER_ADDRS") }, 5*time.Second, 10*time.Millisecond)

	allowed, err = ParseAddrs("127.0.0.1")
	require.NoError(t, err)
	ts = startServer(t, &echoHandler{}, func(s *Server) { s.AllowedAddrs = allowed })
	ts.healthy(t)

	_, err = ParseAddrs("127.0.0.1,example.org")
	assert.ErrorContains(t, err, "FCGI_WEB_SERVER_ADDRS")
}

package fastcgi

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

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

func TestParseAddrs(t *testing.T) {
	tests := []struct {
		list string
		want []netip.Addr
		err  string
	}{
		{"", nil, ""},
		{" 127.0.0.2, ::1 ", []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")}, ""},
		{"127.0.0.1,,", []netip.Addr{netip.MustParseAddr("127.0.0.1")}, ""},
		{"127.0.0.1,example.org", nil, "fastcgi: FCGI_WEB_SERVER_ADDRS"},
	}
	for _, tt := range tests {
		got, err := ParseAddrs(tt.list)
		if tt.err != "" {
			assert.ErrorContains(t, err, tt.err, tt.list)
			continue
		}
		require.NoError(t, err, tt.list)
		assert.Equal(t, tt.want, got, tt.list)
	}
}

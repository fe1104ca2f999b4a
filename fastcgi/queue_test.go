package fastcgi

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQueueLength: the connections waiting to be accepted on a listening
// socket are counted, for TCP and for a unix socket.
func TestQueueLength(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "q.sock")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			l, err := net.Listen(tc.network, tc.addr)
			require.NoError(t, err)
			defer l.Close()
			raw, err := l.(syscall.Conn).SyscallConn()
			require.NoError(t, err)
			length := func() (waiting, backlog int) {
				require.NoError(t, raw.Control(func(fd uintptr) {
					waiting, backlog, err = QueueLength(int(fd))
				}))
				require.NoError(t, err)
				return waiting, backlog
			}
			waiting, backlog := length()
			assert.Zero(t, waiting)
			assert.Positive(t, backlog)
			for i := 0; i < 3; i++ {
				c, err := net.Dial(tc.network, l.Addr().String())
				require.NoError(t, err)
				defer c.Close()
			}
			waiting, _ = length()
			assert.Equal(t, 3, waiting, "three connections wait, none accepted")
			c, err := l.Accept()
			require.NoError(t, err)
			c.Close()
			waiting, _ = length()
			assert.Equal(t, 2, waiting)
		})
	}
}

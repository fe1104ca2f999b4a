package systemd

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

// fakeSystemd is a notify socket, as systemd listens on.
func fakeSystemd(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestNotifier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sd := fakeSystemd(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "3000000")
	t.Setenv("WATCHDOG_PID", "")
	n, err := FromEnv()
	require.NoError(t, err)
	defer n.Close()
	for _, name := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		_, set := os.LookupEnv(name)
		assert.False(t, set, "%s is not left for the children", name)
	}
	assert.Equal(t, 1500*time.Millisecond, n.Watchdog(), "half of WATCHDOG_USEC")

	require.NoError(t, n.Ready("2 idle"))
	assert.Equal(t, "READY=1\nSTATUS=2 idle\n", receive(t, sd))
	require.NoError(t, n.Reloading())
	got := receive(t, sd)
	assert.True(t, strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC="), got)
	require.NoError(t, n.Alive())
	assert.Equal(t, "WATCHDOG=1\n", receive(t, sd))
	require.NoError(t, n.Stopping())
	assert.Equal(t, "STOPPING=1\n", receive(t, sd))
}

func TestNotifierAbstractSocket(t *testing.T) {
	name := "wsgibridge-test-" + filepath.Base(t.TempDir())
	sd := fakeSystemd(t, "\x00"+name)
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	n, err := FromEnv()
	require.NoError(t, err)
	defer n.Close()
	require.NoError(t, n.Status("busy"))
	assert.Equal(t, "STATUS=busy\n", receive(t, sd))
	assert.Zero(t, n.Watchdog())
}

func TestNotifierElsewhere(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	require.NoError(t, err)
	assert.Nil(t, n)
	assert.NoError(t, n.Ready("x"), "a nil Notifier sends nothing")
	assert.Zero(t, n.Watchdog())

	t.Setenv("NOTIFY_SOCKET", "/no/such/socket")
	_, err = FromEnv()
	assert.Error(t, err)

	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "n"))
	fakeSystemd(t, os.Getenv("NOTIFY_SOCKET"))
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "1")
	n, err = FromEnv()
	require.NoError(t, err)
	defer n.Close()
	assert.Zero(t, n.Watchdog(), "the watchdog is another process's")
}

package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unitLine returns the value of key in the unit file contrib/systemd/name.
func unitLine(t *testing.T, name, key string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "contrib", "systemd", name))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	require.NoError(t, sc.Err())
	t.Fatalf("%s has no %s=", name, key)
	return ""
}

// notifications reads what the daemon tells systemd, one message each.
type notifications struct {
	t    *testing.T
	conn *net.UnixConn
}

// next returns the next message that does not start with one of skip.
func (n *notifications) next(skip ...string) string {
	n.t.Helper()
	buf := make([]byte, 4096)
	for {
		require.NoError(n.t, n.conn.SetReadDeadline(time.Now().Add(20*time.Second)))
		k, err := n.conn.Read(buf)
		require.NoError(n.t, err, "a notification came")
		msg := string(buf[:k])
		if !hasAnyPrefix(msg, skip) {
			return msg
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// TestSystemdUnit runs the shipped unit's ExecStart line as systemd would:
// the socket of wsgibridge@.socket on fd 3 (LISTEN_FDS), a notify socket,
// a watchdog. The daemon says READY=1 once its workers imported the app,
// keeps a status line, feeds the watchdog, says RELOADING=1 and READY=1
// around a reload, and STOPPING=1 when it stops.
func TestSystemdUnit(t *testing.T) {
	assert.Equal(t, "notify", unitLine(t, "wsgibridge@.service", "Type"))
	assert.Equal(t, "wsgibridge@%i.socket", unitLine(t, "wsgibridge@.service", "Requires"))
	assert.Equal(t, "/run/wsgibridge/%i.sock", unitLine(t, "wsgibridge@.socket", "ListenStream"))

	dir := t.TempDir()
	script := filepath.Join(dir, "mysite.wsgi")
	require.NoError(t, os.WriteFile(script, []byte("#!"+binary+"\napp = probe:application\nchdir = "+appsDir(t)+"\n"), 0o644))
	sock := filepath.Join(dir, "mysite.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	lf, err := l.(*net.UnixListener).File()
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	notify := filepath.Join(dir, "notify")
	sd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	require.NoError(t, err)
	defer sd.Close()
	n := &notifications{t: t, conn: sd}

	args := strings.Fields(unitLine(t, "wsgibridge@.service", "ExecStart"))
	require.Equal(t, "/usr/local/bin/wsgibridge", args[0])
	args[0] = binary
	for i, a := range args {
		a = strings.ReplaceAll(a, "${RUNTIME_DIRECTORY}", dir)
		a = strings.ReplaceAll(a, "/etc/wsgibridge/%i.wsgi", script)
		args[i] = strings.ReplaceAll(a, "%i", "mysite")
	}
	// sh replaces itself with wsgibridge, so $$ is the daemon's pid.
	cmd := exec.Command("sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"`, "sh"}, args...)...)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify, "WATCHDOG_USEC=1000000")
	d := startDaemonCmd(t, cmd)
	lf.Close()

	ready := n.next()
	assert.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS="), ready)
	assert.Contains(t, ready, "STATUS=2 workers (0 busy, 2 idle)")
	got, err := fcgiGet(t, "unix", sock, "/hello")
	require.NoError(t, err)
	assert.Contains(t, string(got), "Hello, world!")
	assert.Equal(t, "WATCHDOG=1\n", n.next("STATUS="), "the watchdog is fed")
	status := n.next("WATCHDOG=")
	assert.Regexp(t, `^STATUS=\d+ workers \(\d+ busy, \d+ idle\); requests served: 1\n$`, status)
	_, err = os.Stat(filepath.Join(dir, "status.sock"))
	assert.NoError(t, err, "the status socket in the private runtime folder")

	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	reloading := n.next("STATUS=", "WATCHDOG=")
	assert.Regexp(t, `^RELOADING=1\nMONOTONIC_USEC=\d+\n$`, reloading)
	assert.True(t, strings.HasPrefix(n.next("STATUS=", "WATCHDOG="), "READY=1\n"), "ready again once the new workers serve")

	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, "STOPPING=1\n", n.next("STATUS=", "WATCHDOG="))
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop")
	}
	assert.NoError(t, d.err)
	assert.NotContains(t, d.log.String(), "cannot tell systemd")
}

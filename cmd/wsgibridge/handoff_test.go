package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// apacheUser returns the uid and gid Apache runs CGI scripts as.
func apacheUser(t *testing.T) (int, int) {
	if os.Geteuid() != 0 {
		return os.Getuid(), os.Getgid()
	}
	u, err := user.Lookup("www-data")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// stampPid reads the pid of the daemon started for sock, from the stamp
// beside the socket ("PID MTIME").
func stampPid(t *testing.T, sock string) int {
	pid, ok := readStampPid(sock)
	require.True(t, ok, "no stamp for %s", sock)
	return pid
}

func readStampPid(sock string) (int, bool) {
	b, err := os.ReadFile(sock + ".stamp")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	return pid, err == nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestApacheHandOff(t *testing.T) {
	var run string
	changing := "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'%s']\n"
	a := startApache(t, map[string]string{
		"pooled":   "app = probe\nchdir = @DIR@/apps\npool = unix:@DIR@/run/pooled.sock\nspawn = yes\n",
		"idle":     "app = probe\nchdir = @DIR@/apps\npool = unix:@DIR@/run/idle.sock\nspawn = yes\nidle-timeout = 2s\nworkers = 1\n",
		"changing": "app = changing\nchdir = @DIR@/apps\npool = unix:@DIR@/run/changing.sock\nspawn = yes\n",
		"fallback": "app = probe\nchdir = @DIR@/apps\npool = unix:@DIR@/run/nothing.sock\n",
	})
	run = filepath.Join(a.dir, "run")
	// The pool folder belongs to the user Apache runs scripts as, and
	// only to them.
	uid, gid := apacheUser(t)
	require.NoError(t, os.Mkdir(run, 0o700))
	require.NoError(t, os.Chown(run, uid, gid))
	require.NoError(t, os.WriteFile(filepath.Join(a.dir, "apps", "changing.py"), []byte(fmt.Sprintf(changing, "v1")), 0o644))
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(run, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
		stamps, _ := filepath.Glob(filepath.Join(run, "*.stamp"))
		for _, s := range stamps {
			if pid, ok := readStampPid(strings.TrimSuffix(s, ".stamp")); ok {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	sock := filepath.Join(run, "pooled.sock")

	t.Run("20 simultaneous first requests start one daemon", func(t *testing.T) {
		var wg sync.WaitGroup
		pids := make(chan string, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, body := a.do(t, "GET", "/pooled/pid", nil)
				assert.Equal(t, 200, resp.StatusCode)
				pids <- body
			}()
		}
		wg.Wait()
		close(pids)
		seen := map[string]bool{}
		for p := range pids {
			seen[p] = true
		}
		assert.LessOrEqual(t, len(seen), 2, "the pids of one daemon's two workers: %v", seen)
		assert.Equal(t, 1, strings.Count(a.errorLog(t), "started the pool daemon"), a.errorLog(t))
		assert.True(t, alive(stampPid(t, sock)))
	})

	t.Run("later requests reuse the daemon", func(t *testing.T) {
		daemon := stampPid(t, sock)
		for i := 0; i < 5; i++ {
			resp, body := a.do(t, "GET", "/pooled/hello", nil)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "Hello, world!", body)
		}
		assert.Equal(t, daemon, stampPid(t, sock))
		_, body := a.do(t, "GET", "/pooled/environ", nil)
		assert.Contains(t, body, "SCRIPT_NAME=/pooled\n", "SCRIPT_NAME as Apache sent it")
		assert.Contains(t, body, "PATH_INFO=/environ\n")
		assert.NotContains(t, body, "HTTP_PROXY")
	})

	t.Run("10 MiB POST and a streamed response cross the hand-off", func(t *testing.T) {
		payload := bytes.Repeat([]byte("hand-off "), (10<<20)/9)
		resp, body := a.do(t, "POST", "/pooled/echo", bytes.NewReader(payload))
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, sha256.Sum256(payload), sha256.Sum256([]byte(body)))
		gate := filepath.Join(a.dir, "gates", "handoff")
		assertStreamed(t, a.base+"/pooled/stream", gate)
	})

	t.Run("a killed daemon is replaced on the next request", func(t *testing.T) {
		old := stampPid(t, sock)
		require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
		require.Eventually(t, func() bool { return !alive(old) || isZombie(old) }, 5*time.Second, 10*time.Millisecond)
		resp, body := a.do(t, "GET", "/pooled/hello", nil)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "Hello, world!", body)
		assert.NotEqual(t, old, stampPid(t, sock))
		assert.True(t, alive(stampPid(t, sock)))
	})

	t.Run("a changed app file is picked up on the next request", func(t *testing.T) {
		_, body := a.do(t, "GET", "/changing/", nil)
		assert.Equal(t, "v1", body)
		daemon := stampPid(t, filepath.Join(run, "changing.sock"))
		app := filepath.Join(a.dir, "apps", "changing.py")
		require.NoError(t, os.WriteFile(app, []byte(fmt.Sprintf(changing, "v2")), 0o644))
		later := time.Now().Add(2 * time.Second)
		require.NoError(t, os.Chtimes(app, later, later))
		_, body = a.do(t, "GET", "/changing/", nil)
		assert.Equal(t, "v2", body)
		assert.Equal(t, daemon, stampPid(t, filepath.Join(run, "changing.sock")), "the daemon reloaded its workers")
	})

	t.Run("a changed script replaces the daemon", func(t *testing.T) {
		changingSock := filepath.Join(run, "changing.sock")
		old := stampPid(t, changingSock)
		script := filepath.Join(a.dir, "cgi-bin", "changing.wsgi")
		later := time.Now().Add(3 * time.Second)
		require.NoError(t, os.Chtimes(script, later, later))
		_, body := a.do(t, "GET", "/changing/", nil)
		assert.Equal(t, "v2", body)
		assert.NotEqual(t, old, stampPid(t, changingSock))
		assert.Eventually(t, func() bool { return !alive(old) || isZombie(old) }, 10*time.Second, 20*time.Millisecond, "the old daemon exits")
	})

	t.Run("the daemon exits after its idle timeout", func(t *testing.T) {
		resp, _ := a.do(t, "GET", "/idle/hello", nil)
		assert.Equal(t, 200, resp.StatusCode)
		daemon := stampPid(t, filepath.Join(run, "idle.sock"))
		assert.Len(t, children(t, daemon), 1, "workers = 1 reaches the daemon")
		assert.Eventually(t, func() bool { return !alive(daemon) || isZombie(daemon) }, 15*time.Second, 50*time.Millisecond)
	})

	t.Run("an unreachable pool falls back to one-shot", func(t *testing.T) {
		resp, body := a.do(t, "GET", "/fallback/hello", nil)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "Hello, world!", body)
		a.waitLog(t, "the pool could not be used; serving this request one-shot")
	})
}

// isZombie reports whether pid has exited but not been reaped yet (its
// parent, the CGI process, is gone; init reaps it soon).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

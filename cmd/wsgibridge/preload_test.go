package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gone reports whether pid has exited: no such process, or a zombie
// waiting for a parent that is not ours.
func gone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH || isZombie(pid)
}

// TestNginxPreload: --preload through nginx's recommended block, with
// Flask and with Django, under POSTs while workers are killed, the fork server is killed, the
// app is reloaded and workers recycle after their max requests: at most
// the request each killed worker ran fails, every other body comes back
// whole, and once the daemon stops, by SIGTERM or by kill -9, nothing it
// started is left.
func TestNginxPreload(t *testing.T) {
	python := needPythonModules(t, "flask", "django")
	apps := appsDir(t)
	dir := t.TempDir()
	flaskSock := filepath.Join(dir, "flask.sock")
	djangoSock := filepath.Join(dir, "django.sock")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + djangoSock, "FLASK": "unix:" + flaskSock})
	start := func(t *testing.T, name, sock, mount, spec string) (*daemon, *statusClient) {
		status := filepath.Join(dir, name+"-status.sock")
		d := startDaemon(t, "fastcgi", "--preload", "--bind", "unix:"+sock, "--mount", mount, "--workers", "2",
			"--max-requests", "50", "--status", "unix:"+status, "--chdir", apps, "--python", python, spec)
		return d, newStatusClient(t, status)
	}

	for _, app := range []struct{ name, sock, mount, spec string }{
		{"flask", flaskSock, "/flask", "flaskapp:application"},
		{"django", djangoSock, "/", "djangoapp:application"},
	} {
		t.Run(app.name, func(t *testing.T) {
			d, c := start(t, app.name, app.sock, app.mount, app.spec)
			seen := map[int]bool{}
			look := func() (workers, forkers []int) {
				doc := c.doc("/status?full")
				for _, r := range doc.Rows {
					workers = append(workers, r.Pid)
				}
				for _, pid := range append(slices.Clone(workers), doc.ForkServers...) {
					seen[pid] = true
				}
				return workers, doc.ForkServers
			}
			l := startPosts(t, n.base1+strings.TrimSuffix(app.mount, "/")+"/echo", 4, 16<<10)
			kills := 0
			killWorker := func() {
				time.Sleep(300 * time.Millisecond)
				if workers, _ := look(); len(workers) > 0 && syscall.Kill(workers[0], syscall.SIGKILL) == nil {
					kills++
				}
			}
			for range 3 {
				killWorker()
			}

			_, forkers := look()
			require.Len(t, forkers, 1)
			require.NoError(t, syscall.Kill(forkers[0], syscall.SIGKILL))
			require.Eventually(t, func() bool {
				_, now := look()
				return len(now) == 1 && now[0] != forkers[0]
			}, 30*time.Second, 50*time.Millisecond, "another fork server starts")
			killWorker()

			require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
			require.Eventually(t, func() bool { return strings.Contains(d.log.String(), `msg=reloaded`) },
				30*time.Second, 20*time.Millisecond, "the reload under load")
			time.Sleep(500 * time.Millisecond)
			look()

			ok, failed, statuses := l.finish()
			doc := c.doc("/status")
			t.Logf("%d POSTs echoed, %d failed %v, %d workers killed, exits %v", ok, failed, statuses, kills, doc.WorkerExits)
			assert.Greater(t, ok, 0)
			assert.LessOrEqual(t, failed, kills, "at most the request each killed worker ran")
			assert.Zero(t, statuses[-1], "no body comes back other than it went")
			assert.NotZero(t, doc.WorkerExits["max-requests"], "workers recycle after their 50 requests")
			assert.Equal(t, uint64(1), doc.Reloads.Count)
			assert.Equal(t, 3, strings.Count(d.log.String(), "the fork server imported the app"),
				"an import at the start, after the fork server's death, and at the reload; none per worker")

			d.stop(t, syscall.SIGTERM)
			for pid := range seen {
				assert.True(t, gone(pid), "process %d outlived the daemon", pid)
			}
		})
	}

	t.Run("kill -9 of the daemon takes its workers and fork server", func(t *testing.T) {
		d, c := start(t, "flask", flaskSock, "/flask", "flaskapp:application")
		status, body := get(t, n.base1+"/flask/")
		require.Equal(t, 200, status, body)
		doc := c.doc("/status?full")
		pids := slices.Clone(doc.ForkServers)
		for _, r := range doc.Rows {
			pids = append(pids, r.Pid)
		}
		require.Len(t, pids, 3)
		d.stop(t, syscall.SIGKILL)
		for _, pid := range pids {
			assert.Eventually(t, func() bool { return gone(pid) }, 10*time.Second, 20*time.Millisecond, "process %d outlived the daemon", pid)
		}
	})
}

// TestHTTPModePreload: the http mode's workers forked from one import
// serve as started ones do, and a killed one is replaced by a fork.
func TestHTTPModePreload(t *testing.T) {
	python := needPythonModules(t, "django")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	status := filepath.Join(t.TempDir(), "status.sock")
	d := startDaemon(t, "http", "--preload", "--bind", addr, "--workers", "2", "--status", "unix:"+status,
		"--chdir", appsDir(t), "--python", python, "djangoapp:application")
	c := newStatusClient(t, status)
	code, body := get(t, "http://"+addr+"/page/7")
	assert.Equal(t, 200, code)
	assert.Equal(t, "Page 7 at /page/7", body)
	resp, body, err := httpDo(t, "POST", "http://"+addr+"/echo", strings.NewReader("posted"))
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "posted", body)

	doc := c.doc("/status?full")
	require.Len(t, doc.ForkServers, 1)
	require.Len(t, doc.Rows, 2)
	killed := doc.Rows[0].Pid
	require.NoError(t, syscall.Kill(killed, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		rows := c.doc("/status?full").Rows
		return len(rows) == 2 && rows[0].Pid != killed && rows[1].Pid != killed
	}, 10*time.Second, 10*time.Millisecond, "the killed worker is replaced")
	for range 4 {
		code, body = get(t, "http://"+addr+"/")
		assert.Equal(t, 200, code)
		assert.Equal(t, "Hello from Django at /", body)
	}
	assert.Equal(t, 1, strings.Count(d.log.String(), "the fork server imported the app"), "one import, the replacement forked")
}

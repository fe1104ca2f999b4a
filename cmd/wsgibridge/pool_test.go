package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fetch is one GET's outcome.
type fetch struct {
	status int
	body   string
	retry  string // Retry-After
	took   time.Duration
	err    error
}

func fetchURL(url string) fetch {
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		return fetch{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fetch{status: resp.StatusCode, body: string(b), retry: resp.Header.Get("Retry-After"), took: time.Since(start), err: err}
}

// fetchAll GETs url n times at once and returns the outcomes.
func fetchAll(url string, n int) []fetch {
	out := make([]fetch, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = fetchURL(url)
		}()
	}
	wg.Wait()
	return out
}

// An elastic pool through nginx: it grows to its most under a burst of
// slow requests and shrinks back to its least; an on-demand one runs no
// Python until the first request, and serves it.
func TestNginxElasticPool(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1:3", "--worker-idle", "1s", "--chdir", appsDir(t), "probe")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	require.Len(t, d.workerPids(t), 1)

	grown, done := make(chan int, 1), make(chan struct{})
	go func() {
		most := 0
		for {
			select {
			case <-done:
				grown <- most
				return
			case <-time.After(20 * time.Millisecond):
				most = max(most, len(d.workerPids(t)))
			}
		}
	}()
	pids := map[string]bool{}
	out := fetchAll(n.base1+"/sleep-pid?2", 3)
	close(done)
	for _, f := range out {
		require.NoError(t, f.err)
		require.Equal(t, 200, f.status)
		pids[f.body] = true
	}
	assert.Len(t, pids, 3, "the three ran side by side, each on a worker of its own")
	assert.Equal(t, 3, <-grown, "the pool grew to its most")
	require.Eventually(t, func() bool { return len(d.workerPids(t)) == 1 }, 20*time.Second, 100*time.Millisecond,
		"and shrank back to its least")
	assert.Contains(t, d.log.String(), "retiring an idle worker")

	onDemand := filepath.Join(dir, "ondemand.sock")
	od := startDaemon(t, "fastcgi", "--bind", "unix:"+onDemand, "--workers", "0:2", "--chdir", appsDir(t), "probe")
	n2 := startNginx(t, map[string]string{"PROBE": "unix:" + onDemand})
	assert.Empty(t, od.workerPids(t), "no Python runs before the first request")
	f := fetchURL(n2.base1 + "/hello")
	require.NoError(t, f.err)
	assert.Equal(t, 200, f.status)
	assert.Equal(t, "Hello, world!", f.body)
	assert.Len(t, od.workerPids(t), 1)
}

// Overload through nginx: with one worker and a backlog of one, the
// excess of twelve slow requests gets 503 at once; the waiting one is
// served; none hangs. A wait past --queue-timeout gets 503 too.
func TestNginxOverload(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--backlog", "1", "--mount", "/stock-unix", "--chdir", appsDir(t), "probe")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock, "STOCKUNIX": "unix:" + sock})
	start := time.Now()
	out := fetchAll(n.base2+"/stock-unix/sleep?1", 12)
	assert.Less(t, time.Since(start), 10*time.Second, "none hangs")
	var ok, refused int
	for _, f := range out {
		require.NoError(t, f.err)
		switch f.status {
		case 200:
			ok++
		case 503:
			refused++
			assert.Less(t, f.took, time.Second+500*time.Millisecond, "refused at once")
			assert.Equal(t, "1", f.retry)
			assert.Contains(t, f.body, "every worker is busy")
		default:
			t.Errorf("status %d: %s", f.status, f.body)
		}
	}
	t.Logf("12 slow requests, 1 worker, backlog 1: %d served, %d answered 503", ok, refused)
	assert.Equal(t, 2, ok, "the one running and the one waiting")
	assert.Equal(t, 10, refused)

	qsock := filepath.Join(dir, "queue.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+qsock, "--workers", "1", "--queue-timeout", "1s", "--mount", "/stock-unix", "--chdir", appsDir(t), "probe")
	nq := startNginx(t, map[string]string{"PROBE": "unix:" + qsock, "STOCKUNIX": "unix:" + qsock})
	out = fetchAll(nq.base2+"/stock-unix/sleep?3", 2)
	statuses := []int{out[0].status, out[1].status}
	assert.ElementsMatch(t, []int{200, 503}, statuses, "the one that waited past the queue timeout got 503")
	for _, f := range out {
		if f.status == 503 {
			assert.Less(t, f.took, 2500*time.Millisecond, "at the timeout, not when the worker freed")
		}
	}
}

// A crash storm: an app that kills its worker in every request. The
// daemon stays up, says so once, shows itself degraded, and recovers when
// the app is fixed and reloaded.
func TestCrashStormRecovers(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "crashing.py")
	require.NoError(t, os.WriteFile(app, []byte("import os, signal\n\n\ndef application(environ, start_response):\n"+
		"    os.kill(os.getpid(), signal.SIGKILL)\n"), 0o644))
	sock := filepath.Join(dir, "app.sock")
	status := filepath.Join(dir, "status.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--status", "unix:"+status, "--chdir", dir, "crashing")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	c := newStatusClient(t, status)
	deadline := time.Now().Add(30 * time.Second)
	for c.doc("/status").Degraded == nil {
		require.True(t, time.Now().Before(deadline), "no storm:\n%s", d.log.String())
		f := fetchURL(n.base1 + "/")
		require.NoError(t, f.err)
		assert.Equal(t, 502, f.status)
		time.Sleep(100 * time.Millisecond)
	}
	code, body := c.get("/ping")
	assert.Equal(t, 503, code)
	assert.Contains(t, body, "degraded: workers keep dying young")
	assert.Equal(t, 1, strings.Count(d.log.String(), "workers keep dying young"))
	require.NoError(t, syscall.Kill(d.cmd.Process.Pid, 0), "the daemon stays up")

	require.NoError(t, os.WriteFile(app, []byte("def application(environ, start_response):\n"+
		"    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'fixed']\n"), 0o644))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		f := fetchURL(n.base1 + "/")
		return f.err == nil && f.status == 200 && f.body == "fixed"
	}, 60*time.Second, 200*time.Millisecond, "the fixed app serves after the reload:\n%s", d.log.String())
	require.Eventually(t, func() bool { return c.doc("/status").Degraded == nil }, 10*time.Second, 100*time.Millisecond)
	code, _ = c.get("/ping")
	assert.Equal(t, 200, code)
	assert.Contains(t, d.log.String(), "the crash storm is over")
}

// Two daemons behind one nginx, as two machines: SIGKILL one under load
// and no GET fails, nginx going to the other; restarted, it takes traffic
// again.
func TestNginxTwoHosts(t *testing.T) {
	addr1 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	addr2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startHost := func(addr string) *daemon {
		return startDaemon(t, "fastcgi", "--bind", addr, "--workers", "2", "--chdir", appsDir(t), "probe")
	}
	d1, d2 := startHost(addr1), startHost(addr2)
	n := startNginxConf(t, "twohosts.conf", map[string]string{"HOST1": addr1, "HOST2": addr2})

	var sent, failed atomic.Int64
	var mu sync.Mutex
	pids := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f := fetchURL(n.base1 + "/pid")
				sent.Add(1)
				if f.err != nil || f.status != 200 {
					failed.Add(1)
					t.Logf("a GET failed: %d %v %.80s", f.status, f.err, f.body)
					continue
				}
				mu.Lock()
				pids[f.body] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	host1 := d1.workerPids(t)
	require.NoError(t, d1.cmd.Process.Signal(syscall.SIGKILL))
	<-d1.exited
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("one of two hosts killed under load: %d GETs, %d failed", sent.Load(), failed.Load())
	assert.Zero(t, failed.Load(), "of %d GETs", sent.Load())
	assert.Greater(t, sent.Load(), int64(50))
	for _, pid := range host1 {
		assert.Eventually(t, func() bool { return syscall.Kill(pid, 0) == syscall.ESRCH }, 5*time.Second, 10*time.Millisecond,
			"worker %d of the killed daemon is gone with it", pid)
	}

	// Restarted, it takes traffic again once nginx tries it (fail_timeout).
	d1 = startHost(addr1)
	again := map[string]bool{}
	for _, pid := range d1.workerPids(t) {
		again[strconv.Itoa(pid)] = true
	}
	require.Eventually(t, func() bool {
		f := fetchURL(n.base1 + "/pid")
		return f.err == nil && again[f.body]
	}, 20*time.Second, 50*time.Millisecond, "the restarted host serves again")
	served2 := false
	for _, pid := range d2.workerPids(t) {
		served2 = served2 || pids[strconv.Itoa(pid)]
	}
	assert.True(t, served2, "the other host served meanwhile")
}

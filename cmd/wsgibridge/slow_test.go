package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the README's recommended nginx block (an upstream with
// keepalive, fastcgi_keep_conn on) in front of a daemon, and check that
// every request gets the same watching as a worker's first: a slow
// request holds up no quick one, and a client that leaves frees its
// worker, however many slow requests the worker served before.

// TestNginxQuickRequestsBesideSlow: once every worker has served slow
// requests, quick requests sent while a slow one runs all end before it,
// whatever --timeout is.
func TestNginxQuickRequestsBesideSlow(t *testing.T) {
	apps := appsDir(t)
	sock := filepath.Join(t.TempDir(), "probe.sock")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	for _, timeout := range []string{"", "5s", "0"} {
		name := "default --timeout"
		args := []string{"fastcgi", "--bind", "unix:" + sock, "--workers", "2", "--chdir", apps}
		if timeout != "" {
			name = "--timeout " + timeout
			args = append(args, "--timeout", timeout)
		}
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t, append(args, "probe")...)
			workers := d.workerPids(t)
			require.Len(t, workers, 2)
			// Every worker serves requests that run past the 20 ms after
			// which a request counts as slow, and leaves its alarm armed.
			seen := map[string]bool{}
			for round := 0; len(seen) < 2 && round < 50; round++ {
				for _, pid := range concurrentGets(t, n.base1+"/sleep-pid?0.05", 4) {
					seen[pid.body] = true
				}
			}
			require.Len(t, seen, 2, "both workers served slow requests")
			for round := 0; round < 4; round++ {
				slowEnd := make(chan time.Time, 1)
				go func() {
					status, _ := get(t, n.base1+"/sleep?2")
					assert.Equal(t, 200, status)
					slowEnd <- time.Now()
				}()
				time.Sleep(300 * time.Millisecond) // the slow request runs
				quick := concurrentGets(t, n.base1+"/sleep-pid?0.007", 8)
				end := <-slowEnd
				for i, q := range quick {
					assert.Equal(t, 200, q.status)
					assert.True(t, q.done.Before(end), "round %d: quick request %d waited for the slow one (it ended %v after it)",
						round, i, q.done.Sub(end))
				}
			}
		})
	}
}

// gotten is one response of concurrentGets.
type gotten struct {
	status int
	body   string
	done   time.Time
}

// concurrentGets sends n GETs of url at once and returns their responses.
func concurrentGets(t *testing.T, url string, n int) []gotten {
	t.Helper()
	out := make([]gotten, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := get(t, url)
			out[i] = gotten{status, body, time.Now()}
		}()
	}
	wg.Wait()
	return out
}

// TestNginxClientLeaves: a client that leaves a long request frees the
// worker at once, on its first, second and third such request, for an
// app asleep in time.sleep and for one streaming chunks; the access log
// gives each one line with nginx's 499 and what was sent, and nothing is
// logged as the app's error.
func TestNginxClientLeaves(t *testing.T) {
	apps := appsDir(t)
	sock := filepath.Join(t.TempDir(), "probe.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--access-log", "--chdir", apps, "probe")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	worker := d.workerPids(t)
	require.Len(t, worker, 1)

	for _, path := range []string{"/sleep?10", "/drip?10"} {
		for i := 1; i <= 3; i++ {
			leave(t, n.base1+path, 500*time.Millisecond)
			start := time.Now()
			status, body := get(t, n.base1+"/pid")
			took := time.Since(start)
			assert.Equal(t, 200, status)
			assert.Equal(t, fmt.Sprint(worker[0]), body, "the same worker serves on")
			// The app would run 9.5 s more if nobody stopped it.
			assert.Less(t, took, 5*time.Second, "%s, time %d: the worker was held after its client left", path, i)
		}
	}
	resp, _, err := httpDo(t, "HEAD", n.base1+"/big?20", nil)
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)

	log := func() string { return d.log.String() }
	require.Eventually(t, func() bool { return strings.Contains(log(), "method=HEAD") }, 10*time.Second, 10*time.Millisecond, log())
	for _, path := range []string{"/sleep?10", "/drip?10"} {
		left := regexp.MustCompile(`msg=request pid=\d+ method=GET uri=`+regexp.QuoteMeta(path)+` status=(\d+) bytes=(\d+) `).FindAllStringSubmatch(log(), -1)
		require.Len(t, left, 3, "one access-log line per request the client left: %s", log())
		for _, m := range left {
			assert.Equal(t, "499", m[1], "the access log says the client went away, as nginx does")
			if path == "/sleep?10" {
				assert.Equal(t, "0", m[2], "nothing was sent")
			}
		}
	}
	assert.Regexp(t, `method=HEAD uri=/big\?20 status=200 bytes=0 `, log(), "a HEAD response sends no body")
	assert.Equal(t, 3, strings.Count(log(), "probe: close() called"), "the streaming app's iterable is closed each time")
	for _, noise := range []string{"level=ERROR", "level=WARN", "app raised", "Broken pipe", "Traceback"} {
		assert.NotContains(t, log(), noise, "a client that leaves is no app error")
	}
}

// leave starts a GET of url and goes away after wait, as a client that
// gives up does.
func leave(t *testing.T, url string, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	require.NoError(t, err)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	require.ErrorIs(t, err, context.DeadlineExceeded, "the request was still running when the client left")
}

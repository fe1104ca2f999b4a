package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statusClient reads a daemon's status listener on a unix socket.
type statusClient struct {
	t    *testing.T
	http *http.Client
}

func newStatusClient(t *testing.T, sock string) *statusClient {
	return &statusClient{t: t, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (c *statusClient) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get("http://status" + path)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, string(b)
}

// doc is the part of the status document the tests read.
type doc struct {
	Workers struct {
		Min, Max, Size, Alive, Busy, Idle int
	}
	Requests struct {
		Served     uint64
		InProgress int               `json:"in_progress"`
		ByStatus   map[string]uint64 `json:"by_status"`
	}
	ListenQueue *struct{ Now, Max int } `json:"listen_queue"`
	WorkerExits map[string]uint64       `json:"worker_exits"`
	Reloads     struct{ Count uint64 }
	Degraded    *struct{ Deaths int } `json:"degraded"`
	ForkServers []int                 `json:"fork_servers"`
	Rows        []struct {
		Pid     int
		State   string
		Request string
	} `json:"worker_rows"`
}

func (c *statusClient) doc(path string) doc {
	c.t.Helper()
	code, body := c.get(path)
	require.Equal(c.t, 200, code, body)
	var d doc
	require.NoError(c.t, json.Unmarshal([]byte(body), &d), body)
	return d
}

// TestNginxStatus runs a daemon behind nginx with its status listener
// and the PHP-FPM style paths, and checks what they tell against what a
// test app that blocks on purpose is doing: busy and idle workers,
// requests in progress, the listen queue, /ping; that the counters
// survive a reload and a worker's kill -9; and that no query string,
// cookie or Authorization shows anywhere.
func TestNginxStatus(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	statusSock := filepath.Join(dir, "status.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "2", "--status", "unix:"+statusSock,
		"--status-path", "/wsgibridge-status", "--ping-path", "/wsgibridge-ping", "--chdir", appsDir(t), "probe")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	c := newStatusClient(t, statusSock)

	for i := 0; i < 5; i++ {
		status, _ := get(t, n.base1+"/hello")
		require.Equal(t, 200, status)
	}
	st := c.doc("/status")
	assert.Equal(t, [3]int{2, 2, 2}, [3]int{st.Workers.Min, st.Workers.Max, st.Workers.Size})
	assert.Equal(t, 2, st.Workers.Idle)
	assert.Equal(t, uint64(5), st.Requests.Served)
	assert.Equal(t, uint64(5), st.Requests.ByStatus["2xx"])
	code, body := c.get("/ping")
	assert.Equal(t, 200, code)
	assert.Equal(t, "pong\n", body)

	// Both workers block, with secrets in the query and headers.
	gate := filepath.Join(dir, "gate")
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := httpDo(t, "GET", n.base1+"/gate?"+gate+"&token=QUERYSECRET", nil,
				"Cookie", "session=COOKIESECRET", "Authorization", "Bearer AUTHSECRET")
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "passed", body)
		}()
	}
	require.Eventually(t, func() bool {
		d := c.doc("/status?full")
		return d.Workers.Busy == 2 && d.Requests.InProgress == 2 && d.Rows[0].Request != "" && d.Rows[1].Request != ""
	}, 10*time.Second, 20*time.Millisecond, "both workers busy, each row with its request")
	full := c.doc("/status?full")
	for _, row := range full.Rows {
		assert.Equal(t, "busy", row.State)
		assert.Equal(t, "GET /gate", row.Request, "the path, never the query")
	}
	code, _ = c.get("/ping")
	assert.Equal(t, 503, code, "no worker can take a request")
	// Connections nobody accepts wait in the listen queue.
	for i := 0; i < 3; i++ {
		conn, err := net.Dial("unix", sock)
		require.NoError(t, err)
		defer conn.Close()
	}
	require.Eventually(t, func() bool { q := c.doc("/status").ListenQueue; return q != nil && q.Now >= 3 },
		5*time.Second, 20*time.Millisecond)
	var everything strings.Builder
	for _, path := range []string{"/status?full", "/metrics", "/", "/stacks"} {
		_, body := c.get(path)
		everything.WriteString(body)
	}
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	wg.Wait()
	for _, secret := range []string{"QUERYSECRET", "COOKIESECRET", "AUTHSECRET"} {
		assert.NotContains(t, everything.String(), secret)
		assert.NotContains(t, d.log.String(), secret)
	}
	assert.Greater(t, c.doc("/status").ListenQueue.Max, 2, "the most seen stays")
	require.Eventually(t, func() bool { code, _ := c.get("/ping"); return code == 200 }, 5*time.Second, 20*time.Millisecond)

	// Through nginx, as PHP-FPM's pm.status_path and ping.path.
	status, body := get(t, n.base1+"/wsgibridge-ping")
	assert.Equal(t, 200, status)
	assert.Equal(t, "pong\n", body)
	for i := 0; i < 2; i++ {
		status, body = get(t, n.base1+"/wsgibridge-status")
		assert.Equal(t, 200, status)
		assert.Contains(t, body, `"served"`)
		assert.NotContains(t, body, "worker_rows")
	}
	status, body = get(t, n.base1+"/wsgibridge-status?full")
	assert.Equal(t, 200, status)
	var viaNginx doc
	require.NoError(t, json.Unmarshal([]byte(body), &viaNginx), body)
	assert.Len(t, viaNginx.Rows, 2)
	assert.GreaterOrEqual(t, viaNginx.Requests.Served, uint64(7))

	// Counters never go backwards: a reload, then a worker killed.
	before := c.doc("/status").Requests.Served
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { s := c.doc("/status"); return s.Reloads.Count == 1 && s.WorkerExits["reload"] == 2 },
		20*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, c.doc("/status").Requests.Served, before)
	pids := d.workerPids(t)
	require.NotEmpty(t, pids)
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	require.Eventually(t, func() bool { return c.doc("/status").WorkerExits["crash"] == 1 }, 20*time.Second, 20*time.Millisecond)
	after := c.doc("/status")
	assert.GreaterOrEqual(t, after.Requests.Served, before)
	assert.GreaterOrEqual(t, after.Requests.ByStatus["2xx"], uint64(7))
	_, metrics := c.get("/metrics")
	assert.Regexp(t, `wsgibridge_worker_exits_total\{cause="crash"\} 1\n`, metrics)
	assert.Regexp(t, `wsgibridge_reloads_total 1\n`, metrics)
}

// TestSlowLog: a request past --slow-log gets one entry naming the app's
// function and line, whether the app sleeps in C, runs Python, or waits
// on a lock in a second thread; the request ends normally; and /stacks,
// while two workers are busy, names both apps' frames.
func TestSlowLog(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	statusSock := filepath.Join(dir, "status.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "2", "--slow-log", "300ms",
		"--status", "unix:"+statusSock, "--chdir", appsDir(t), "probe")
	for _, tc := range []struct{ path, frame, body string }{
		{"/sleep?1", `in sleep`, "slept"},
		{"/spin?1", `in spin`, "spun"},
		{"/lock-wait?1", `in wait_on_lock`, "unlocked"},
	} {
		got, err := fcgiGet(t, "unix", sock, tc.path)
		require.NoError(t, err)
		assert.Contains(t, string(got), "\r\n\r\n"+tc.body, tc.path)
		path := strings.SplitN(tc.path, "?", 2)[0]
		entry := regexp.MustCompile(`msg="slow request" pid=\d+ request="GET ` + regexp.QuoteMeta(path) + `" elapsed=[^ ]+ stack="([^"\\]|\\.)*"`)
		require.Eventually(t, func() bool { return len(entry.FindAllString(d.log.String(), -1)) == 1 },
			10*time.Second, 20*time.Millisecond, d.log.String())
		found := entry.FindString(d.log.String())
		assert.Regexp(t, `probe\.py\\", line \d+ `+tc.frame, found, "the app's function and line")
	}
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, 3, strings.Count(d.log.String(), `msg="slow request"`), "one entry per slow request")

	var wg sync.WaitGroup
	for _, path := range []string{"/sleep?2", "/spin?2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := fcgiGet(t, "unix", sock, path)
			assert.NoError(t, err)
		}()
	}
	c := newStatusClient(t, statusSock)
	require.Eventually(t, func() bool { return c.doc("/status").Workers.Busy == 2 }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // past the 20 ms after which a worker tells what it runs
	_, stacks := c.get("/stacks")
	assert.Regexp(t, `pid \d+: GET /sleep, running for`, stacks)
	assert.Regexp(t, `pid \d+: GET /spin, running for`, stacks)
	assert.Contains(t, stacks, " in sleep\n")
	assert.Contains(t, stacks, " in spin\n")
	wg.Wait()
}

// TestStatusListenerRefusesPublic: a status address other hosts reach is
// refused at start, unless --status-public says so.
func TestStatusListenerRefusesPublic(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	out, err := exec.Command(binary, "fastcgi", "--bind", "unix:"+sock, "--status", fmt.Sprintf("0.0.0.0:%d", freePort(t)),
		"--chdir", appsDir(t), "probe").CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(out))
	assert.Equal(t, exitUsage, ee.ExitCode())
	assert.Contains(t, string(out), "others can reach this address")
	assert.Contains(t, string(out), "--status-public")

	port := freePort(t)
	startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--status", fmt.Sprintf("0.0.0.0:%d", port), "--status-public",
		"--chdir", appsDir(t), "probe")
	status, body := get(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/ping")
	assert.Equal(t, 200, status)
	assert.Equal(t, "pong\n", body)
}

// TestHTTPModeStatus: the http mode's status counts what its pool serves
// through the gateway, and its slow log logs a slow request's stack.
func TestHTTPModeStatus(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	statusSock := filepath.Join(t.TempDir(), "status.sock")
	d := startDaemon(t, "http", "--bind", addr, "--workers", "2", "--status", "unix:"+statusSock, "--slow-log", "300ms",
		"--chdir", appsDir(t), "probe")
	c := newStatusClient(t, statusSock)
	for _, path := range []string{"/hello", "/hello", "/missing"} {
		get(t, "http://"+addr+path)
	}
	done := make(chan int, 1)
	go func() {
		status, _ := get(t, "http://"+addr+"/sleep?1")
		done <- status
	}()
	require.Eventually(t, func() bool {
		d := c.doc("/status?full")
		for _, row := range d.Rows {
			if row.State == "busy" && row.Request == "GET /sleep" {
				return true
			}
		}
		return false
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, 200, <-done)
	st := c.doc("/status")
	assert.Equal(t, uint64(4), st.Requests.Served)
	assert.Equal(t, uint64(3), st.Requests.ByStatus["2xx"])
	assert.Equal(t, uint64(1), st.Requests.ByStatus["4xx"])
	assert.Contains(t, d.log.String(), `msg="slow request"`)
	assert.Regexp(t, `request="GET /sleep" elapsed=[^ ]+ stack="(?:[^"\\]|\\.)*probe\.py\\", line \d+ in sleep`, d.log.String())

	out, err := exec.Command(binary, "http", "--bind", addr, "--status-path", "/s", "probe").CombinedOutput()
	assert.Error(t, err)
	assert.Contains(t, string(out), "--status-path and --ping-path are for fastcgi")
}

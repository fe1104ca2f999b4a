package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
	"github.com/yookoala/gofast"
)

func TestApacheProxyFCGI(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, "fastcgi", "--bind", addr, "--mount", "/pf", "--chdir", appsDir(t), "probe:validated")
	a := startApacheConf(t, "proxy_fcgi.conf", map[string]string{"UPSTREAM": addr}, nil)

	resp, body := a.do(t, "GET", "/pf/hello", nil)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "Hello, world!", body)
	_, body = a.do(t, "GET", "/pf/environ", nil, "Authorization", "Bearer token-17")
	assert.Contains(t, body, "SCRIPT_NAME=/pf\n")
	assert.Contains(t, body, "PATH_INFO=/environ\n")
	assert.Contains(t, body, "\nHTTP_AUTHORIZATION=Bearer token-17\n", "the app sees Authorization (token logins)")

	payload := bytes.Repeat([]byte("apache mod_proxy_fcgi "), 50000)
	resp, body = a.do(t, "POST", "/pf/echo", bytes.NewReader(payload))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, string(payload), body)

	// A chunked request: Apache streams it with no CONTENT_LENGTH, and
	// the body runs to the empty FCGI_STDIN.
	assert.Equal(t, "12", postChunked(t, a.base+"/pf/count"))
}

// cgiFcgi runs libfcgi's cgi-fcgi as a FastCGI client.
func cgiFcgi(t *testing.T, connect, method, path, body string) string {
	t.Helper()
	bin := need(t, "cgi-fcgi")
	cmd := exec.Command(bin, "-bind", "-connect", connect)
	cmd.Env = []string{"REQUEST_METHOD=" + method, "SERVER_PROTOCOL=HTTP/1.1", "SCRIPT_NAME=" + path,
		"REQUEST_URI=" + path, "QUERY_STRING=", "CONTENT_LENGTH=" + strconv.Itoa(len(body))}
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.Output()
	require.NoError(t, err)
	return string(out)
}

func TestCgiFcgiClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--chdir", appsDir(t), "probe:validated")
	out := cgiFcgi(t, sock, "GET", "/hello", "")
	assert.Equal(t, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello, world!", out)
	body := strings.Repeat("libfcgi ", 20000)
	out = cgiFcgi(t, sock, "POST", "/echo", body)
	assert.True(t, strings.HasSuffix(out, "\r\n\r\n"+body))
}

// gofastGet sends a GET of path (as SCRIPT_NAME, as nginx's stock
// fastcgi_params does) to the FastCGI server on the unix socket sock,
// through our FastCGI client library, and returns the parsed response.
func gofastGet(t *testing.T, sock, path string) *httptest.ResponseRecorder {
	t.Helper()
	cl, err := gofast.SimpleClientFactory(gofast.SimpleConnFactory("unix", sock))()
	require.NoError(t, err)
	defer cl.Close()
	resp, err := cl.Do(&gofast.Request{Role: gofast.RoleResponder, Stdin: io.NopCloser(strings.NewReader("")),
		Params: map[string]string{"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": path}})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	require.NoError(t, resp.WriteTo(rec, io.Discard))
	return rec
}

// TestInheritedSocket starts the daemon as spawn-fcgi does: the listening
// socket on fd 0 and no --bind.
func TestInheritedSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "inherited.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	ul := l.(*net.UnixListener)
	f, err := ul.File()
	require.NoError(t, err)
	ul.SetUnlinkOnClose(false) // the daemon listens on the socket file now
	l.Close()
	cmd := exec.Command(binary, "fastcgi", "--chdir", appsDir(t), "probe")
	cmd.Stdin = f
	startDaemonCmd(t, cmd)
	f.Close()

	rec := gofastGet(t, sock, "/hello")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "Hello, world!", rec.Body.String())
	stdin, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", cmd.Process.Pid))
	require.NoError(t, err)
	assert.Equal(t, os.DevNull, stdin, "fd 0 gave the listening socket up, so no child takes it for its stdin")
}

// TestLeakedFdsStayHere starts the daemon with fds 3-10 open, as a
// careless parent would leave them: the workers get 3-9 replaced by their
// own, and none of them (10 included) reaches the app's subprocesses.
func TestLeakedFdsStayHere(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "leak.sock")
	cmd := exec.Command(binary, "fastcgi", "--bind", "unix:"+sock, "--chdir", appsDir(t), "probe")
	for i := 0; i < 8; i++ {
		f, err := os.Open(os.DevNull)
		require.NoError(t, err)
		defer f.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	startDaemonCmd(t, cmd)

	rec := gofastGet(t, sock, "/inheritable")
	assert.Equal(t, 200, rec.Code)
	assert.Empty(t, rec.Body.String(), "fds a subprocess of the app would inherit")
}

// TestScriptStartedByCgiFcgi: libfcgi's cgi-fcgi -start runs a FastCGI
// program with its socket on fd 0, as mod_fcgid does; a wsgibridge script
// then serves FastCGI with its settings.
func TestScriptStartedByCgiFcgi(t *testing.T) {
	bin := need(t, "cgi-fcgi")
	dir := t.TempDir()
	sock := filepath.Join(dir, "spawned.sock")
	script := filepath.Join(dir, "site.wsgi")
	require.NoError(t, os.WriteFile(script, []byte(fmt.Sprintf("#!%s\napp = probe\nchdir = %s\n", binary, appsDir(t))), 0o755))
	out, err := exec.Command(bin, "-start", "-connect", sock, script).CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() {
		// cgi-fcgi leaves the program running: find it by its script.
		for _, pid := range pidsOf(t, script) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	var got string
	require.Eventually(t, func() bool {
		got = cgiFcgi(t, sock, "GET", "/hello", "")
		return strings.HasSuffix(got, "Hello, world!")
	}, 30*time.Second, 100*time.Millisecond, "the spawned script did not serve: %q", got)
}

// pidsOf finds processes whose command line mentions s.
func pidsOf(t *testing.T, s string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, pid)
		}
	}
	return out
}

// load sends GETs through nginx from a few goroutines until stop closes,
// and counts the statuses; a request that hangs or fails at the transport
// counts as status 0.
type load struct {
	mu       sync.Mutex
	statuses map[int]int
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(t *testing.T, urls ...string) *load {
	l := &load{statuses: map[int]int{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for i := 0; i < 8; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				status := 0
				resp, err := client.Get(urls[(i+n)%len(urls)])
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil {
						status = resp.StatusCode
					}
				}
				l.mu.Lock()
				l.statuses[status]++
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// finish stops the load and returns the status counts.
func (l *load) finish() map[int]int {
	close(l.stop)
	l.wg.Wait()
	return l.statuses
}

// TestFaultsUnderLoad injects faults into a daemon behind nginx while
// requests flow: every request gets an answer (2xx or the documented
// 502/503/504), none hangs, and the daemon keeps serving with its workers
// restored.
func TestFaultsUnderLoad(t *testing.T) {
	apps := appsDir(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})
	hello := n.base1 + "/hello"
	const loadFor = 3 * time.Second

	restored := func(t *testing.T, d *daemon) {
		require.Eventually(t, func() bool { return len(d.workerPids(t)) == 2 }, 20*time.Second, 20*time.Millisecond, "worker count not restored")
		status, _ := get(t, hello)
		assert.Equal(t, 200, status, "the daemon serves after the faults")
	}

	t.Run("worker killed mid-request", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--chdir", apps, "probe")
		l := startLoad(t, hello, n.base1+"/sleep?0.05")
		kills := 0
		for end := time.Now().Add(loadFor); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
			if pids := d.workerPids(t); len(pids) > 0 {
				if syscall.Kill(pids[rand.IntN(len(pids))], syscall.SIGKILL) == nil {
					kills++
				}
			}
		}
		got := l.finish()
		t.Logf("statuses %v after %d kills", got, kills)
		assert.Zero(t, got[0], "no request hangs or breaks")
		for status := range got {
			assert.Contains(t, []int{200, 502, 503}, status)
		}
		assert.LessOrEqual(t, got[502], kills, "at most one failed request per kill")
		assert.Greater(t, got[200], 0)
		restored(t, d)
	})

	t.Run("app in an infinite loop with --timeout 2s", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--timeout", "2s", "--chdir", apps, "probe")
		l := startLoad(t, hello)
		loops := make(chan int, 3)
		for i := 0; i < 3; i++ {
			go func() {
				status, _ := get(t, n.base1+"/loop")
				loops <- status
			}()
		}
		// Two loops hold both workers until the timeout kills them (504);
		// what waits for a worker longer than the timeout gets 503.
		var loopStatuses []int
		for i := 0; i < 3; i++ {
			loopStatuses = append(loopStatuses, <-loops)
		}
		t.Logf("loop statuses %v", loopStatuses)
		assert.Contains(t, loopStatuses, 504)
		for _, s := range loopStatuses {
			assert.Contains(t, []int{503, 504}, s)
		}
		got := l.finish()
		t.Logf("statuses %v", got)
		assert.Zero(t, got[0])
		for status := range got {
			assert.Contains(t, []int{200, 503}, status)
		}
		restored(t, d)
		assert.Contains(t, d.log.String(), "the app ran longer than the 2s timeout")
	})

	t.Run("--max-requests 5", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--max-requests", "5", "--max-requests-jitter", "3", "--chdir", apps, "probe")
		first := d.workerPids(t)
		l := startLoad(t, hello)
		time.Sleep(loadFor)
		got := l.finish()
		t.Logf("statuses %v", got)
		assert.Equal(t, map[int]int{200: got[200]}, got, "recycling never fails a request")
		restored(t, d)
		assert.NotEqual(t, first, d.workerPids(t))
	})

	t.Run("SIGHUP during load", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--chdir", apps, "probe")
		first := d.workerPids(t)
		l := startLoad(t, hello)
		for i := 0; i < 4; i++ {
			time.Sleep(loadFor / 4)
			require.NoError(t, d.cmd.Process.Signal(syscall.SIGHUP))
		}
		time.Sleep(500 * time.Millisecond)
		got := l.finish()
		t.Logf("statuses %v", got)
		assert.Equal(t, map[int]int{200: got[200]}, got, "no request fails during a reload")
		restored(t, d)
		for _, pid := range first {
			assert.NotContains(t, d.workerPids(t), pid)
		}
	})

	t.Run("SIGTERM during load", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--chdir", apps, "probe")
		workers := d.workerPids(t)
		l := startLoad(t, hello, n.base1+"/sleep?0.2")
		time.Sleep(loadFor / 2)
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not exit after SIGTERM")
		}
		time.Sleep(300 * time.Millisecond)
		got := l.finish()
		t.Logf("statuses %v", got)
		assert.Zero(t, got[0])
		for status := range got {
			assert.Contains(t, []int{200, 502}, status, "after the daemon is gone nginx answers 502")
		}
		assert.NoError(t, d.err, "exit status 0")
		assert.Contains(t, d.log.String(), "msg=stopped")
		for _, pid := range workers {
			assert.Equal(t, syscall.ESRCH, syscall.Kill(pid, 0), "no orphan worker")
		}
	})
}

// fcgiGet sends one FastCGI request for path (with its query, if any),
// as a web server would, and returns all that comes back until the
// connection closes.
func fcgiGet(t *testing.T, network, addr, path string) ([]byte, error) {
	nc, err := net.Dial(network, addr)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	script, query, _ := strings.Cut(path, "?")
	b := testutil.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", script,
		"QUERY_STRING", query, "REQUEST_URI", path)
	if _, err := nc.Write(b); err != nil {
		return nil, err
	}
	return io.ReadAll(nc)
}

// TestDaemonKillsStuckApp: an app that --timeout's Stop cannot reach (it
// blocks the signal) is killed with its worker once the timeout and the
// stop grace have passed, and a fresh worker serves on.
func TestDaemonKillsStuckApp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stuck.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--timeout", "1s", "--chdir", appsDir(t), "probe")
	first := d.workerPids(t)
	start := time.Now()
	got, err := fcgiGet(t, "unix", sock, "/masked-sleep")
	took := time.Since(start)
	require.NoError(t, err, "the connection ends when the worker is killed")
	assert.NotContains(t, string(got), "slept")
	assert.Less(t, took, 15*time.Second, "killed long before the app's 60 s sleep")
	assert.Contains(t, d.log.String(), "the app did not stop at the timeout; killing its worker")
	assert.Regexp(t, `killing its worker" pid=\d+ timeout=1s stack="(?:[^"\\]|\\.)*probe\.py\\", line \d+ in masked_sleep`, d.log.String(),
		"where it was stuck, first")
	require.Eventually(t, func() bool {
		pids := d.workerPids(t)
		return len(pids) == 1 && pids[0] != first[0]
	}, 20*time.Second, 20*time.Millisecond, "a fresh worker replaces the killed one")
	got, err = fcgiGet(t, "unix", sock, "/hello")
	require.NoError(t, err)
	assert.Contains(t, string(got), "Hello, world!")
}

// TestDaemonStopsAppTheFirstAlarmMissed: the timeout's alarm comes again
// until the request ends, so an app the first one missed (CPython handles
// a signal landing just before a blocking call only when the call
// returns) is stopped with 504 and its worker serves on, unkilled.
func TestDaemonStopsAppTheFirstAlarmMissed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missed.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--timeout", "1s", "--chdir", appsDir(t), "probe")
	first := d.workerPids(t)
	got, err := fcgiGet(t, "unix", sock, "/lose-first-alarm")
	require.NoError(t, err)
	assert.Contains(t, string(got), "Status: 504")
	assert.NotContains(t, string(got), "slept")
	got, err = fcgiGet(t, "unix", sock, "/pid")
	require.NoError(t, err)
	assert.Contains(t, string(got), strconv.Itoa(first[0]), "the same worker serves on")
	// The worker's log lines reach the daemon's log beside the response,
	// not before it.
	assert.Eventually(t, func() bool { return strings.Contains(d.log.String(), "the app ran longer than the 1s timeout") },
		10*time.Second, 10*time.Millisecond, d.log.String())
	assert.NotContains(t, d.log.String(), "killing its worker")
}

// TestDaemonAccessLog: --access-log gives one line per request with its
// method, URI, status and size, from the workers that served it.
func TestDaemonAccessLog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "access.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--access-log", "--chdir", appsDir(t), "probe")
	for _, path := range []string{"/hello", "/missing"} {
		_, err := fcgiGet(t, "unix", sock, path)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return strings.Count(d.log.String(), "msg=request ") == 2 }, 10*time.Second, 10*time.Millisecond, d.log.String())
	log := d.log.String()
	assert.Regexp(t, `msg=request pid=\d+ method=GET uri=/hello status=200 bytes=13 duration=\d`, log)
	assert.Contains(t, log, "method=GET uri=/missing status=404 ")
}

// TestAbortRequestClosesIterable: FCGI_ABORT_REQUEST stops the app (its
// iterable is closed), ends the request once, and frees the worker.
func TestAbortRequestClosesIterable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "abort.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "1", "--chdir", appsDir(t), "probe")
	nc, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	req := func(path string) []byte {
		return testutil.FCGIRequest(1, true, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", path)
	}
	_, err = nc.Write(req("/slow-stream"))
	require.NoError(t, err)
	// Read until the first chunk has come.
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("first\n")) {
		n, err := nc.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	_, err = nc.Write(testutil.FCGIRecord(testutil.FCGIAbortRequest, 1, nil))
	require.NoError(t, err)
	endRecord := []byte{1, 3, 0, 1, 0, 8}
	for !bytes.Contains(got, endRecord) {
		n, err := nc.Read(buf)
		require.NoError(t, err, "got %q", got)
		got = append(got, buf[:n]...)
	}
	// Id 1 is free again only now. The next request on the same
	// connection is served by the same worker.
	_, err = nc.Write(req("/pid"))
	require.NoError(t, err)
	for bytes.Count(got, endRecord) < 2 {
		n, err := nc.Read(buf)
		require.NoError(t, err, "got %q", got)
		got = append(got, buf[:n]...)
	}
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = nc.Read(buf)
	assert.Error(t, err, "nothing after the second END_REQUEST")
	assert.Equal(t, 2, bytes.Count(got, endRecord), "one END_REQUEST per request")
	_, second, _ := bytes.Cut(got, endRecord)
	assert.Contains(t, string(second), strconv.Itoa(d.workerPids(t)[0]), "the same worker serves the next request")
	require.Eventually(t, func() bool { return strings.Contains(d.log.String(), "probe: close() called") }, 10*time.Second, 10*time.Millisecond)
	assert.Len(t, d.workerPids(t), 1)
}

// TestSystemdSocket starts the daemon as systemd socket activation does:
// the socket on fd 3, LISTEN_FDS=1 and LISTEN_PID naming the daemon.
func TestSystemdSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	// sh replaces itself with wsgibridge, so $$ is the daemon's pid.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" fastcgi --chdir "$1" probe`, binary, appsDir(t))
	cmd.ExtraFiles = []*os.File{f}
	startDaemonCmd(t, cmd)
	f.Close()
	out := cgiFcgi(t, addr, "GET", "/hello", "")
	assert.True(t, strings.HasSuffix(out, "Hello, world!"), out)
}

func TestDaemonImportFailureExits3(t *testing.T) {
	for _, mode := range []string{"fastcgi", "http"} {
		cmd := exec.Command(binary, mode, "--bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--chdir", t.TempDir(), "mysite.wsgi")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, mode)
		assert.Equal(t, 3, ee.ExitCode(), mode)
		assert.Contains(t, string(out), "app 'mysite.wsgi' failed to import: ModuleNotFoundError: No module named 'mysite'", mode)
	}
}

// TestDaemonAllowedAddrs: with FCGI_WEB_SERVER_ADDRS set, a TCP connection
// from another address is closed unanswered and logged; one from an
// allowed address is served.
func TestDaemonAllowedAddrs(t *testing.T) {
	for _, tt := range []struct {
		allowed string
		served  bool
	}{{"10.9.9.9, 192.0.2.1", false}, {"10.9.9.9,127.0.0.1", true}} {
		t.Run(tt.allowed, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			cmd := exec.Command(binary, "fastcgi", "--bind", addr, "--chdir", appsDir(t), "probe")
			cmd.Env = append(os.Environ(), "FCGI_WEB_SERVER_ADDRS="+tt.allowed)
			d := startDaemonCmd(t, cmd)
			got, err := fcgiGet(t, "tcp", addr, "/hello")
			if tt.served {
				require.NoError(t, err)
				assert.Contains(t, string(got), "Hello, world!")
				return
			}
			assert.NotContains(t, string(got), "Hello")
			assert.Eventually(t, func() bool {
				return strings.Contains(d.log.String(), "refused a connection from 127.0.0.1, not in FCGI_WEB_SERVER_ADDRS")
			}, 5*time.Second, 10*time.Millisecond)
		})
	}
}

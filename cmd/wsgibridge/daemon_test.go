package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
)

// daemon is a wsgibridge fastcgi or http process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
	err    error
}

// syncBuffer keeps a daemon's log while the test reads it.
type syncBuffer = testutil.SyncBuffer

// startDaemon runs wsgibridge with args until it logs that it serves, and
// stops it by PID (SIGTERM, then SIGKILL) when the test ends.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonCmd(t, exec.Command(binary, args...))
}

// startDaemonCmd is startDaemon for a command prepared by the test (an
// inherited socket, a wrapper).
func startDaemonCmd(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	args := cmd.Args[1:]
	d := &daemon{cmd: cmd, log: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	require.NoError(t, d.cmd.Start())
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("wsgibridge %v log:\n%s", args, d.log.String())
		}
	})
	deadline := time.After(30 * time.Second)
	for !strings.Contains(d.log.String(), "msg=\"serving ") {
		select {
		case <-d.exited:
			t.Fatalf("wsgibridge %v exited at start (%v):\n%s", args, d.err, d.log.String())
		case <-deadline:
			t.Fatalf("wsgibridge %v did not start:\n%s", args, d.log.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return d
}

// stop signals the daemon and waits for it to exit (killing it after 30 s).
func (d *daemon) stop(t *testing.T, sig syscall.Signal) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("wsgibridge did not exit after %v", sig)
	}
}

// workerPids returns the pids of the daemon's Python workers.
func (d *daemon) workerPids(t *testing.T) []int {
	return children(t, d.cmd.Process.Pid)
}

// nginx is an nginx started by a test with testdata/nginx/fastcgi.conf.
type nginx struct {
	dir          string
	base1, base2 string
	cmd          *exec.Cmd
}

func startNginx(t *testing.T, upstreams map[string]string) *nginx {
	t.Helper()
	for _, k := range []string{"FLASK", "DJANGO", "STOCK", "STOCKUNIX"} {
		if _, ok := upstreams[k]; !ok {
			upstreams[k] = upstreams["PROBE"]
		}
	}
	return startNginxConf(t, "fastcgi.conf", upstreams)
}

// startNginxConf starts nginx with the template testdata/nginx/name, its
// words in at-signs filled in: DIR, PORT1, PORT2, USER, and upstreams'.
func startNginxConf(t *testing.T, name string, upstreams map[string]string) *nginx {
	t.Helper()
	bin := need(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "tmp"), 0o755))
	tmpl, err := os.ReadFile("../../testdata/nginx/" + name)
	require.NoError(t, err)
	p1, p2 := freePort(t), freePort(t)
	user := ""
	if os.Geteuid() == 0 {
		// The workers must reach the test's sockets in its temp folder.
		user = "user root;"
	}
	pairs := []string{"@DIR@", dir, "@PORT1@", fmt.Sprint(p1), "@PORT2@", fmt.Sprint(p2), "@USER@", user}
	for k, v := range upstreams {
		pairs = append(pairs, "@"+k+"@", v)
	}
	conf := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(conf, []byte(strings.NewReplacer(pairs...).Replace(string(tmpl))), 0o644))
	n := &nginx{dir: dir, base1: fmt.Sprintf("http://127.0.0.1:%d", p1), base2: fmt.Sprintf("http://127.0.0.1:%d", p2)}
	n.cmd = exec.Command(bin, "-c", conf, "-p", dir, "-g", "daemon off;")
	startServer(t, "nginx", n.cmd, syscall.SIGQUIT, p2, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	})
	return n
}

// postChunked POSTs "chunked body" without a length (Transfer-Encoding:
// chunked) and returns the response body.
func postChunked(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest("POST", url, io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body")))
	require.NoError(t, err)
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func httpDo(t *testing.T, method, url string, body io.Reader, header ...string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, body, err := httpDo(t, "GET", url, nil)
	require.NoError(t, err)
	return resp.StatusCode, body
}

func TestNginxFastCGI(t *testing.T) {
	python := needPythonModules(t, "flask", "django")
	apps := appsDir(t)
	dir := t.TempDir()
	probeSock := filepath.Join(dir, "probe.sock")
	flaskSock := filepath.Join(dir, "flask.sock")
	djangoAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stockAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	daemons := []*daemon{
		startDaemon(t, "fastcgi", "--bind", "unix:"+probeSock, "--chdir", apps, "--python", python, "probe:validated"),
		startDaemon(t, "fastcgi", "--bind", "unix:"+flaskSock, "--mount", "/flask", "--chdir", apps, "--python", python, "flaskapp:validated"),
		startDaemon(t, "fastcgi", "--bind", djangoAddr, "--mount", "/django", "--chdir", apps, "--python", python, "djangoapp:validated"),
		startDaemon(t, "fastcgi", "--bind", stockAddr, "--mount", "/stock", "--chdir", apps, "--python", python, "probe:application"),
	}
	n := startNginx(t, map[string]string{"PROBE": "unix:" + probeSock, "FLASK": "unix:" + flaskSock, "DJANGO": djangoAddr, "STOCK": stockAddr})

	t.Run("the workers read requests with the C fast path", func(t *testing.T) {
		if !fastPathBuilt {
			if os.Getenv("CI") == "true" {
				t.Fatal("the binary was built without it; make test builds it")
			}
			t.Skip("the binary was built without it (in CI this fails; make test builds it)")
		}
		for _, d := range daemons {
			assert.NotContains(t, d.log.String(), "read requests in Python")
			assert.NotContains(t, d.log.String(), "fast path did not load")
		}
	})
	t.Run("an app's subprocess inherits none of the worker's fds", func(t *testing.T) {
		status, body := get(t, n.base1+"/inheritable")
		assert.Equal(t, 200, status)
		// The bridge passes fds 3 to 9 (pipes, listener, lobby, board, fast
		// path); a higher one is the environment's, passed through by Go.
		for _, fd := range strings.Fields(body) {
			n, err := strconv.Atoi(fd)
			require.NoError(t, err)
			assert.Greater(t, n, 9, "fd %d is inheritable (all: %s)", n, body)
		}
	})
	t.Run("hello, recommended block over a unix socket", func(t *testing.T) {
		status, body := get(t, n.base1+"/hello")
		assert.Equal(t, 200, status)
		assert.Equal(t, "Hello, world!", body)
	})
	t.Run("hello, stock fastcgi_params over TCP with --mount", func(t *testing.T) {
		status, body := get(t, n.base2+"/stock/hello")
		assert.Equal(t, 200, status)
		assert.Equal(t, "Hello, world!", body)
		_, body, err := httpDo(t, "GET", n.base2+"/stock/environ", nil, "Authorization", "Bearer token-17")
		require.NoError(t, err)
		assert.Contains(t, body, "SCRIPT_NAME=/stock\n")
		assert.Contains(t, body, "PATH_INFO=/environ\n")
		assert.Contains(t, body, "\nHTTP_AUTHORIZATION=Bearer token-17\n", "the app sees Authorization (token logins)")
	})
	t.Run("flask", func(t *testing.T) {
		status, body := get(t, n.base1+"/flask/")
		assert.Equal(t, 200, status)
		assert.Equal(t, "Hello from Flask", body)
		_, body = get(t, n.base1+"/flask/user/ana")
		assert.Equal(t, "user ana, script /flask", body)
	})
	t.Run("django", func(t *testing.T) {
		status, body := get(t, n.base1+"/django/")
		assert.Equal(t, 200, status)
		assert.Equal(t, "Hello from Django at /django/", body)
		_, body = get(t, n.base1+"/django/page/3")
		assert.Equal(t, "Page 3 at /django/page/3", body)
		resp, body, err := httpDo(t, "POST", n.base1+"/django/echo", strings.NewReader("django body"))
		require.NoError(t, err)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "django body", body)
	})
	t.Run("10 MiB POST echoed", func(t *testing.T) {
		payload := make([]byte, 10<<20)
		_, err := rand.Read(payload)
		require.NoError(t, err)
		for _, url := range []string{n.base1 + "/echo", n.base2 + "/stock/echo", n.base1 + "/flask/echo"} {
			resp, body, err := httpDo(t, "POST", url, bytes.NewReader(payload))
			require.NoError(t, err, url)
			assert.Equal(t, 200, resp.StatusCode, url)
			assert.Equal(t, sha256.Sum256(payload), sha256.Sum256([]byte(body)), url)
		}
	})
	t.Run("a chunked upload streamed without CONTENT_LENGTH", func(t *testing.T) {
		assert.Equal(t, "12", postChunked(t, n.base1+"/count"))
	})
	t.Run("slow uploads hold no worker", func(t *testing.T) {
		const size = 200000
		var slow []net.Conn
		for i := 0; i < 3; i++ { // one more than the daemon's workers
			c, err := net.Dial("tcp", strings.TrimPrefix(n.base1, "http://"))
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(60*time.Second)))
			_, err = fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("a", size/2))
			require.NoError(t, err)
			slow = append(slow, c)
		}
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Get(n.base1 + "/hello")
		require.NoError(t, err, "a request goes through while the uploads stall")
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
		for _, c := range slow {
			_, err := c.Write([]byte(strings.Repeat("b", size/2)))
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, strings.Repeat("a", size/2)+strings.Repeat("b", size/2), string(b))
		}
	})
	t.Run("streamed response with fastcgi_buffering off", func(t *testing.T) {
		assertStreamed(t, n.base2+"/stream", filepath.Join(t.TempDir(), "gate"))
	})
	t.Run("PATH_INFO is latin-1 decoded bytes", func(t *testing.T) {
		_, body := get(t, n.base1+"/echo-path/caf%C3%A9")
		assert.Equal(t, `'/echo-path/caf\xc3\xa9'`, body)
	})
	t.Run("a response cut short is visible with fastcgi_keep_conn on", func(t *testing.T) {
		resp, body, err := httpDo(t, "GET", n.base1+"/raise-after", nil)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "partial ", body)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client must see a truncated response")
	})
	t.Run("errors and bad types give 500", func(t *testing.T) {
		for _, path := range []string{"/raise-before", "/str-body", "/crlf-header"} {
			status, _ := get(t, n.base2+"/stock"+path)
			assert.Equal(t, 500, status, path)
		}
		status, body := get(t, n.base2+"/stock/hello")
		assert.Equal(t, 200, status)
		assert.Equal(t, "Hello, world!", body)
	})
	t.Run("httpoxy", func(t *testing.T) {
		_, body, err := httpDo(t, "GET", n.base1+"/environ", nil, "Proxy", "http://evil.example:3128")
		require.NoError(t, err)
		assert.NotContains(t, body, "HTTP_PROXY")
		_, body, err = httpDo(t, "GET", n.base1+"/os-environ", nil, "Proxy", "http://evil.example:3128")
		require.NoError(t, err)
		assert.NotContains(t, body, "HTTP_PROXY")
		assert.NotContains(t, body, "REQUEST_METHOD")
	})
}

func TestHTTPMode(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, "http", "--bind", addr, "--mount", "/app", "--chdir", appsDir(t), "probe:validated")
	status, body := get(t, "http://"+addr+"/app/hello")
	assert.Equal(t, 200, status)
	assert.Equal(t, "Hello, world!", body)
	_, body = get(t, "http://"+addr+"/app/echo-path/caf%C3%A9")
	assert.Equal(t, `'/echo-path/caf\xc3\xa9'`, body)
	resp, body, err := httpDo(t, "POST", "http://"+addr+"/app/echo", strings.NewReader("posted"))
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "posted", body)
	assert.Equal(t, "12", postChunked(t, "http://"+addr+"/app/count"), "a chunked body runs to its end")
	_, body, err = httpDo(t, "GET", "http://"+addr+"/app/raise-after", nil)
	assert.Equal(t, "partial ", body)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/http/httptest"
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
	"github.com/wsgibridge/wsgibridge/cgi"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
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

// stampPid reads the pid of the daemon started for sock.
func stampPid(t *testing.T, sock string) int {
	pid, _, ok := readStamp(sock)
	require.True(t, ok, "no stamp for %s", sock)
	return pid
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
			if pid, _, ok := readStamp(strings.TrimSuffix(s, ".stamp")); ok {
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

// TestRelayWithFakeDaemon runs the gofast relay against a stand-in
// daemon: a FastCGI responder from the standard library.
func TestRelayWithFakeDaemon(t *testing.T) {
	env := []string{"REQUEST_METHOD=POST", "SERVER_PROTOCOL=HTTP/1.1", "SCRIPT_NAME=/app", "PATH_INFO=/x",
		"REQUEST_URI=/app/x", "SERVER_NAME=localhost", "SERVER_PORT=80", "CONTENT_LENGTH=5"}
	var out, errOut bytes.Buffer
	done := startRelay(t, context.Background(), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", "Sat, 21 Nov 2026 00:00:00 GMT")
		w.Header().Set("X-Got", r.Method+" "+r.URL.Path)
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(201)
		buf := new(bytes.Buffer)
		_, _ = buf.ReadFrom(r.Body)
		fmt.Fprintf(w, "body=%s", buf)
	}, env, "hello", &out, &errOut)
	require.NoError(t, <-done)
	assert.Equal(t, "Status: 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sat, 21 Nov 2026 00:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Got: POST /app/x\r\n\r\nbody=hello", out.String())
	assert.Empty(t, errOut.String())
}

// TestRelayDaemonGone: a daemon that closes the connection gives an error,
// not a hang.
func TestRelayDaemonGone(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "gone.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	conn, err := net.Dial("unix", sock)
	require.NoError(t, err)
	env := []string{"REQUEST_METHOD=GET", "SERVER_PROTOCOL=HTTP/1.1"}
	req, err := cgi.ReadRequest(env, strings.NewReader(""), t.TempDir())
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	var errOut bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- relay(context.Background(), conn, env, req, rec.Body, &errOut) }()
	select {
	case err := <-done:
		assert.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the relay hung on a closed connection")
	}
}

var getEnv = []string{"REQUEST_METHOD=GET", "SERVER_PROTOCOL=HTTP/1.1"}

// failingWriter takes the first write and fails every later one, as a
// CGI stdout does once the web server's client has gone.
type failingWriter struct{ writes int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.writes++
	if f.writes > 1 {
		return 0, syscall.EPIPE
	}
	return len(p), nil
}

// startRelay runs relay for a request (env, body) against a daemon serving
// handler with Go's own FastCGI responder, and returns relay's result.
func startRelay(t *testing.T, ctx context.Context, handler http.HandlerFunc, env []string, body string, stdout, stderr io.Writer) <-chan error {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() { _ = fcgi.Serve(l, handler) }()
	conn, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	req, err := cgi.ReadRequest(env, strings.NewReader(body), t.TempDir())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- relay(ctx, conn, env, req, stdout, stderr) }()
	return done
}

// TestRelayClientGone: when stdout fails in the middle of a response (the
// client went away), the relay returns and the daemon sees the connection
// close, instead of both waiting for ever.
func TestRelayClientGone(t *testing.T) {
	daemonSaw := make(chan error, 1)
	done := startRelay(t, context.Background(), func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				daemonSaw <- err
				return
			}
			w.(http.Flusher).Flush()
		}
	}, getEnv, "", &failingWriter{}, io.Discard)
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "write the response")
		assert.ErrorIs(t, err, syscall.EPIPE)
	case <-time.After(10 * time.Second):
		t.Fatal("the relay hung after its stdout failed")
	}
	select {
	case err := <-daemonSaw:
		assert.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon kept writing to a relay that gave up")
	}
}

// TestRelayCanceled: a SIGTERM (the context ending) stops a relay whose
// daemon is slow to answer.
func TestRelayCanceled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancelCause(context.Background())
	done := startRelay(t, ctx, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first part")
		w.(http.Flusher).Flush()
		<-release
	}, getEnv, "", io.Discard, io.Discard)
	time.AfterFunc(100*time.Millisecond, func() { cancel(errors.New("terminated")) })
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "terminated")
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not stop when its context ended")
	}
}

func TestIsDaemonOf(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--chdir", appsDir(t), "probe")
	assert.True(t, isDaemonOf(d.cmd.Process.Pid, sock))
	assert.False(t, isDaemonOf(d.cmd.Process.Pid, sock+"x"), "another pool's socket")
	assert.False(t, isDaemonOf(os.Getpid(), sock), "a process that is not the daemon (a reused pid)")
}

// TestRelayPassesStderr: what the daemon writes on FCGI_STDERR reaches our
// stderr (the web server's error log), and FCGI_STDOUT our stdout.
func TestRelayPassesStderr(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stderr.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Read the request up to its empty FCGI_STDIN, then answer.
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, testutil.FCGIRecord(testutil.FCGIStdin, 1, nil)) {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
		out := testutil.FCGIRecord(testutil.FCGIStderr, 1, []byte("a warning from the daemon\n"))
		out = append(out, testutil.FCGIRecord(testutil.FCGIStdout, 1, []byte("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok"))...)
		out = append(out, testutil.FCGIRecord(testutil.FCGIStdout, 1, nil)...)
		out = append(out, testutil.FCGIRecord(testutil.FCGIEndRequest, 1, make([]byte, 8))...)
		_, _ = c.Write(out)
	}()
	conn, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer conn.Close()
	env := []string{"REQUEST_METHOD=GET", "SERVER_PROTOCOL=HTTP/1.1"}
	req, err := cgi.ReadRequest(env, strings.NewReader(""), t.TempDir())
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	err = relay(context.Background(), conn, env, req, &out, &errOut)
	assert.Equal(t, "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok", out.String())
	assert.Contains(t, errOut.String(), "a warning from the daemon")
	assert.ErrorContains(t, err, "a warning from the daemon", "the relay reports what the daemon said on stderr")
}

package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/cgi"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
)

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

// TestIsDaemonOf: a process whose command line names the socket as the
// daemon's --bind does is taken for the daemon; another is not.
func TestIsDaemonOf(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	// A stand-in with the daemon's arguments: sh ignores those after its script.
	cmd := exec.Command("sh", "-c", "sleep 30", "fastcgi", "--bind", "unix:"+sock)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	assert.True(t, isDaemonOf(cmd.Process.Pid, sock))
	assert.False(t, isDaemonOf(cmd.Process.Pid, sock+"x"), "another pool's socket")
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

func TestSocketPath(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	tests := []struct {
		name string
		cfg  Config
		want string // "": in the private folder, named by the script (or app and folder)
		err  string
	}{
		{name: "a socket given", cfg: Config{Pool: "unix:/run/site/pool.sock"}, want: "/run/site/pool.sock"},
		{name: "auto, from a script", cfg: Config{Pool: "auto", Script: "/srv/a.wsgi"}},
		{name: "auto, from the app", cfg: Config{Pool: "auto", App: "mysite.wsgi", Dir: "/srv/a"}},
		{name: "not a socket", cfg: Config{Pool: "/run/x.sock"}, err: `pool "/run/x.sock": want unix:PATH or auto`},
		{name: "an empty path", cfg: Config{Pool: "unix:"}, err: "want unix:PATH or auto"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := socketPath(tt.cfg)
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			if tt.want != "" {
				assert.Equal(t, tt.want, got)
				return
			}
			dir, err := bridge.PrivateDir()
			require.NoError(t, err)
			assert.Equal(t, dir, filepath.Dir(got), "in the private folder")
			assert.Regexp(t, `^pool-[0-9a-f]{12}\.sock$`, filepath.Base(got))
			again, _ := socketPath(tt.cfg)
			assert.Equal(t, got, again, "the same settings name the same socket")
			for other, path := range seen {
				assert.NotEqual(t, path, got, "the socket of %s", other)
			}
			seen[tt.name] = got
		})
	}
}

package main

// This file is the CGI hand-off: "wsgibridge cgi --pool" passes the request
// to a running "wsgibridge fastcgi" daemon over a unix socket, through the
// gofast FastCGI client, and relays its response, so a CGI-only host gets
// the latency of a warm pool. With --spawn it starts that daemon itself.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/cgi"
	"github.com/yookoala/gofast"
)

// spawnWait bounds a spawned daemon's start (the app's import included).
const spawnWait = 60 * time.Second

// poolSocket returns the socket path of s.pool: "unix:PATH", or "auto" (a
// socket named after the script, in the user's private folder).
func poolSocket(s settings, script string) (string, error) {
	if path, ok := strings.CutPrefix(s.pool, "unix:"); ok && path != "" {
		return path, nil
	}
	if s.pool != "auto" {
		return "", fmt.Errorf("pool %q: want unix:PATH or auto", s.pool)
	}
	dir, err := bridge.PrivateDir()
	if err != nil {
		return "", err
	}
	key := script
	if key == "" {
		key = s.app + "\x00" + s.chdir
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "pool-"+hex.EncodeToString(sum[:6])+".sock"), nil
}

// handOff serves the request through the pool. served is false when the
// pool could not be reached (or started): nothing was read or written
// then, and the caller serves the request itself.
func handOff(ctx context.Context, s settings, script string, environ []string, req *cgi.Request, stdout io.Writer, stderr io.Writer, log *slog.Logger) (served bool, err error) {
	sock, err := poolSocket(s, script)
	if err != nil {
		return false, err
	}
	var conn net.Conn
	if s.spawn {
		conn, err = ensureDaemon(sock, s, script, environ, log)
	} else {
		conn, err = net.Dial("unix", sock)
	}
	if err != nil {
		return false, err
	}
	defer conn.Close()
	return true, relay(ctx, conn, environ, req, stdout, stderr)
}

// relay sends the request on conn and writes the daemon's response to
// stdout as a CGI response, as it arrives. When ctx ends or stdout fails
// (the web server's client went away), the connection is closed, so the
// daemon stops the request, and relay returns.
func relay(ctx context.Context, conn net.Conn, environ []string, req *cgi.Request, stdout io.Writer, stderr io.Writer) error {
	client, err := gofast.SimpleClientFactory(func() (net.Conn, error) { return conn, nil })()
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	params := make(map[string]string, len(environ))
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		params[name] = value
	}
	var body io.Reader = strings.NewReader("")
	if req.Body != nil {
		body = req.Body
	}
	resp, err := client.Do(&gofast.Request{Role: gofast.RoleResponder, Params: params, Stdin: io.NopCloser(body)})
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	// gofast's reader blocks for good on a response pipe nobody reads, so
	// giving up must close the pipes as well as the connection.
	var once sync.Once
	giveUp := func() {
		once.Do(func() {
			conn.Close()
			resp.Close()
		})
	}
	stop := context.AfterFunc(ctx, giveUp)
	defer stop()
	w := &cgiResponse{w: stdout, header: http.Header{}, failed: giveUp}
	var errs strings.Builder
	err = resp.WriteTo(w, io.MultiWriter(stderr, &errs))
	if err == nil && errs.Len() > 0 {
		err = errors.New(strings.TrimSpace(errs.String()))
	}
	if w.err != nil {
		return fmt.Errorf("hand-off: write the response: %w", w.err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("hand-off: %w", context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("hand-off: %w", err)
	}
	return nil
}

// cgiResponse is the http.ResponseWriter gofast writes to: it writes a CGI
// response, each write going out at once so a streamed body stays
// streamed. After the first failed write it calls failed and takes what
// follows without writing it, so gofast never waits on it.
type cgiResponse struct {
	w      io.Writer
	header http.Header
	wrote  bool
	err    error
	failed func()
}

func (c *cgiResponse) Header() http.Header { return c.header }

func (c *cgiResponse) WriteHeader(status int) {
	if c.wrote {
		return
	}
	c.wrote = true
	var b strings.Builder
	fmt.Fprintf(&b, "Status: %d %s\r\n", status, http.StatusText(status))
	names := make([]string, 0, len(c.header))
	for name := range c.header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range c.header[name] {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("\r\n")
	_, err := io.WriteString(c.w, b.String())
	c.fail(err)
}

func (c *cgiResponse) fail(err error) {
	if err != nil && c.err == nil {
		c.err = err
		c.failed()
	}
}

func (c *cgiResponse) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if c.err == nil {
		_, err := c.w.Write(p)
		c.fail(err)
	}
	return len(p), nil
}

// ensureDaemon connects to the daemon at sock, starting it first when
// nothing answers there or when the script changed since it was started.
// A lock file beside the socket makes concurrent first requests start one
// daemon; socket, lock, stamp and log live in a folder only the user can
// open.
func ensureDaemon(sock string, s settings, script string, environ []string, log *slog.Logger) (net.Conn, error) {
	if err := bridge.EnsurePrivate(filepath.Dir(sock)); err != nil {
		return nil, fmt.Errorf("pool folder: %w", err)
	}
	if current(sock, script) {
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
	}
	lock, err := os.OpenFile(sock+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pool lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("pool lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	// Another request may have started it while we waited for the lock.
	if current(sock, script) {
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
	}
	if pid, _, ok := readStamp(sock); ok && isDaemonOf(pid, sock) {
		log.Info("replacing the pool daemon (its script changed, or it does not answer)", "pid", pid)
		stopDaemon(pid)
	}
	// The old daemon's workers share its socket and die with it, a moment
	// after it; until they are gone the new daemon would find the socket
	// in use.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		c.Close()
	}
	pid, err := spawnDaemon(sock, s, script, environ)
	if err != nil {
		return nil, err
	}
	log.Info("started the pool daemon", "pid", pid, "socket", sock, "log", sock+".log")
	deadline := time.Now().Add(spawnWait)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", sock); err == nil {
			return c, nil
		}
		if syscall.Kill(pid, 0) != nil {
			return nil, fmt.Errorf("the pool daemon exited at start (%s.log ends: %q)", sock, logTail(sock+".log"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("the pool daemon did not start within %v; see %s.log", spawnWait, sock)
}

// The stamp beside the socket records the daemon's pid and the script's
// modification time when it was started.
func readStamp(sock string) (pid int, mtime int64, ok bool) {
	b, err := os.ReadFile(sock + ".stamp")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	mtime, err2 := strconv.ParseInt(f[1], 10, 64)
	return pid, mtime, err1 == nil && err2 == nil
}

func scriptMtime(script string) int64 {
	if script == "" {
		return 0
	}
	fi, err := os.Stat(script)
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}

// current reports whether the daemon is running and was started from the
// script as it is. A daemon that died (killed, say) is not current even
// while its socket still answers: its workers hold the socket a moment
// longer, and die with it.
func current(sock, script string) bool {
	pid, mtime, ok := readStamp(sock)
	return ok && mtime == scriptMtime(script) && isDaemonOf(pid, sock)
}

// isDaemonOf reports whether pid is a wsgibridge daemon serving sock: a
// stamp can outlive its daemon, and the kernel reuses pids.
func isDaemonOf(pid int, sock string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "\x00unix:"+sock+"\x00")
}

// stopDaemon stops a daemon gracefully and waits a little for it to go.
func stopDaemon(pid int) {
	if pid <= 0 || syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// spawnDaemon starts "wsgibridge fastcgi" on sock with the script's
// settings, detached in its own session, and writes the stamp.
func spawnDaemon(sock string, s settings, script string, environ []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	args := []string{"fastcgi", "--bind", "unix:" + sock, "--socket-mode", "0600", "--mount", mountKeep,
		"--idle-timeout", s.idleTimeout.String(), "--reload-on-change", "--python", s.python}
	if s.chdir != "" {
		args = append(args, "--chdir", s.chdir)
	}
	for _, p := range s.pythonpath {
		args = append(args, "--pythonpath", p)
	}
	for _, e := range s.env {
		args = append(args, "--env", e)
	}
	if s.workers > 0 {
		args = append(args, "--workers", strconv.Itoa(s.workers))
	}
	args = append(args, s.app)
	logFile, err := os.OpenFile(sock+".log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, args...)
	// Not the request's environment (httpoxy), and never the web server's
	// pipes: it would wait for them to close.
	cmd.Env = cgi.ChildEnv(environ)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("spawn: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	stamp := fmt.Sprintf("%d %d\n", pid, scriptMtime(script))
	if err := os.WriteFile(sock+".stamp", []byte(stamp), 0o600); err != nil {
		return pid, fmt.Errorf("spawn: %w", err)
	}
	return pid, nil
}

// logTail is the end of a daemon's log, for error messages.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 5 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

package handoff

// This file holds the daemon a hand-off spawns: started on the first
// request (one for concurrent first requests, by a lock), replaced when
// its script changed, found again by a stamp of its pid beside the
// socket, all in a folder only the user can open.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/cgi"
)

// ensureDaemon connects to the daemon at sock, starting it first when
// nothing answers there or when the script changed since it was started.
// A lock file beside the socket makes concurrent first requests start one
// daemon; socket, lock, stamp and log live in a folder only the user can
// open.
func ensureDaemon(sock string, cfg Config, environ []string) (net.Conn, error) {
	script, log := cfg.Script, cfg.Logger
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
	pid, err := spawnDaemon(sock, cfg, environ)
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

// spawnDaemon starts "wsgibridge fastcgi" on sock with cfg's settings,
// detached in its own session, and writes the stamp.
func spawnDaemon(sock string, cfg Config, environ []string) (int, error) {
	self := cfg.Executable
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return 0, fmt.Errorf("spawn: %w", err)
		}
	}
	// The daemon keeps SCRIPT_NAME and PATH_INFO as this CGI request has
	// them (--mount keep), and reloads when the app's files change.
	args := []string{"fastcgi", "--bind", "unix:" + sock, "--socket-mode", "0600", "--mount", "keep",
		"--idle-timeout", cfg.IdleTimeout.String(), "--reload-on-change", "--python", cfg.Python}
	if cfg.Dir != "" {
		args = append(args, "--chdir", cfg.Dir)
	}
	for _, p := range cfg.PythonPath {
		args = append(args, "--pythonpath", p)
	}
	for _, e := range cfg.Env {
		args = append(args, "--env", e)
	}
	// One worker imports the app at once, for the request that waits;
	// more start while every one is busy, and go again once idle.
	most := cfg.Workers
	if most <= 0 {
		most = 2
	}
	args = append(args, "--workers", bridge.Size{Min: 1, Max: most}.String())
	args = append(args, cfg.App)
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
	stamp := fmt.Sprintf("%d %d\n", pid, scriptMtime(cfg.Script))
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

// Package fastcgi opens the socket a FastCGI application listens on: one
// it binds, or one its parent bound and handed to it (mod_fcgid and
// spawn-fcgi on fd 0, systemd with LISTEN_FDS), and reads who may connect
// (FCGI_WEB_SERVER_ADDRS). The workers that inherit the socket speak the
// protocol; this package knows nothing of them.
package fastcgi

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Listen opens a listening socket for addr: "HOST:PORT", "[::1]:PORT" or
// "unix:PATH". A unix socket file gets mode; a stale one (a socket file
// nothing listens on) is removed first, while a live one, or a path that is
// not a socket, is an error.
func Listen(addr string, mode os.FileMode) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("fastcgi: listen on %s: %w", addr, err)
		}
		return l, nil
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// Created with no permissions for others, then opened up to mode, so
	// there is no moment where the socket is wider than asked.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("fastcgi: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("fastcgi: socket mode of %s: %w", path, err)
	}
	return l, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fastcgi: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("fastcgi: %s exists and is not a socket; not removing it", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("fastcgi: something already listens on %s (another wsgibridge?)", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("fastcgi: remove stale socket %s: %w", path, err)
	}
	return nil
}

// Inherited returns a listening socket our parent handed us: the first of
// systemd's (LISTEN_FDS and LISTEN_PID, starting at fd 3), else fd 0 when
// it is a listening socket (FCGI_LISTENSOCK_FILENO, the way mod_fcgid and
// spawn-fcgi start a FastCGI program). It returns nil and no error when
// there is none.
func Inherited() (net.Listener, error) {
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err == nil && pid == os.Getpid() {
		if n, err := strconv.Atoi(os.Getenv("LISTEN_FDS")); err == nil && n >= 1 {
			// Ours alone, as sd_listen_fds(1) has it: not the workers'.
			for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				os.Unsetenv(name)
			}
			return fileListener(3, "systemd socket")
		}
	}
	if ListeningOnStdin() {
		return fileListener(0, "FCGI_LISTENSOCK_FILENO")
	}
	return nil, nil
}

// ListeningOnStdin reports whether fd 0 is a listening socket: how a web
// server that spawns FastCGI programs (mod_fcgid, spawn-fcgi, cgi-fcgi
// -start) hands one its socket.
func ListeningOnStdin() bool {
	v, err := syscall.GetsockoptInt(0, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	return err == nil && v == 1
}

func fileListener(fd int, name string) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), name)
	l, err := net.FileListener(f)
	f.Close() // FileListener holds its own copy of the socket
	if err != nil {
		return nil, fmt.Errorf("fastcgi: inherited %s (fd %d): %w", name, fd, err)
	}
	if fd == 0 {
		// The socket has its own fd now and closing f freed fd 0: /dev/null
		// takes it, so that neither a child nor code reading stdin meets the
		// listener there, or whatever socket would take the number next.
		// Not through os.Open: its finalizer would close fd 0 again.
		if devnull, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0); err == nil && devnull != 0 {
			_ = syscall.Dup3(devnull, 0, 0) // Dup2 is missing on arm64 and riscv64
			syscall.Close(devnull)
		}
	}
	return l, nil
}

// ParseAddrs parses FCGI_WEB_SERVER_ADDRS: IP addresses separated by
// commas.
func ParseAddrs(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("fastcgi: FCGI_WEB_SERVER_ADDRS: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

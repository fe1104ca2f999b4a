package main

// This file is "wsgibridge fastcgi": a FastCGI daemon in front of a pool.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

// fastcgiFlags are the flags of the fastcgi mode beside the daemons' own.
type fastcgiFlags struct {
	bind, socketMode string
	headerTimeout    time.Duration
	sendBuffer       int
}

// newFastCGIFlagSet returns the fastcgi mode's flag set.
func newFastCGIFlagSet(d *daemonFlags, f *fastcgiFlags, stderr io.Writer) *flag.FlagSet {
	fs := d.newFlagSet("fastcgi", stderr)
	fs.StringVar(&f.bind, "bind", "", "where to listen: HOST:PORT, [::1]:PORT or unix:PATH; without it, a socket inherited on fd 0 (mod_fcgid, spawn-fcgi) or from systemd")
	fs.StringVar(&f.socketMode, "socket-mode", "0660", "file mode of a unix socket")
	fs.DurationVar(&f.headerTimeout, "header-timeout", 10*time.Second, "close a connection whose request's FastCGI header (BEGIN_REQUEST and PARAMS) stays unfinished this long")
	fs.IntVar(&f.sendBuffer, "send-buffer", 1024, "KiB of a large response a worker leaves to the kernel at once (the kernel doubles it, up to net.core.wmem_max); 256 where nginx keeps whole responses in memory (fastcgi_buffers 64 32k)")
	return fs
}

func runFastCGI(args []string, stderr io.Writer) int {
	var d daemonFlags
	var f fastcgiFlags
	fs := newFastCGIFlagSet(&d, &f, stderr)
	bind, socketMode, headerTimeout := &f.bind, &f.socketMode, &f.headerTimeout
	log, code := d.setup(fs, args, stderr)
	if code != exitOK {
		return code
	}
	if *bind == "" && fastcgi.ListeningOnStdin() && !d.explicit["workers"] {
		// mod_fcgid sends a process one request at a time: a second
		// worker would never serve (spawn-fcgi users set workers).
		d.size = bridge.Size{Min: 1, Max: 1}
	}
	if *headerTimeout <= 0 {
		fmt.Fprintln(stderr, "wsgibridge fastcgi: --header-timeout must be more than 0")
		return exitUsage
	}
	if f.sendBuffer < 64 {
		fmt.Fprintln(stderr, "wsgibridge fastcgi: --send-buffer must be 64 (KiB) or more")
		return exitUsage
	}
	mode, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		fmt.Fprintf(stderr, "wsgibridge fastcgi: --socket-mode wants an octal mode like 0660, got %q\n", *socketMode)
		return exitUsage
	}
	var l net.Listener
	if *bind != "" {
		l, err = fastcgi.Listen(*bind, os.FileMode(mode))
	} else if l, err = fastcgi.Inherited(); err == nil && l == nil {
		fmt.Fprintln(stderr, "wsgibridge fastcgi: no --bind given and no socket inherited (fd 0 or LISTEN_FDS); use --bind 127.0.0.1:9000 or --bind unix:/run/myapp.sock")
		return exitUsage
	}
	if err != nil {
		log.Error("cannot listen", "err", err)
		return exitFailed
	}
	allowed, err := fastcgi.ParseAddrs(os.Getenv("FCGI_WEB_SERVER_ADDRS"))
	if err != nil {
		l.Close()
		log.Error("bad setting", "err", err)
		return exitUsage
	}
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && len(allowed) == 0 {
		log.Warn("FastCGI has no authentication: anyone who reaches this address can send requests; prefer 127.0.0.1, a unix socket, or FCGI_WEB_SERVER_ADDRS", "bind", l.Addr().String())
	}
	lf, err := listenerFile(l)
	if err != nil {
		l.Close()
		log.Error("cannot hand the socket to the workers", "err", err)
		return exitFailed
	}
	// Our own copy leaves the poller, or every connection would wake us;
	// the socket file stays until we stop.
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
		if *bind != "" {
			defer os.Remove(ul.Addr().String())
		}
	}
	l.Close()
	d.fastcgi = &bridge.FastCGIConfig{Listener: lf, Mount: d.mount, KeepMount: d.mount == mountKeep,
		Timeout: d.timeout, HeaderTimeout: *headerTimeout, SendBuffer: f.sendBuffer << 10,
		Workers: d.size.Max, ReloadOnChange: d.reloadOnChange,
		AllowedAddrs: allowed, AccessLog: d.accessLog, Stats: d.op.status != "" || d.op.statusPath != "",
		StatusPath: d.op.statusPath, PingPath: d.op.pingPath, Status: d.op.document}
	return d.serve(log, l, func(pool *bridge.Pool, _ time.Time) (<-chan error, func(context.Context) error) {
		log.Info("serving FastCGI", "listen", l.Addr().String(), "app", d.s.app, "workers", pool.Stats().Pids)
		if err := bridge.FastPath(); err != nil {
			log.Warn("workers read requests in Python, which costs more CPU per request", "err", err)
		}
		return nil, func(context.Context) error { return nil }
	})
}

// listenerFile returns a duplicate of the listening socket for the
// workers to inherit. It is made before l is closed, and made blocking
// first: an os.File of a non-blocking descriptor would go into our poller
// and be set blocking under the workers' feet when a worker starts (each
// worker sets the socket non-blocking for itself).
func listenerFile(l net.Listener) (*os.File, error) {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("cannot share a %T", l)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	cerr := raw.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) })
	if err = errors.Join(cerr, err); err != nil {
		return nil, fmt.Errorf("dup the listening socket: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "listener"), nil
}

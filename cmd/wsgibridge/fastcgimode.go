package main

// This file is "wsgibridge fastcgi": a FastCGI daemon in front of a pool.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

func runFastCGI(args []string, stderr io.Writer) int {
	var d daemonFlags
	fs := d.newFlagSet("fastcgi", stderr)
	bind := fs.String("bind", "", "where to listen: HOST:PORT, [::1]:PORT or unix:PATH; without it, a socket inherited on fd 0 (mod_fcgid, spawn-fcgi) or from systemd")
	socketMode := fs.String("socket-mode", "0660", "file mode of a unix socket")
	log, code := d.setup(fs, args, stderr)
	if code != exitOK {
		return code
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
	return d.serve(log, l, func(g *gateway) (<-chan error, func(context.Context) error) {
		srv := &fastcgi.Server{
			Handler: g,
			Logger:  log,
			// The pool answers 503 when its queue is full; this cap bounds
			// the requests the server holds at all (FCGI_OVERLOADED beyond).
			MaxRequests:  max(1024, 2*(d.workers+d.backlog)),
			AllowedAddrs: allowed,
		}
		serveErr := make(chan error, 1)
		go func() { serveErr <- srv.Serve(l) }()
		log.Info("serving FastCGI", "listen", l.Addr().String(), "app", d.s.app, "workers", g.pool.Stats().Pids)
		return serveErr, srv.Shutdown
	})
}

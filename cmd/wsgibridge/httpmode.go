package main

// This file is "wsgibridge http": plain HTTP in front of a pool, for
// development and for trying an app in a browser.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/fastcgi"
	"github.com/wsgibridge/wsgibridge/gateway"
)

func runHTTP(args []string, stderr io.Writer) int {
	var d daemonFlags
	fs := d.newFlagSet("http", stderr)
	bind := fs.String("bind", "127.0.0.1:8000", "where to listen: HOST:PORT or unix:PATH")
	limits := gateway.DefaultLimits
	fs.IntVar(&limits.RequestLine, "limit-request-line", limits.RequestLine, "longest request line in bytes, else 414; 0: no limit")
	fs.IntVar(&limits.RequestFields, "limit-request-fields", limits.RequestFields, "most header fields in a request, else 431; 0: no limit")
	fs.IntVar(&limits.RequestFieldSize, "limit-request-field-size", limits.RequestFieldSize, "longest header field in bytes, its name included, else 431; 0: no limit")
	log, code := d.setup(fs, args, stderr)
	if code != exitOK {
		return code
	}
	if limits.RequestLine < 0 || limits.RequestFields < 0 || limits.RequestFieldSize < 0 {
		fmt.Fprintln(stderr, "wsgibridge http: the --limit-request-* flags must be 0 (no limit) or more")
		return exitUsage
	}
	if d.op.statusPath != "" || d.op.pingPath != "" {
		fmt.Fprintln(stderr, "wsgibridge http: --status-path and --ping-path are for fastcgi; --status serves the same here")
		return exitUsage
	}
	l, err := fastcgi.Listen(*bind, 0o660)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return exitFailed
	}
	return d.serve(log, l, func(pool *bridge.Pool, started time.Time) (<-chan error, func(context.Context) error) {
		g := gateway.New(gateway.Config{Pool: pool, Mount: d.mount, KeepMount: d.mount == mountKeep,
			AccessLog: d.accessLog, ReloadOnChange: d.reloadOnChange, Started: started, Limits: limits, Logger: log})
		serveErr := make(chan error, 1)
		go func() {
			if err := g.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
		log.Info("serving HTTP", "url", "http://"+l.Addr().String()+"/", "app", d.s.app, "workers", pool.Stats().Pids)
		return serveErr, g.Shutdown
	})
}

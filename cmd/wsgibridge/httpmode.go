package main

// This file is "wsgibridge http": plain HTTP in front of a pool, for
// development and for trying an app in a browser.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

func runHTTP(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsgibridge http", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var d daemonFlags
	d.register(fs)
	bind := fs.String("bind", "127.0.0.1:8000", "where to listen: HOST:PORT or unix:PATH")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: wsgibridge http [flags] APP|SCRIPT\n\nflags:\n")
		fs.PrintDefaults()
	}
	log, code := d.setup(fs, args, stderr)
	if code != exitOK {
		return code
	}
	l, err := fastcgi.Listen(*bind, 0o660)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return exitFailed
	}
	pool, code := d.startPool(log)
	if code != exitOK {
		l.Close()
		return code
	}
	g := newGateway(pool, &d, log)
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       75 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	log.Info("serving HTTP", "url", "http://"+l.Addr().String()+"/", "app", d.s.app, "workers", pool.Stats().Pids)
	return d.run(log, pool, g, serveErr, srv.Shutdown)
}

// Command nethttp answers every request with the hello app's response from
// Go's net/http alone, with no Python behind it. bench/run.py measures it
// behind nginx's proxy_pass as its nethttp target: the most req/s that any
// http mode keeping net/http in front can reach on the machine, whatever it
// does between net/http and a worker.
//
// Usage: nethttp SOCKET (a unix socket's path; a file there is replaced)
package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

var body = []byte("Hello, world!")

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nethttp SOCKET")
		os.Exit(2)
	}
	if err := serve(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "nethttp:", err)
		os.Exit(1)
	}
}

func serve(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	// The timeouts wsgibridge http gives its server (gateway.New).
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "13")
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       75 * time.Second,
	}
	return srv.Serve(l)
}

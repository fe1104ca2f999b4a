package status

// This file opens the status listener: a unix socket (mode 0660, as the
// FastCGI socket's), or a TCP address that only this machine reaches
// unless the operator says otherwise: the status shows what runs.

import (
	"errors"
	"fmt"
	"net"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

// ErrPublic is returned by Listen for a TCP address others can reach.
var ErrPublic = errors.New("status: others can reach this address")

// Listen opens the status listener at addr: "unix:PATH", "HOST:PORT" or
// "[::1]:PORT". A TCP address that is not a loopback one is refused
// unless public.
func Listen(addr string, public bool) (net.Listener, error) {
	l, err := fastcgi.Listen(addr, 0o660)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && !public {
		l.Close()
		return nil, fmt.Errorf("%w: %s (use 127.0.0.1:PORT or unix:PATH, or --status-public to show the status to every host that reaches it)",
			ErrPublic, l.Addr())
	}
	return l, nil
}

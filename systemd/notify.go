// Package systemd speaks systemd's service notification protocol
// (sd_notify(3)): a datagram of NAME=value lines sent to the socket named
// in NOTIFY_SOCKET, telling systemd that the service is ready, reloading
// or stopping, what it is doing, and that it is alive (the watchdog). It
// is what a unit of Type=notify (or notify-reload) waits for.
package systemd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Notifier sends notifications to systemd. The zero value, and a nil
// *Notifier, send nothing: the process was not started by systemd.
type Notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration
}

// FromEnv returns the Notifier that NOTIFY_SOCKET names, or nil when it is
// not set. It unsets NOTIFY_SOCKET and the watchdog's variables, as
// sd_notify's unset_environment does, so that no child (a Python worker,
// or what the app starts) speaks for this service.
func FromEnv() (*Notifier, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, name := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		os.Unsetenv(name)
	}
	if addr == "" {
		return nil, nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return nil, fmt.Errorf("systemd: NOTIFY_SOCKET %q is not a unix socket path", addr)
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("systemd: notify socket: %w", err)
	}
	n := &Notifier{conn: conn}
	if us, err := strconv.ParseInt(usec, 10, 64); err == nil && us > 0 && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
		n.watchdog = time.Duration(us) * time.Microsecond / 2
	}
	return n, nil
}

// Watchdog returns how often systemd wants WATCHDOG=1 (half its
// WATCHDOG_USEC, as sd_watchdog_enabled(3) advises); 0: not wanted.
func (n *Notifier) Watchdog() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Send sends one notification: NAME=value lines.
func (n *Notifier) Send(lines ...string) error {
	if n == nil || n.conn == nil {
		return nil
	}
	if _, err := n.conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}

// Ready says the service serves, with what it is doing.
func (n *Notifier) Ready(status string) error { return n.Send("READY=1", "STATUS="+status) }

// Reloading says the service reloads; Ready says when it is done.
func (n *Notifier) Reloading() error {
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicMicros(), 10))
}

// Stopping says the service stops.
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Status says what the service is doing, as systemctl status shows it.
func (n *Notifier) Status(status string) error { return n.Send("STATUS=" + status) }

// Alive feeds the watchdog.
func (n *Notifier) Alive() error { return n.Send("WATCHDOG=1") }

// Close closes the socket.
func (n *Notifier) Close() error {
	if n == nil || n.conn == nil {
		return nil
	}
	return n.conn.Close()
}

// monotonicMicros is CLOCK_MONOTONIC in microseconds, the clock systemd
// compares RELOADING=1's MONOTONIC_USEC with.
func monotonicMicros() int64 {
	var ts syscall.Timespec
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Sec*1e6 + ts.Nsec/1e3
}

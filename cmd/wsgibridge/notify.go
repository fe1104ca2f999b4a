package main

// This file holds what the daemons tell systemd (package systemd): when
// they are ready, reloading and stopping, and a status line.

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/systemd"
)

// statusEvery is how often the status line is renewed.
const statusEvery = 2 * time.Second

// statusLine is what systemctl status shows of the pool.
func statusLine(pool *bridge.Pool) string {
	st := pool.Status()
	line := fmt.Sprintf("%d workers (%d busy, %d idle); requests served: %d", st.Size, st.Busy, st.Idle, st.Served)
	if st.Degraded != nil {
		line += "; degraded: workers keep dying young"
	}
	return line
}

// tellOnce keeps a failing notify socket to one log line.
var tellOnce sync.Once

// tell logs the first error of telling systemd.
func (d *daemonFlags) tell(log *slog.Logger, err error) {
	if err != nil {
		tellOnce.Do(func() { log.Warn("cannot tell systemd the service's state", "err", err) })
	}
}

// openNotify finds systemd's notify socket, when the daemon runs under it.
func openNotify(log *slog.Logger) *systemd.Notifier {
	n, err := systemd.FromEnv()
	if err != nil {
		log.Warn("systemd's notify socket cannot be used", "err", err)
	}
	return n
}

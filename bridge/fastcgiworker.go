package bridge

// This file holds what is particular to a worker that serves FastCGI
// itself: its settings, passed on its command line, and what it reports
// to the supervisor (log lines, access-log entries, code changes, its
// leaving).

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FastCGIConfig makes a worker take connections from a listening socket
// and answer the web server itself, so that a request crosses no other
// process. The worker then reports only log lines; Serve is not used.
type FastCGIConfig struct {
	// Listener is the listening socket, shared by all the workers.
	Listener *os.File
	// Mount is the SCRIPT_NAME the app gets (see Mount; "/" is the root),
	// unless KeepMount leaves SCRIPT_NAME and PATH_INFO as the web server
	// sent them. Empty: the web server's split is kept, nginx's stock
	// whole path in SCRIPT_NAME becomes PATH_INFO, and a prefix the web
	// server stripped goes back into SCRIPT_NAME (environ.py's split_path).
	Mount     string
	KeepMount bool
	// Timeout stops a request that runs longer: the app gets Stop raised
	// inside it and the client a 504. 0: no limit.
	Timeout time.Duration
	// HeaderTimeout closes a connection whose request's header (its
	// BEGIN_REQUEST and PARAMS, which web servers write at once) stays
	// unfinished that long. 0: 10 s.
	HeaderTimeout time.Duration
	// SendBuffer is how many bytes of a large response a worker leaves to
	// the kernel at once, the send buffer it raises a connection's to
	// when a response fills it. 0: 1 MiB.
	SendBuffer int
	// MaxRequests: the worker exits after serving that many. 0: never.
	MaxRequests int
	// Workers is reported to web servers as FCGI_MAX_CONNS and _REQS:
	// the most workers the pool runs.
	Workers int
	// Shared, set by the pool: the two ends of the socket on which busy
	// workers pass ready connections to idle ones, the board where each
	// worker marks whether it is idle, and this worker's place on it; and
	// the socket on which it sends the keeper the connections it keeps
	// (keeper.go).
	Lobby [2]*os.File
	Board *os.File
	Slot  int
	Keep  *os.File
	// AllowedAddrs, when not empty, lists the only addresses a TCP
	// connection may come from (FCGI_WEB_SERVER_ADDRS); others are closed
	// at once and logged.
	AllowedAddrs []netip.Addr
	// ReloadOnChange: before each request the worker checks the app's own
	// source files, and calls Changed instead of serving when one changed.
	ReloadOnChange bool
	Changed        func(file string)
	// AccessLog logs one line per request, as the other fronts do.
	AccessLog bool
	// Stats has the workers count their requests by status and duration
	// on the board, for Pool.Status.
	Stats bool
	// StatusPath and PingPath, when set, are paths the workers answer
	// themselves, as PHP-FPM's pm.status_path and ping.path: the status
	// document (Status(full) makes it; ?full asks for full) and "pong".
	StatusPath string
	PingPath   string
	Status     func(full bool) []byte
}

// args returns the worker's options for cfg.
func (cfg *FastCGIConfig) args() []string {
	a := []string{"workers=" + strconv.Itoa(max(cfg.Workers, 1))}
	switch {
	case cfg.KeepMount:
		a = append(a, "mount=keep")
	case cfg.Mount != "":
		a = append(a, "mount="+strings.TrimRight(cfg.Mount, "/"))
	}
	if cfg.Timeout > 0 {
		a = append(a, "timeout="+strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64))
	}
	if cfg.HeaderTimeout > 0 {
		a = append(a, "header-timeout="+strconv.FormatFloat(cfg.HeaderTimeout.Seconds(), 'f', -1, 64))
	}
	if cfg.MaxRequests > 0 {
		a = append(a, "max-requests="+strconv.Itoa(cfg.MaxRequests))
	}
	if cfg.SendBuffer > 0 {
		a = append(a, "send-buffer="+strconv.Itoa(cfg.SendBuffer))
	}
	if cfg.Board != nil {
		a = append(a, "slot="+strconv.Itoa(cfg.Slot))
	}
	if cfg.ReloadOnChange {
		a = append(a, "reload-on-change=1")
	}
	if cfg.AccessLog {
		a = append(a, "access-log=1")
	}
	if cfg.Stats {
		a = append(a, "stats=1")
	}
	if cfg.StatusPath != "" {
		a = append(a, "status-path="+cfg.StatusPath)
	}
	if cfg.PingPath != "" {
		a = append(a, "ping-path="+cfg.PingPath)
	}
	if len(cfg.AllowedAddrs) > 0 {
		allowed := make([]string, len(cfg.AllowedAddrs))
		for i, addr := range cfg.AllowedAddrs {
			allowed[i] = addr.Unmap().String()
		}
		a = append(a, "allow="+strings.Join(allowed, ","))
	}
	return a
}

// Watch reads what a FastCGI worker reports (see FastCGIConfig) until it
// exits: log lines, and whether it leaves on purpose (Leaving).
func (w *Worker) Watch() {
	for {
		h, err := readHeader(w.r, &w.hdr)
		if err != nil {
			return
		}
		switch h.kind {
		case frameLog:
			msg, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return
			}
			w.log.Log(context.Background(), logLevel(h.flags), string(msg))
		case frameAccess:
			entry, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return
			}
			w.logAccess(entry)
		case frameFinished:
			if h.flags&finishedExiting != 0 {
				w.leaving.Store(true)
			}
		case frameChanged:
			file, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return
			}
			if w.cfg.FastCGI.Changed != nil {
				w.cfg.FastCGI.Changed(string(file))
			}
		default:
			w.log.Error("worker broke the protocol; killing it", "frame", string(rune(h.kind)))
			w.Kill()
			return
		}
	}
}

// logAccess logs a FastCGI worker's access-log entry with the same
// attributes as package gateway's: method, uri, status, bytes, duration.
func (w *Worker) logAccess(entry []byte) {
	f := strings.Split(string(entry), "\x00")
	if len(f) != 5 {
		w.log.Warn("worker sent a malformed access-log entry", "entry", string(entry))
		return
	}
	status, _ := strconv.Atoi(f[2])
	n, _ := strconv.ParseInt(f[3], 10, 64)
	us, _ := strconv.ParseInt(f[4], 10, 64)
	w.log.Info("request", "method", f[0], "uri", f[1], "status", status, "bytes", n,
		"duration", time.Duration(us)*time.Microsecond)
}

// Resume tells a FastCGI worker waiting after a code change that the new
// code failed to start: it serves on with the code it has.
func (w *Worker) Resume() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, _ = w.toPy.Write([]byte{'r'})
}

// Leaving reports whether a FastCGI worker said it exits on purpose
// (after its max requests, or after SystemExit in the app).
func (w *Worker) Leaving() bool { return w.leaving.Load() }

// openLobby makes the socket pair on which a busy FastCGI worker passes
// its ready connections to an idle one (both ends are every worker's).
func openLobby() ([2]*os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return [2]*os.File{}, fmt.Errorf("bridge: lobby socket: %w", err)
	}
	return [2]*os.File{os.NewFile(uintptr(fds[0]), "lobby-out"), os.NewFile(uintptr(fds[1]), "lobby-in")}, nil
}

// openStatusQueries makes the socket pair on which a FastCGI worker asks
// for the status document, to answer StatusPath ("full" or "short" a
// message), and starts answering on the supervisor's end until the
// worker is gone; it returns the worker's end.
func openStatusQueries(status func(full bool) []byte) (*os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bridge: status socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "status-queries")
	go func() {
		defer ours.Close()
		ask := make([]byte, 16)
		for {
			n, err := ours.Read(ask)
			if err != nil || n == 0 {
				return
			}
			if _, err := ours.Write(status(string(ask[:n]) == "full")); err != nil {
				return
			}
		}
	}()
	return os.NewFile(uintptr(fds[1]), "status-queries-worker"), nil
}

// Package bridge runs WSGI applications in Python worker processes: it owns
// the request model (a CGI environ and a body), the response model (a CGI
// header block and a streamed body), the framed protocol between Go and
// the worker, and the worker program itself, embedded from worker.py.
package bridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config says how to start a worker.
type Config struct {
	// App names the WSGI callable: MODULE[:CALLABLE] or
	// path/to/file.py[:CALLABLE]; the callable defaults to "application".
	App string
	// Python is the interpreter, a path or a name looked up in PATH;
	// empty means "python3".
	Python string
	// Dir is the worker's working directory (and so the first entry of
	// its sys.path); empty means ours.
	Dir string
	// PythonPath entries go first in the worker's sys.path, in order.
	PythonPath []string
	// Env is the worker's os.environ; nil means ours. Request data never
	// belongs here (httpoxy): requests reach the app through the protocol.
	Env []string
	// Output receives the worker's stdout and stderr: the app's prints
	// and tracebacks. Nil means os.Stderr.
	Output *os.File
	// Logger receives the bridge's log lines; nil means slog.Default().
	Logger *slog.Logger
	// CacheDir keeps the worker's compiled code between starts; it must
	// be a folder only this user can write (PrivateDir). Empty: no cache.
	CacheDir string
	// StopGrace is how long a stopped request may take to end (see
	// Serve) before its worker is killed. Default 2 s.
	StopGrace time.Duration
	// FastCGI, when set, makes the worker a FastCGI server on a listening
	// socket instead of serving requests sent through Serve.
	FastCGI *FastCGIConfig
}

// FastCGIConfig makes a worker take connections from a listening socket
// and answer the web server itself, so that a request crosses no other
// process. The worker then reports only log lines; Serve is not used.
type FastCGIConfig struct {
	// Listener is the listening socket, shared by all the workers.
	Listener *os.File
	// Mount is the SCRIPT_NAME the app gets (see Mount), unless KeepMount
	// leaves SCRIPT_NAME and PATH_INFO as the web server sent them.
	Mount     string
	KeepMount bool
	// Timeout stops a request that runs longer: the app gets Stop raised
	// inside it and the client a 504. 0: no limit.
	Timeout time.Duration
	// MaxRequests: the worker exits after serving that many. 0: never.
	MaxRequests int
	// Workers is reported to web servers as FCGI_MAX_CONNS and _REQS.
	Workers int
	// Shared, set by the pool: the two ends of the socket on which busy
	// workers pass ready connections to idle ones, the board where each
	// worker marks whether it is idle, and this worker's place on it.
	Lobby [2]*os.File
	Board *os.File
	Slot  int
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
}

// args returns the worker's options for cfg.
func (cfg *FastCGIConfig) args() []string {
	a := []string{"--fastcgi", "workers=" + strconv.Itoa(max(cfg.Workers, 1))}
	if !cfg.KeepMount {
		a = append(a, "mount="+strings.TrimRight(cfg.Mount, "/"))
	}
	if cfg.Timeout > 0 {
		a = append(a, "timeout="+strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64))
	}
	if cfg.MaxRequests > 0 {
		a = append(a, "max-requests="+strconv.Itoa(cfg.MaxRequests))
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
	if len(cfg.AllowedAddrs) > 0 {
		allowed := make([]string, len(cfg.AllowedAddrs))
		for i, addr := range cfg.AllowedAddrs {
			allowed[i] = addr.Unmap().String()
		}
		a = append(a, "allow="+strings.Join(allowed, ","))
	}
	return a
}

// ResponseWriter is where a response goes. Both the CGI and the FastCGI
// front write a CGI response; an HTTP front parses the header block.
type ResponseWriter interface {
	// WriteHeader is called once, before any body, with the status code
	// and the CGI header block ("Status: 200 OK\r\n...\r\n\r\n").
	WriteHeader(status int, block []byte) error
	// Write writes body bytes.
	Write(p []byte) (int, error)
	// Flush passes what was written to the client now.
	Flush() error
}

// Result tells what a request became.
type Result struct {
	// Status is the HTTP status sent, 0 if nothing was sent.
	Status int
	// BodyBytes counts the body bytes the worker produced.
	BodyBytes int64
	// AppError says the status is the worker's 500 page for an app error.
	AppError bool
	// CutShort says the headers went out but the body did not end well:
	// the client got a truncated response.
	CutShort bool
}

// Errors returned by Serve, wrapped with details.
var (
	// ErrAborted: the app failed after its headers were sent.
	ErrAborted = errors.New("response aborted")
	// ErrWorkerDied: the worker exited or was killed during the request.
	ErrWorkerDied = errors.New("worker died")
	// ErrStopped: the request's context ended (its deadline, or a signal)
	// and the worker was killed.
	ErrStopped = errors.New("request stopped")
)

// ImportError is returned when the app cannot be imported; Msg says what
// failed and where ("app 'x' failed to import: ... (python ..., cwd ...)").
type ImportError struct {
	Msg string
}

func (e *ImportError) Error() string { return e.Msg }

// Worker is one Python process running the app. It serves one request at a
// time; Serve and Close must not be called concurrently.
type Worker struct {
	cfg    Config
	log    *slog.Logger
	cmd    *exec.Cmd
	pid    int
	toPy   *os.File // our end of the worker's fd 3
	fromPy *os.File // our end of the worker's fd 4
	r      *bufio.Reader

	wmu    sync.Mutex // serialises writes to toPy
	wbuf   []byte
	hdr    [headerLen]byte
	buf    []byte
	nextID uint16
	ready  bool
	// appFiles are the app's own source files, as the worker reported
	// them when ready.
	appFiles []string

	exited  chan struct{}
	waitErr error
	// unusable is set when the worker was killed, broke the protocol or
	// said it exits after its request.
	unusable atomic.Bool
	// leaving is set when a FastCGI worker said it exits on purpose.
	leaving atomic.Bool

	mu       sync.Mutex
	current  uint16 // the request being served, 0 between requests
	stopping bool   // current was stopped: its output is not forwarded
}

// Start starts a worker. It does not wait for the app to import: Ready
// does, and so does the first Serve.
func Start(cfg Config) (*Worker, error) {
	python := cfg.Python
	if python == "" {
		python = "python3"
	}
	path, err := exec.LookPath(python)
	if err != nil {
		return nil, fmt.Errorf("bridge: python %q not found (set --python to a Python 3.9+ interpreter): %w", python, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	out := cfg.Output
	if out == nil {
		out = os.Stderr
	}
	pyIn, toPy, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bridge: worker pipe: %w", err)
	}
	fromPy, pyOut, err := os.Pipe()
	if err != nil {
		pyIn.Close()
		toPy.Close()
		return nil, fmt.Errorf("bridge: worker pipe: %w", err)
	}
	code := pipeBundle()
	if cfg.FastCGI != nil {
		code = fastCGIBundle()
	}
	args := []string{"-c", bootstrap(len(code.data), cfg.CacheDir, code.hash)}
	files := []*os.File{pyIn, pyOut}
	if cfg.FastCGI != nil {
		args = append(args, cfg.FastCGI.args()...)
		files = append(files, cfg.FastCGI.Listener)
		if cfg.FastCGI.Board != nil {
			files = append(files, cfg.FastCGI.Lobby[0], cfg.FastCGI.Lobby[1], cfg.FastCGI.Board)
		}
		if fast, err := fastPathFile(); err == nil {
			files = append(files, fast)
			args = append(args, "fastpath="+strconv.Itoa(2+len(files)))
		}
		args = append(args, "--")
	}
	args = append(append(args, cfg.App), cfg.PythonPath...)
	cmd := exec.Command(path, args...)
	cmd.Dir = cfg.Dir
	cmd.Env = cfg.Env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.ExtraFiles = files
	// Its own process group, so a kill reaches what the app started; and
	// killed with us, so no worker outlives the bridge.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	pyIn.Close()
	pyOut.Close()
	if err != nil {
		toPy.Close()
		fromPy.Close()
		return nil, fmt.Errorf("bridge: start %s: %w", path, err)
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 2 * time.Second
	}
	w := &Worker{
		cfg:    cfg,
		cmd:    cmd,
		pid:    cmd.Process.Pid,
		toPy:   toPy,
		fromPy: fromPy,
		r:      bufio.NewReaderSize(fromPy, 64<<10),
		buf:    make([]byte, 64<<10),
		exited: make(chan struct{}),
	}
	w.log = log.With("pid", w.pid)
	go func() {
		w.waitErr = cmd.Wait()
		close(w.exited)
	}()
	// The worker reads its source first thing; until it does, this write
	// waits for room in the pipe.
	if _, err := toPy.Write(code.data); err != nil {
		w.Kill()
		return nil, fmt.Errorf("bridge: send worker source: %w", err)
	}
	return w, nil
}

// AppFiles returns the source files of the modules the app imported from
// its own folders (working directory, PythonPath, the app file's folder);
// valid once Ready has returned.
func (w *Worker) AppFiles() []string { return w.appFiles }

// Pid returns the worker's process id.
func (w *Worker) Pid() int { return w.pid }

// Ready waits until the app has imported. It returns an *ImportError if
// the import failed, and an error if ctx ends first or the worker died.
func (w *Worker) Ready(ctx context.Context) error {
	if w.ready {
		return nil
	}
	stop := context.AfterFunc(ctx, w.Kill)
	defer stop()
	h, err := readHeader(w.r, &w.hdr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("bridge: app %q did not import in time: %w", w.cfg.App, ctx.Err())
		}
		return fmt.Errorf("bridge: worker pid %d %s before the app imported: %w", w.pid, w.exitStatus(), ErrWorkerDied)
	}
	switch h.kind {
	case frameReady:
		files, err := w.readPayload(h.size, maxFilesFrame)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			w.appFiles = strings.Split(string(files), "\n")
		}
		w.ready = true
		return nil
	case frameImportFailed:
		msg, err := w.readPayload(h.size, maxLogFrame)
		if err != nil {
			return err
		}
		return &ImportError{Msg: string(msg)}
	}
	w.Kill()
	return fmt.Errorf("bridge: %w: frame %q before ready", errProtocol, h.kind)
}

// Serve runs one request on the worker and writes the response to rw; what
// rw holds unflushed when Serve returns is the caller's to send. A
// request the bridge refuses gets its error response and a *StatusError.
//
// When ctx ends (the client went away, a deadline, a signal) the request
// is stopped: the worker gets SIGUSR1 and raises Stop inside the app, so
// its iterable is closed and the worker serves on; if the request has not
// ended within Config.StopGrace (the app is stuck where Python cannot
// interrupt it) the worker is killed. Serve then returns an error wrapping
// ErrStopped, and the client gets 504 if nothing was sent yet. If the
// worker dies, the client gets 502 and the error wraps ErrWorkerDied.
func (w *Worker) Serve(ctx context.Context, req *Request, rw ResponseWriter) (Result, error) {
	env, length, toEOF, err := normalize(req.Env)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) {
			return Result{Status: se.Status}, errors.Join(err, WriteError(rw, se.Status))
		}
		return Result{}, err
	}
	w.nextID++
	id := w.nextID
	var flags byte
	if req.RunOnce {
		flags |= flagRunOnce
	}
	if toEOF {
		flags |= flagInputTerminated
	}
	hasBody := req.Body != nil && (length > 0 || toEOF)

	w.wbuf = appendHeader(w.wbuf[:0], frameRequest, flags, id, 0)
	w.wbuf = appendEnviron(w.wbuf, env)
	putSize(w.wbuf, len(w.wbuf)-headerLen)
	if !hasBody {
		w.wbuf = appendHeader(w.wbuf, frameBodyEnd, 0, id, 0)
	}

	w.mu.Lock()
	w.current, w.stopping = id, false
	w.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { w.stopRequest(id) })
	defer func() {
		stop()
		w.mu.Lock()
		w.current = 0
		w.mu.Unlock()
	}()
	w.wmu.Lock()
	_, werr := w.toPy.Write(w.wbuf)
	w.wmu.Unlock()
	var body *bodySender
	if hasBody && werr == nil {
		body = &bodySender{w: w, id: id, body: req.Body, remaining: length}
		go body.run()
		defer body.end()
	}
	if err := w.Ready(ctx); err != nil {
		var ie *ImportError
		if errors.As(err, &ie) {
			return Result{}, err
		}
		return w.failed(ctx, rw, Result{}, err)
	}
	return w.readResponse(ctx, id, rw)
}

func (w *Worker) readResponse(ctx context.Context, id uint16, rw ResponseWriter) (Result, error) {
	var res Result
	// After a client write fails the worker's output is still read to
	// its end, so the worker stays in step; the error is returned then.
	var clientErr error
	for {
		h, err := readHeader(w.r, &w.hdr)
		if err != nil {
			return w.failed(ctx, rw, res, err)
		}
		if h.id != id {
			return w.desync(ctx, rw, res, fmt.Sprintf("frame %q for request %d during request %d", h.kind, h.id, id))
		}
		switch h.kind {
		case frameHead:
			block, err := w.readPayload(h.size, maxHeadFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			if w.stopped() {
				continue // the request was stopped: nothing more goes out
			}
			if res.Status != 0 {
				return w.desync(ctx, rw, res, "second header block")
			}
			status, ok := parseStatus(block)
			if !ok {
				return w.desync(ctx, rw, res, "header block without a Status line")
			}
			res.Status = status
			clientErr = rw.WriteHeader(status, block)
		case frameData:
			stopped := w.stopped()
			if (res.Status == 0 && !stopped) || h.size > maxDataFrame {
				return w.desync(ctx, rw, res, fmt.Sprintf("body frame of %d bytes", h.size))
			}
			if !stopped {
				res.BodyBytes += int64(h.size)
			}
			for n := int(h.size); n > 0; {
				chunk := w.buf[:min(n, len(w.buf))]
				if _, err := io.ReadFull(w.r, chunk); err != nil {
					return w.failed(ctx, rw, res, err)
				}
				n -= len(chunk)
				if clientErr == nil && !stopped {
					_, clientErr = rw.Write(chunk)
				}
			}
			if h.flags&flushData != 0 && clientErr == nil && !stopped {
				clientErr = rw.Flush()
			}
		case frameLog:
			msg, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			w.log.Log(ctx, logLevel(h.flags), string(msg))
		case frameFinished:
			// No flush here: the front ends the response, so what is
			// left goes out with its end (one write for a small one).
			res.AppError = h.flags&finishedAppError != 0
			if h.flags&finishedExiting != 0 {
				w.unusable.Store(true)
			}
			if w.stopped() {
				return w.stoppedResult(ctx, rw, res)
			}
			if clientErr != nil {
				return res, fmt.Errorf("bridge: write response: %w", clientErr)
			}
			return res, nil
		case frameAborted:
			if h.flags&finishedExiting != 0 {
				w.unusable.Store(true)
			}
			msg, err := w.readPayload(h.size, maxLogFrame)
			if err != nil {
				return w.failed(ctx, rw, res, err)
			}
			if w.stopped() {
				return w.stoppedResult(ctx, rw, res)
			}
			if clientErr == nil {
				clientErr = rw.Flush()
			}
			res.CutShort = true
			return res, errors.Join(fmt.Errorf("bridge: %w: %s", ErrAborted, msg), clientErr)
		default:
			return w.desync(ctx, rw, res, fmt.Sprintf("unknown frame %q", h.kind))
		}
	}
}

// stopAgain is how often a stopped request that goes on is signalled
// again: CPython handles a signal that lands just before a blocking call
// (a sleep, a read) only when the call returns, and a second one
// interrupts the call. The worker raises Stop once per request.
const stopAgain = 100 * time.Millisecond

// stopRequest asks the worker to stop request id, again every stopAgain,
// and kills it after StopGrace in case the app cannot be interrupted.
// It does nothing more once id has ended.
func (w *Worker) stopRequest(id uint16) {
	deadline := time.Now().Add(w.cfg.StopGrace)
	var signal func()
	signal = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.current != id {
			return
		}
		w.stopping = true
		select {
		case <-w.exited:
			return // its pid may be another process's now
		default:
		}
		if !time.Now().Before(deadline) {
			w.Kill()
			return
		}
		_ = syscall.Kill(w.pid, syscall.SIGUSR1)
		time.AfterFunc(min(stopAgain, time.Until(deadline)), signal)
	}
	signal()
}

func (w *Worker) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping
}

// stoppedResult ends a stopped request that the worker ended in time: the
// worker serves on; the client gets 504 if it got nothing yet.
func (w *Worker) stoppedResult(ctx context.Context, rw ResponseWriter, res Result) (Result, error) {
	err := fmt.Errorf("bridge: %w (%v); worker pid %d stopped the app", ErrStopped, context.Cause(ctx), w.pid)
	res.CutShort = res.Status != 0
	if res.Status == 0 {
		res.Status = 504
		err = errors.Join(err, WriteError(rw, 504))
	}
	return res, err
}

// failed handles a worker that stopped answering: killed after a stop
// (504) or dead by itself (502).
func (w *Worker) failed(ctx context.Context, rw ResponseWriter, res Result, cause error) (Result, error) {
	w.Kill()
	var err error
	status := 502
	if ctx.Err() != nil {
		status = 504
		err = fmt.Errorf("bridge: %w (%v); worker pid %d killed", ErrStopped, context.Cause(ctx), w.pid)
	} else {
		err = fmt.Errorf("bridge: %w: worker pid %d %s during the request (%v)", ErrWorkerDied, w.pid, w.exitStatus(), cause)
	}
	res.CutShort = res.Status != 0
	if res.Status == 0 {
		res.Status = status
		err = errors.Join(err, WriteError(rw, status))
	}
	return res, err
}

// desync handles a worker that broke the protocol: it is killed.
func (w *Worker) desync(ctx context.Context, rw ResponseWriter, res Result, what string) (Result, error) {
	return w.failed(ctx, rw, res, fmt.Errorf("%w: %s", errProtocol, what))
}

func (w *Worker) readPayload(size uint32, limit int) ([]byte, error) {
	if int64(size) > int64(limit) {
		w.Kill()
		return nil, fmt.Errorf("bridge: %w: frame of %d bytes, limit %d", errProtocol, size, limit)
	}
	p := make([]byte, size)
	if _, err := io.ReadFull(w.r, p); err != nil {
		return nil, err
	}
	return p, nil
}

// exitStatus waits briefly for the worker to exit and says how it did.
func (w *Worker) exitStatus() string {
	select {
	case <-w.exited:
	case <-time.After(2 * time.Second):
		w.Kill()
		<-w.exited
	}
	var ee *exec.ExitError
	if errors.As(w.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("was killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	}
	if w.waitErr != nil {
		return fmt.Sprintf("ended (%v)", w.waitErr)
	}
	return "exited with status 0"
}

// Usable reports whether the worker can take another request: it is
// alive as far as we know, in step with the protocol, and not exiting.
func (w *Worker) Usable() bool {
	if w.unusable.Load() {
		return false
	}
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// Kill kills the worker and everything in its process group at once.
func (w *Worker) Kill() {
	w.unusable.Store(true)
	select {
	case <-w.exited:
	default:
		_ = syscall.Kill(-w.pid, syscall.SIGKILL)
	}
}

// Close stops the worker: it closes the request pipe, which the worker
// takes as the sign to exit, and kills it if it has not exited within
// grace. Close returns when the worker is gone.
func (w *Worker) Close(grace time.Duration) {
	w.wmu.Lock()
	w.toPy.Close()
	w.wmu.Unlock()
	select {
	case <-w.exited:
	case <-time.After(grace):
		w.Kill()
		<-w.exited
	}
	w.fromPy.Close()
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

// logLevel is the level of an L frame's flags.
func logLevel(flags byte) slog.Level {
	switch flags {
	case logWarn:
		return slog.LevelWarn
	case logError:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// logAccess logs a FastCGI worker's access-log entry with the same
// attributes as the gateway's: method, uri, status, bytes, duration.
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

// Exited is closed when the worker process has exited.
func (w *Worker) Exited() <-chan struct{} { return w.exited }

func putSize(frame []byte, n int) {
	frame[4], frame[5], frame[6], frame[7] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// parseStatus reads the code from a block that starts "Status: NNN".
func parseStatus(block []byte) (int, bool) {
	const prefix = "Status: "
	if len(block) < len(prefix)+3 || string(block[:len(prefix)]) != prefix {
		return 0, false
	}
	code, err := strconv.Atoi(string(block[len(prefix) : len(prefix)+3]))
	if err != nil || code < 100 {
		return 0, false
	}
	return code, true
}

// bodySender streams a request body to the worker as B frames and ends
// it with one E frame, from its own goroutine, so that the response is
// read while the body is still being sent.
type bodySender struct {
	w    *Worker
	id   uint16
	body io.Reader
	// Guarded by w.wmu; run reads them without it, as their only writer.
	remaining int64 // -1: until EOF
	sent      int64
	ended     bool // E was sent
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, headerLen+bodyChunk); return &b }}

func (s *bodySender) run() {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for s.remaining != 0 {
		n := len(buf) - headerLen
		if s.remaining > 0 && s.remaining < int64(n) {
			n = int(s.remaining)
		}
		n, rerr := s.body.Read(buf[headerLen : headerLen+n])
		if n > 0 {
			appendHeader(buf[:0], frameBody, 0, s.id, n)
			if !s.send(buf[:headerLen+n], n) {
				return
			}
		}
		if rerr != nil {
			if s.remaining > 0 {
				s.w.log.Warn("request body ended early", "got", s.sent, "content_length", s.sent+s.remaining, "err", rerr)
			}
			break
		}
	}
	s.end()
}

// send writes one frame of n body bytes unless the body was ended; false
// means stop. The counters change under the lock, as end reads them.
func (s *bodySender) send(frame []byte, n int) bool {
	s.w.wmu.Lock()
	defer s.w.wmu.Unlock()
	if s.ended {
		return false
	}
	if _, err := s.w.toPy.Write(frame); err != nil {
		s.ended = true
		return false
	}
	s.sent += int64(n)
	if s.remaining > 0 {
		s.remaining -= int64(n)
	}
	return true
}

// end sends the E frame once; called when the body ends and when Serve
// returns, whichever is first.
func (s *bodySender) end() {
	s.w.wmu.Lock()
	defer s.w.wmu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	var flags byte
	if s.remaining > 0 {
		flags = flagTruncated
	}
	var frame [headerLen]byte
	_, _ = s.w.toPy.Write(appendHeader(frame[:0], frameBodyEnd, flags, s.id, 0))
}

// WriteError writes a short error response with the given status.
func WriteError(rw ResponseWriter, status int) error {
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	body := text + "\n"
	block := "Status: " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	if err := rw.WriteHeader(status, []byte(block)); err != nil {
		return err
	}
	if _, err := rw.Write([]byte(body)); err != nil {
		return err
	}
	return rw.Flush()
}

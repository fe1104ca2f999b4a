package bridge

// This file holds one worker: a Python process running the app, started
// with the embedded worker package (python.go), ready once the app has
// imported, and killed or closed when it is done. What it does with
// requests is serve.go's (the pipe modes) and fastcgiworker.go's.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
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
	// Stacks makes the worker give the Python stacks of its threads on
	// request (Stacks): the slow log's, the status page's, and the log's
	// when an app that does not stop at the timeout is killed.
	// StackDepth is how many frames per thread that log shows (0: 20).
	Stacks     bool
	StackDepth int

	// forks makes the process the fork server of a preloading pool
	// (forker.go): its end of the socket on which it is asked for
	// workers. from, when set, has the worker forked by that server
	// instead of started.
	forks *os.File
	from  *forker
}

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
	pid    int
	toPy   *os.File // our end of the worker's fd 3
	toPyFD syscall.RawConn
	fromPy *os.File // our end of the worker's fd 4
	r      *bufio.Reader

	wmu    sync.Mutex // serialises writes to toPy
	hdr    [headerLen]byte
	buf    []byte
	nextID uint16
	ready  bool
	// appFiles are the app's own source files, as the worker reported
	// them when ready.
	appFiles []string

	exited chan struct{}
	// state is how the process ended, once exited is closed; nil if it
	// could not be waited for (waitErr says why).
	state   *os.ProcessState
	waitErr error
	// unusable is set when the worker was killed, broke the protocol or
	// said it exits after its request.
	unusable atomic.Bool
	// leaving is set when a FastCGI worker said it exits on purpose.
	leaving atomic.Bool

	mu       sync.Mutex
	current  uint16 // the request being served, 0 between requests
	stopping bool   // current was stopped: its output is not forwarded
	answered bool   // current's whole response went to the client
	late     *time.Timer

	stacks *stackPipe // with Config.Stacks
}

// Start starts a worker. It does not wait for the app to import: Ready
// does, and so does the first Serve.
func Start(cfg Config) (*Worker, error) {
	cfg.forks, cfg.from = nil, nil
	return start(cfg)
}

// start starts a worker, the fork server of a preloading pool, or a
// worker forked from one, as cfg says.
func start(cfg Config) (*Worker, error) {
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
	// theirs are the worker's ends of its pipes, closed here as soon as
	// it has them (a read end left open here would let the write of its
	// source below block for good if it died first); ours are closed too
	// if it cannot be started.
	var theirs, ours []*os.File
	closeTheirs := func() {
		for _, f := range theirs {
			f.Close()
		}
		theirs = nil
	}
	abandon := func(err error) (*Worker, error) {
		closeTheirs()
		for _, f := range ours {
			f.Close()
		}
		return nil, err
	}
	pyIn, toPy, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bridge: worker pipe: %w", err)
	}
	theirs, ours = append(theirs, pyIn), append(ours, toPy)
	fromPy, pyOut, err := answerPipe(cfg.FastCGI == nil)
	if err != nil {
		return abandon(fmt.Errorf("bridge: worker pipe: %w", err))
	}
	theirs, ours = append(theirs, pyOut), append(ours, fromPy)
	code := pipeBundle()
	if cfg.FastCGI != nil {
		code = fastCGIBundle()
	}
	// The worker's command line: [--MODE OPTION=VALUE... --] APP
	// [PYTHONPATH...]; a one-shot CGI worker has no options.
	files := []*os.File{pyIn, pyOut}
	mode, opts := "--pipe", []string(nil)
	if cfg.FastCGI != nil {
		mode, opts = "--fastcgi", cfg.FastCGI.args()
		files = append(files, cfg.FastCGI.Listener)
		if cfg.FastCGI.Board != nil {
			files = append(files, cfg.FastCGI.Lobby[0], cfg.FastCGI.Lobby[1], cfg.FastCGI.Board)
		}
		if cfg.FastCGI.Keep != nil {
			files = append(files, cfg.FastCGI.Keep)
			opts = append(opts, "keep="+strconv.Itoa(2+len(files)))
		}
		if fast, err := fastPathFile(); err == nil {
			files = append(files, fast)
			opts = append(opts, "fastpath="+strconv.Itoa(2+len(files)))
		}
	}
	// The files before shared are the same in every worker of a pool; a
	// fork server has them already, at the same numbers, and is sent only
	// the rest (and the first two, the worker's own pipes).
	shared := len(files)
	if cfg.forks != nil {
		files = append(files, cfg.forks)
		opts = append(opts, "forks="+strconv.Itoa(2+len(files)))
	}
	if cfg.FastCGI != nil && cfg.forks == nil {
		if cfg.FastCGI.StatusPath != "" && cfg.FastCGI.Status != nil {
			queries, err := openStatusQueries(cfg.FastCGI.Status)
			if err != nil {
				return abandon(err)
			}
			theirs = append(theirs, queries)
			files = append(files, queries)
			opts = append(opts, "status="+strconv.Itoa(2+len(files)))
		}
	}
	var stackR *os.File
	if cfg.Stacks && cfg.forks == nil {
		r, w, err := os.Pipe()
		if err != nil {
			return abandon(fmt.Errorf("bridge: worker stack pipe: %w", err))
		}
		stackR, theirs, ours = r, append(theirs, w), append(ours, r)
		files = append(files, w)
		opts = append(opts, "stacks="+strconv.Itoa(2+len(files)))
	}
	args := []string{"-c", bootstrap(len(code.data), cfg.CacheDir, code.hash)}
	if opts != nil {
		args = append(append(append(args, mode), opts...), "--")
	}
	args = append(append(args, cfg.App), cfg.PythonPath...)
	var proc *os.Process
	var wait func() (*os.ProcessState, error)
	if cfg.from != nil {
		proc, err = forkWorker(cfg.from, args[2:], out, files, shared)
		if err != nil {
			return abandon(err)
		}
		// It serves once told: it is ours now. If it died, Ready says so.
		_, _ = toPy.Write([]byte{'g'})
		wait = proc.Wait
	} else {
		cmd := exec.Command(path, args...)
		cmd.Dir = cfg.Dir
		cmd.Env = cfg.Env
		cmd.Stdout = out
		cmd.Stderr = out
		cmd.ExtraFiles = files
		// Its own process group, so a kill reaches what the app started;
		// and killed with us, so no worker outlives the bridge.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return abandon(fmt.Errorf("bridge: start %s: %w", path, err))
		}
		proc, wait = cmd.Process, func() (*os.ProcessState, error) {
			err := cmd.Wait()
			if cmd.ProcessState != nil {
				err = nil // an exit status other than 0 is the state's to tell
			}
			return cmd.ProcessState, err
		}
	}
	closeTheirs()
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 2 * time.Second
	}
	w := &Worker{
		cfg:    cfg,
		pid:    proc.Pid,
		toPy:   toPy,
		fromPy: fromPy,
		r:      bufio.NewReaderSize(fromPy, 64<<10),
		buf:    make([]byte, 64<<10),
		exited: make(chan struct{}),
	}
	w.log = log.With("pid", w.pid)
	// Only a closed file has none; trySend then leaves the writing to send.
	w.toPyFD, _ = toPy.SyscallConn()
	if stackR != nil {
		w.stacks = readStacks(stackR)
	}
	go func() {
		w.state, w.waitErr = wait()
		close(w.exited)
	}()
	if cfg.from != nil {
		return w, nil
	}
	// The worker reads its source first thing; until it does, this write
	// waits for room in the pipe.
	if _, err := toPy.Write(code.data); err != nil {
		w.Kill()
		return nil, fmt.Errorf("bridge: send worker source: %w", err)
	}
	return w, nil
}

// forkWorker has f fork a worker with the command line argv: its output
// on out (fds 1 and 2), files at the numbers a started worker has them,
// of which f has those before shared already.
func forkWorker(f *forker, argv []string, out *os.File, files []*os.File, shared int) (*os.Process, error) {
	mine := append([]*os.File{out, out, files[0], files[1]}, files[shared:]...)
	targets := []int{1, 2, 3, 4}
	for i := shared; i < len(files); i++ {
		targets = append(targets, 3+i)
	}
	return f.fork(argv, mine, targets)
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
	return describeExit(w.state, w.waitErr)
}

// describeExit says how a process ended, as its wait gave it.
func describeExit(state *os.ProcessState, err error) string {
	if state == nil {
		return fmt.Sprintf("ended (%v)", err)
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("was killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exited with status %d", state.ExitCode())
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

// Exited is closed when the worker process has exited.
func (w *Worker) Exited() <-chan struct{} { return w.exited }

// answerPipe makes the pipe a worker answers on. A worker that serves
// over the pipe (the http and cgi modes) is waited for on each request's
// path, so its pipe blocks: the kernel then wakes the goroutine's own
// thread when the answer comes, where Go's poller would take a wake-up of
// its own and hand the goroutine to a thread after it, twice the switches
// (BenchmarkPoolNoop: 37 us against 28). A FastCGI worker's pipe is read
// off the request's path and waits in the poller, holding no thread.
func answerPipe(onPath bool) (r, w *os.File, err error) {
	if !onPath {
		return os.Pipe()
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), nil
}

package bridge

// This file holds the fork server of a preloading pool (PoolConfig.Preload):
// one Python process that imports the app and forks each worker from
// itself when asked (wsgibridge/forker.py), so that the workers share
// the imported app's pages and a new worker needs no import of its own.
//
// The supervisor still owns every worker. It is a child subreaper, and
// the fork server forks each worker through a child that exits at once,
// so each worker is the supervisor's own child: it is waited for, its
// exit and cause seen, as a worker started by exec is; a kill of the
// fork server takes none of them. A fork server that dies is replaced by
// the next worker start, which then imports the app once more.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// forkTimeout bounds one fork: a fork server that takes longer is taken
// for stuck and killed.
const forkTimeout = 10 * time.Second

// forker is a running fork server.
type forker struct {
	w    *Worker // the process, started and made ready as a worker is
	ctl  *net.UnixConn
	mu   sync.Mutex // one fork at a time
	done bool       // closed on purpose (under mu)
}

// startForker starts a fork server for workers configured as cfg, calls
// started with its pid, and waits until it has imported the app; an
// *ImportError says why not.
func startForker(ctx context.Context, cfg Config, started func(pid int)) (*forker, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bridge: fork server socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "forks")
	ours := os.NewFile(uintptr(fds[0]), "forks-ctl")
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("bridge: fork server socket: %w", err)
	}
	cfg.forks, cfg.from = theirs, nil
	w, err := start(cfg)
	theirs.Close()
	if err != nil {
		c.Close()
		return nil, err
	}
	started(w.Pid())
	f := &forker{w: w, ctl: c.(*net.UnixConn)}
	if err := w.Ready(ctx); err != nil {
		f.close(0)
		return nil, err
	}
	return f, nil
}

// fork has the fork server fork a worker with the command line argv
// (what follows the bootstrap) and files, each at the number targets
// gives, and returns the worker's process, a child of ours.
func (f *forker) fork(argv []string, files []*os.File, targets []int) (*os.Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil, errors.New("bridge: the fork server is closed")
	}
	t := make([]string, len(targets))
	for i, n := range targets {
		t[i] = strconv.Itoa(n)
	}
	msg := strings.Join(t, ",") + "\n" + strings.Join(argv, "\x00")
	fds := make([]int, len(files))
	for i, file := range files {
		fds[i] = int(file.Fd())
	}
	_ = f.ctl.SetDeadline(time.Now().Add(forkTimeout))
	if _, _, err := f.ctl.WriteMsgUnix([]byte(msg), syscall.UnixRights(fds...), nil); err != nil {
		return nil, f.broken(fmt.Errorf("bridge: ask the fork server pid %d for a worker: %w", f.w.Pid(), err))
	}
	reply := make([]byte, 256)
	n, err := f.ctl.Read(reply)
	if err != nil || n == 0 {
		if err == nil {
			err = errors.New("no answer")
		}
		return nil, f.broken(fmt.Errorf("bridge: the fork server pid %d did not fork a worker: %w", f.w.Pid(), err))
	}
	answer := string(reply[:n])
	pid, err := strconv.Atoi(strings.TrimPrefix(answer, "pid "))
	if !strings.HasPrefix(answer, "pid ") || err != nil || pid <= 0 {
		return nil, fmt.Errorf("bridge: the fork server pid %d could not fork a worker: %s", f.w.Pid(), strings.TrimPrefix(answer, "error "))
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("bridge: forked worker pid %d: %w", pid, err)
	}
	return proc, nil
}

// broken kills a fork server that failed a fork, so that the next start
// makes another, and returns err.
func (f *forker) broken(err error) error {
	f.w.Kill()
	return err
}

// alive reports whether the fork server can still fork.
func (f *forker) alive() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.done && f.w.Usable()
}

// close stops the fork server: closing its socket is its sign to exit;
// past grace it is killed. The workers it forked run on.
func (f *forker) close(grace time.Duration) {
	f.mu.Lock()
	f.done = true
	f.ctl.Close()
	f.mu.Unlock()
	f.w.Close(grace)
}

// preload keeps a fork server running for each generation of a pool's
// workers that still starts workers: the current one, and during a
// reload the one before.
type preload struct {
	// start starts generation gen's fork server.
	start func(gen int) (*forker, error)
	log   *slog.Logger

	mu      sync.Mutex // held while a fork server starts, so only one does
	forkers map[int]*forker
	// orphans are the monitor's (tend).
	orphans orphans
}

// use starts generation gen's fork server, which imports the app anew.
func (pl *preload) use(gen int) error {
	f, err := pl.start(gen)
	if err != nil {
		return err
	}
	pl.mu.Lock()
	old := pl.forkers[gen]
	pl.forkers[gen] = f
	pl.mu.Unlock()
	if old != nil {
		old.close(time.Second)
	}
	return nil
}

// forker returns generation gen's fork server, starting another if it
// died.
func (pl *preload) forker(gen int) (*forker, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	f := pl.forkers[gen]
	if f == nil {
		return nil, fmt.Errorf("bridge: no fork server for the workers of a reloaded app")
	}
	if f.alive() {
		return f, nil
	}
	pl.log.Warn("the fork server is gone; starting another, which imports the app", "pid", f.w.Pid(), "how", f.w.exitStatus())
	f.close(0)
	delete(pl.forkers, gen)
	f, err := pl.start(gen)
	if err != nil {
		return nil, err
	}
	pl.forkers[gen] = f
	return f, nil
}

// retire stops the fork servers of the generations before gen, or of
// gen alone if only is set.
func (pl *preload) retire(gen int, only bool) {
	pl.mu.Lock()
	var gone []*forker
	for g, f := range pl.forkers {
		if g < gen && !only || g == gen && only {
			gone = append(gone, f)
			delete(pl.forkers, g)
		}
	}
	pl.mu.Unlock()
	for _, f := range gone {
		f.close(time.Second)
	}
}

// pids returns the running fork servers' pids.
func (pl *preload) pids() []int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var pids []int
	for _, f := range pl.forkers {
		pids = append(pids, f.w.Pid())
	}
	return pids
}

// close stops every fork server.
func (pl *preload) close() { pl.retire(math.MaxInt, false) }

// dead reports whether generation gen's fork server died, and no start
// of another is under way.
func (pl *preload) dead(gen int) bool {
	if !pl.mu.TryLock() {
		return false
	}
	defer pl.mu.Unlock()
	f := pl.forkers[gen]
	return f != nil && !f.alive()
}

// tendPreload is the monitor's, on its slow tick. A dead fork server of
// the current generation is replaced now, so that the next worker start
// does not wait for an import; and the orphans the app left are reaped.
func (p *Pool) tendPreload() {
	p.mu.Lock()
	gen, closing := p.gen, p.closing
	known := map[int]bool{}
	for m := range p.members {
		known[m.w.Pid()] = true
	}
	p.mu.Unlock()
	for _, pid := range p.preload.pids() {
		known[pid] = true
	}
	for _, pid := range p.preload.orphans.reap(known) {
		p.log.Info("reaped a process the app left behind", "pid", pid)
	}
	if closing || !p.preload.dead(gen) {
		return
	}
	p.slots.Add(1)
	go func() {
		defer p.slots.Done()
		if _, err := p.preload.forker(gen); err != nil {
			p.log.Error("the fork server could not be started again; the next worker start tries again", "err", err)
		}
	}()
}

// becomeSubreaper makes this process the reaper of its descendants'
// orphans: the workers a fork server forks become its children.
func becomeSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("bridge: become a child subreaper: %w", errno)
	}
	return nil
}

package bridge

// This file holds the pool: a fixed number of workers, each kept alive by
// a slot goroutine that starts it, waits until it is retired or dies, and
// starts the next (with a back-off when workers die young, so a crash loop
// cannot fork-bomb the machine). Requests take an idle worker or wait in a
// bounded queue.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"time"
)

// PoolConfig says how to run a pool of workers.
type PoolConfig struct {
	// Worker says how to start each worker. Its Output is replaced: the
	// pool logs each line the worker prints.
	Worker Config
	// Workers is the number of workers. Default 2.
	Workers int
	// Backlog is how many requests may wait for a worker; beyond it a
	// request is refused at once with 503. Default 64.
	Backlog int
	// Timeout ends a request stuck in the app: the worker is killed and
	// replaced, and the client gets 504 if nothing was sent yet. It also
	// bounds the wait for a worker (then 503). 0: no limit.
	Timeout time.Duration
	// ImportTimeout bounds a worker's start, the app's import included.
	// Default 60 s.
	ImportTimeout time.Duration
	// MaxRequests recycles a worker after that many requests, plus a
	// random 0..MaxRequestsJitter so workers do not all restart at once.
	// 0: never.
	MaxRequests       int
	MaxRequestsJitter int
	// GraceTimeout is how long a retired worker may take to exit after
	// its request pipe closes before it is killed. Default 5 s.
	GraceTimeout time.Duration
}

// Errors of Pool.Serve, when no worker took the request. Serve has then
// answered the client with 503.
var (
	// ErrOverloaded: every worker is busy and the queue is full.
	ErrOverloaded = errors.New("bridge: every worker is busy and the queue is full")
	// ErrQueueTimeout: no worker became free within the timeout.
	ErrQueueTimeout = errors.New("bridge: no worker became free in time")
	// ErrNoWorkers: no worker is running and none could be started.
	ErrNoWorkers = errors.New("bridge: no worker is running")
	// ErrClosed: the pool is shutting down.
	ErrClosed = errors.New("bridge: the pool is shutting down")
)

// member is one worker of the pool.
type member struct {
	w        *Worker
	gen      int
	born     time.Time
	served   int
	limit    int // requests before recycling; 0: no limit
	retire   chan struct{}
	once     sync.Once
	recycled bool // retired on purpose, not because it died
	slot     int  // its place on the board of FastCGI workers, or -1
}

func (m *member) retireNow(recycled bool) {
	m.once.Do(func() {
		m.recycled = recycled
		close(m.retire)
	})
}

// Pool runs requests on a set of workers.
type Pool struct {
	cfg PoolConfig
	log *slog.Logger

	mu        sync.Mutex
	gen       int
	members   map[*member]struct{} // every started, not yet closed member
	idle      []*member
	waiters   []chan *member
	live      int // ready members of the current generation
	failing   bool
	closing   bool
	lastFull  time.Time
	slots     sync.WaitGroup
	reloading sync.Mutex

	timeoutCause error

	// For FastCGI workers: see FastCGIConfig.
	lobby     [2]*os.File
	board     *os.File
	boardData []byte
	slotUsed  [boardSlots]bool
	// changeSeen is the generation whose code change started a reload.
	changeSeen int
}

// boardSlots bounds the FastCGI workers alive at once (a reload has two
// generations alive).
const boardSlots = 64

// boardRunning is where the board's flags "the app is running under a
// timeout" begin, one byte per slot (after 64 idle flags and 64 counts).
const boardRunning = 64 + 8*boardSlots

// takeSlot returns a free place on the board, marked busy.
func (p *Pool) takeSlot() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, used := range p.slotUsed {
		if !used {
			p.slotUsed[i] = true
			p.boardData[i] = 0
			return i
		}
	}
	return boardSlots - 1
}

// codeChanged reloads the pool once when a worker of generation gen says
// the app's code changed.
func (p *Pool) codeChanged(gen int, file string) {
	p.mu.Lock()
	if gen != p.gen || p.changeSeen == gen || p.closing {
		p.mu.Unlock()
		return
	}
	p.changeSeen = gen
	p.mu.Unlock()
	p.log.Info("the app's code changed: reloading", "file", file)
	go func() {
		err := p.Reload()
		if err == nil {
			return
		}
		p.log.Error("reload failed; the running workers stay", "err", err)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.changeSeen = 0
		for m := range p.members {
			if m.gen == gen {
				m.w.Resume()
			}
		}
	}()
}

// Activity returns, for FastCGI workers, a number that changes whenever
// a request is served, and whether a worker is serving one now.
func (p *Pool) Activity() (served uint64, busy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.boardData == nil {
		return 0, false
	}
	for i, used := range p.slotUsed {
		if !used {
			continue
		}
		served += binary.LittleEndian.Uint64(p.boardData[64+8*i:])
		busy = busy || p.boardData[i] == 0
	}
	return served, busy
}

func (p *Pool) freeSlot(i int) {
	if i < 0 || p.boardData == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.boardData[i] = 0
	p.boardData[boardRunning+i] = 0
	binary.LittleEndian.PutUint64(p.boardData[64+8*i:], 0)
	p.slotUsed[i] = false
}

// openBoard makes the lobby socket and the board the FastCGI workers share.
func (p *Pool) openBoard() error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bridge: lobby socket: %w", err)
	}
	p.lobby = [2]*os.File{os.NewFile(uintptr(fds[0]), "lobby-out"), os.NewFile(uintptr(fds[1]), "lobby-in")}
	f, err := os.CreateTemp("", "wsgibridge-board-")
	if err != nil {
		return fmt.Errorf("bridge: worker board: %w", err)
	}
	_ = os.Remove(f.Name())
	if err := f.Truncate(4096); err != nil {
		return fmt.Errorf("bridge: worker board: %w", err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("bridge: worker board: %w", err)
	}
	p.board, p.boardData = f, data
	return nil
}

// PoolStats is a snapshot of a pool.
type PoolStats struct {
	Live, Idle, Waiting int
	Pids                []int
}

// NewPool starts the workers and waits until each has imported the app.
// If the app fails to import, NewPool stops what it started and returns
// the *ImportError.
func NewPool(cfg PoolConfig) (*Pool, error) {
	setDefault(&cfg.Workers, 2)
	setDefault(&cfg.Backlog, 64)
	setDefault(&cfg.ImportTimeout, 60*time.Second)
	setDefault(&cfg.GraceTimeout, 5*time.Second)
	log := cfg.Worker.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pool{cfg: cfg, log: log, gen: 1, members: map[*member]struct{}{},
		timeoutCause: fmt.Errorf("the app ran longer than the %v timeout", cfg.Timeout)}
	if cfg.Worker.FastCGI != nil {
		if err := p.openBoard(); err != nil {
			return nil, err
		}
	}
	ms, err := p.spawnAll(p.gen)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	for _, m := range ms {
		p.startSlot(m)
	}
	p.mu.Unlock()
	return p, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// spawnAll starts cfg.Workers workers at once and waits until all are
// ready; on any failure it closes them all.
func (p *Pool) spawnAll(gen int) ([]*member, error) {
	ms := make([]*member, p.cfg.Workers)
	errs := make([]error, p.cfg.Workers)
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i], errs[i] = p.spawn(gen)
		}()
	}
	wg.Wait()
	var ie *ImportError
	for _, err := range errs {
		if errors.As(err, &ie) {
			break
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		return ms, nil
	}
	for _, m := range ms {
		if m != nil {
			p.closeMember(m)
		}
	}
	if ie != nil {
		return nil, ie
	}
	return nil, err
}

// spawn starts one worker and waits until it is ready.
func (p *Pool) spawn(gen int) (*member, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bridge: worker output pipe: %w", err)
	}
	cfg := p.cfg.Worker
	cfg.Output = w
	slot := -1
	if cfg.FastCGI != nil {
		fc := *cfg.FastCGI
		if p.cfg.MaxRequests > 0 {
			fc.MaxRequests = p.cfg.MaxRequests + rand.IntN(p.cfg.MaxRequestsJitter+1)
		}
		if p.board != nil {
			slot = p.takeSlot()
			fc.Lobby, fc.Board, fc.Slot = p.lobby, p.board, slot
		}
		fc.Changed = func(file string) { p.codeChanged(gen, file) }
		cfg.FastCGI = &fc
	}
	wk, err := Start(cfg)
	w.Close()
	if err != nil {
		r.Close()
		p.freeSlot(slot)
		return nil, err
	}
	go p.logOutput(r, wk.Pid())
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ImportTimeout)
	defer cancel()
	if err := wk.Ready(ctx); err != nil {
		wk.Close(p.cfg.GraceTimeout)
		p.freeSlot(slot)
		return nil, err
	}
	m := &member{w: wk, gen: gen, born: time.Now(), retire: make(chan struct{}), slot: slot}
	if p.cfg.MaxRequests > 0 {
		m.limit = p.cfg.MaxRequests + rand.IntN(p.cfg.MaxRequestsJitter+1)
	}
	if cfg.FastCGI != nil {
		go wk.Watch()
	}
	p.mu.Lock()
	p.members[m] = struct{}{}
	p.mu.Unlock()
	return m, nil
}

// logOutput logs what a worker prints, a line at a time (long lines in
// pieces), until the worker and whatever inherited its output are gone.
func (p *Pool) logOutput(r *os.File, pid int) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			p.log.Info("app output", "pid", pid, "line", string(trimNewline(line)))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if !errors.Is(err, io.EOF) {
				p.log.Warn("reading worker output", "pid", pid, "err", err)
			}
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

// startSlot makes m available at once and runs its slot goroutine; the
// caller holds p.mu.
func (p *Pool) startSlot(m *member) {
	p.addLocked(m)
	p.slots.Add(1)
	go p.runSlot(m)
}

// runSlot keeps one place of the pool filled for m's generation, m being
// its first, already added, member.
func (p *Pool) runSlot(m *member) {
	defer p.slots.Done()
	gen := m.gen
	backoff := 100 * time.Millisecond
	for {
		p.await(m)
		p.remove(m)
		p.closeMember(m)
		if m.recycled || time.Since(m.born) > 10*time.Second {
			backoff = 100 * time.Millisecond
		} else {
			// Died young: wait before the next, more each time.
			if !p.sleepUnlessStopped(gen, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
		}
		for {
			if p.slotDone(gen) {
				return
			}
			var err error
			if m, err = p.spawn(gen); err == nil {
				break
			}
			p.mu.Lock()
			p.failing = p.live == 0
			p.mu.Unlock()
			p.wakeWaitersIfNoWorkers()
			p.log.Error("worker could not be started; retrying", "in", backoff, "err", err)
			if !p.sleepUnlessStopped(gen, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
		}
		p.add(m)
	}
}

func (p *Pool) slotDone(gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing || gen != p.gen
}

func (p *Pool) sleepUnlessStopped(gen int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.slotDone(gen) {
			return false
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
	return !p.slotDone(gen)
}

// await waits until m is retired, or dies while idle. A FastCGI worker
// whose app runs past the timeout and past the Stop it raised is killed.
func (p *Pool) await(m *member) {
	var tick <-chan time.Time
	if m.slot >= 0 && p.cfg.Timeout > 0 {
		t := time.NewTicker(stuckCheckEvery)
		defer t.Stop()
		tick = t.C
	}
	var seen stuckWatch
	for {
		select {
		case <-m.retire:
			return
		case now := <-tick:
			if seen.stuck(p.runningApp(m.slot), now, p.cfg.Timeout+m.w.cfg.StopGrace) {
				p.log.Error("the app did not stop at the timeout; killing its worker",
					"pid", m.w.Pid(), "timeout", p.cfg.Timeout)
				m.w.Kill()
			}
		case <-m.w.Exited():
			if p.takeIdle(m) {
				if m.w.Leaving() {
					m.retireNow(true)
					return
				}
				p.log.Info("worker exited while idle", "pid", m.w.Pid(), "how", m.w.exitStatus())
				m.retireNow(false)
				return
			}
			<-m.retire // it is serving: Serve sees it fail and retires it
			return
		}
	}
}

// stuckCheckEvery is how often the board is read for FastCGI workers
// stuck in their app.
const stuckCheckEvery = 500 * time.Millisecond

// stuckWatch follows one FastCGI worker's app runs on the board.
type stuckWatch struct {
	run   uint64 // the request count when the app was first seen running, 0: not running
	since time.Time
}

// stuck reports whether the same app run (run, the worker's request
// count, or 0 when its app is not running) has lasted longer than limit.
func (s *stuckWatch) stuck(run uint64, now time.Time, limit time.Duration) bool {
	if run == 0 || run != s.run {
		s.run, s.since = run, now
		return false
	}
	return now.Sub(s.since) > limit
}

// runningApp returns the request count of the FastCGI worker in slot if
// its app is running, else 0.
func (p *Pool) runningApp(slot int) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.boardData[boardRunning+slot] == 0 {
		return 0
	}
	return binary.LittleEndian.Uint64(p.boardData[64+8*slot:])
}

// add makes a ready member available: to the first waiting request, or
// to the idle list.
func (p *Pool) add(m *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addLocked(m)
}

func (p *Pool) addLocked(m *member) {
	if p.closing || m.gen != p.gen {
		m.retireNow(true)
		return
	}
	p.live++
	p.failing = false
	p.handOff(m)
}

// handOff gives m to a waiter or the idle list; the caller holds p.mu.
func (p *Pool) handOff(m *member) {
	for len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		ch <- m
		return
	}
	p.idle = append(p.idle, m)
}

func (p *Pool) remove(m *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropIdle(m)
	if m.gen == p.gen {
		p.live--
	}
}

func (p *Pool) takeIdle(m *member) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropIdle(m)
}

// dropIdle removes m from the idle list; the caller holds p.mu.
func (p *Pool) dropIdle(m *member) bool {
	for i, x := range p.idle {
		if x == m {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			return true
		}
	}
	return false
}

func (p *Pool) closeMember(m *member) {
	m.w.Close(p.cfg.GraceTimeout)
	p.freeSlot(m.slot)
	p.mu.Lock()
	delete(p.members, m)
	p.mu.Unlock()
}

func (p *Pool) wakeWaitersIfNoWorkers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.failing {
		return
	}
	for _, ch := range p.waiters {
		close(ch)
	}
	p.waiters = nil
}

// acquire takes an idle worker, or waits for one in the queue.
func (p *Pool) acquire(ctx context.Context) (*member, error) {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	for n := len(p.idle); n > 0; n = len(p.idle) {
		// The most recently used worker: its caches are warm.
		m := p.idle[n-1]
		p.idle = p.idle[:n-1]
		if m.w.Usable() {
			p.mu.Unlock()
			return m, nil
		}
		m.retireNow(false) // died while idle; its slot replaces it
	}
	if p.failing {
		p.mu.Unlock()
		return nil, ErrNoWorkers
	}
	if len(p.waiters) >= p.cfg.Backlog {
		now := time.Now()
		warn := now.Sub(p.lastFull) > 10*time.Second
		if warn {
			p.lastFull = now
		}
		p.mu.Unlock()
		if warn {
			p.log.Warn("every worker is busy and the queue is full: refusing requests with 503 (raise --workers or --backlog)",
				"workers", p.cfg.Workers, "backlog", p.cfg.Backlog)
		}
		return nil, ErrOverloaded
	}
	ch := make(chan *member, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	var timeout <-chan time.Time
	if p.cfg.Timeout > 0 {
		t := time.NewTimer(p.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, p.closedErr()
		}
		return m, nil
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-timeout:
		err = ErrQueueTimeout
	}
	p.mu.Lock()
	for i, c := range p.waiters {
		if c == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	// A worker may have been handed over just before we left the queue.
	select {
	case m, ok := <-ch:
		if ok {
			p.release(m)
		}
	default:
	}
	return nil, err
}

func (p *Pool) closedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrClosed
	}
	return ErrNoWorkers
}

// release gives a worker back after a request.
func (p *Pool) release(m *member) {
	if !m.w.Usable() {
		m.retireNow(false)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || m.gen != p.gen || (m.limit > 0 && m.served >= m.limit) {
		m.retireNow(true)
		return
	}
	p.handOff(m)
}

// Serve runs one request on a worker of the pool. When no worker can take
// it, the client gets 503 and Serve returns ErrOverloaded,
// ErrQueueTimeout, ErrNoWorkers or ErrClosed; otherwise see Worker.Serve.
func (p *Pool) Serve(ctx context.Context, req *Request, rw ResponseWriter) (Result, error) {
	m, err := p.acquire(ctx)
	if err != nil {
		return Result{Status: 503}, errors.Join(err, WriteError(rw, 503))
	}
	if p.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, p.cfg.Timeout, p.timeoutCause)
		defer cancel()
	}
	res, err := m.w.Serve(ctx, req, rw)
	m.served++
	p.release(m)
	return res, err
}

// Reload starts a fresh set of workers, which import the app anew, and
// retires the running ones once the new ones are ready, each after its
// current request. If the new workers cannot start (the new code fails to
// import), the running ones stay and Reload returns why.
func (p *Pool) Reload() error {
	p.reloading.Lock()
	defer p.reloading.Unlock()
	p.mu.Lock()
	gen := p.gen + 1
	p.mu.Unlock()
	ms, err := p.spawnAll(gen)
	if err != nil {
		return fmt.Errorf("bridge: reload failed, the running workers stay: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		for _, m := range ms {
			go p.closeMember(m)
		}
		return ErrClosed
	}
	p.gen = gen
	old := p.idle
	p.idle = nil
	p.live = 0
	for _, m := range ms {
		p.startSlot(m)
	}
	for _, m := range old {
		m.retireNow(true)
	}
	return nil
}

// Shutdown stops taking requests, lets the requests in progress finish,
// and stops the workers. If ctx ends first, the remaining workers are
// killed. Shutdown returns when every worker is gone.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for _, ch := range p.waiters {
		close(ch)
	}
	p.waiters = nil
	for _, m := range p.idle {
		m.retireNow(true)
	}
	p.idle = nil
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.slots.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for m := range p.members {
			m.w.Kill()
		}
		p.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// AppFiles returns the app's own source files, as the workers of the
// current generation reported them.
func (p *Pool) AppFiles() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for m := range p.members {
		if m.gen == p.gen {
			return m.w.AppFiles()
		}
	}
	return nil
}

// Stats returns how many workers are ready, idle and waited for, and the
// workers' pids.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Live: p.live, Idle: len(p.idle), Waiting: len(p.waiters)}
	for m := range p.members {
		if m.gen == p.gen && m.w.Usable() {
			s.Pids = append(s.Pids, m.w.Pid())
		}
	}
	return s
}

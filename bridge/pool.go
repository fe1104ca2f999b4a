package bridge

// This file holds the pool: a set of workers of one generation, started
// together, reloaded together (a fresh generation imports the app anew
// and the old one retires), and stopped together. Each worker's place is
// kept filled by its slot (slot.go); requests sent over the frames take
// a worker from the queue (queue.go); FastCGI workers report on the board
// (board.go).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// PoolConfig says how to run a pool of workers.
type PoolConfig struct {
	// Worker says how to start each worker. Its Output is replaced: the
	// pool logs each line the worker prints.
	Worker Config
	// Workers is how many workers run: a fixed number, or between a
	// least and a most (see Size). Default 2.
	Workers Size
	// WorkerIdle retires a worker of an elastic pool idle that long,
	// down to Workers.Min. Default 10 s.
	WorkerIdle time.Duration
	// Backlog is how many requests may wait for a worker, and
	// QueueTimeout how long one may; beyond either a request is answered
	// 503 at once (FastCGI: with FCGI_OVERLOADED; see backlog.go).
	// Defaults 64 and 10 s.
	Backlog      int
	QueueTimeout time.Duration
	// Timeout ends a request stuck in the app: the worker is killed and
	// replaced, and the client gets 504 if nothing was sent yet. 0: no
	// limit.
	Timeout time.Duration
	// ImportTimeout bounds a worker's start, the app's import included.
	// Default 60 s.
	ImportTimeout time.Duration
	// MaxRequests recycles a worker after that many requests, plus a
	// random 0..MaxRequestsJitter so workers do not all restart at once.
	// 0: never.
	MaxRequests       int
	MaxRequestsJitter int
	// MaxRSS recycles a worker whose resident memory passed it, in
	// bytes, after its current request (see memory.go). 0: no limit.
	MaxRSS int64
	// GraceTimeout is how long a retired worker may take to exit after
	// its request pipe closes before it is killed (a FastCGI worker's
	// request in progress has Timeout besides). Default 5 s.
	GraceTimeout time.Duration
	// Preload imports the app once, in a fork server, and forks the
	// workers from it (forker.go): they share the app's memory, and a
	// new one serves without an import. A reload starts a new fork
	// server. What the app makes at import (connections, threads, random
	// seeds) is then shared by the workers.
	Preload bool
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

// Pool runs requests on a set of workers.
type Pool struct {
	cfg PoolConfig
	log *slog.Logger

	mu        sync.Mutex
	gen       int
	members   map[*member]struct{} // every started, not yet closed member
	idle      []*member
	waiters   []*waiter
	live      int  // ready members of the current generation
	size      int  // slots of the current generation, a growing one included
	growing   bool // a worker is being added (see grow)
	failing   bool
	closing   bool
	lastFull  time.Time
	slots     sync.WaitGroup // the slots, the growing and the monitor
	stop      chan struct{}  // closed at shutdown, for the monitor
	reloading sync.Mutex

	timeoutCause error

	// For FastCGI workers: see FastCGIConfig.
	lobby  [2]*os.File
	board  *board
	keeper *keeper
	// preload runs the fork servers, with PoolConfig.Preload.
	preload *preload
	backlog backlog
	storm   storm // under mu
	// changeSeen is the generation whose code change started a reload.
	changeSeen int

	// What IdleFor reads: requests in Serve, the end of the last one (unix
	// nanoseconds), and the board's served count when it last looked.
	active      atomic.Int64
	lastSeen    atomic.Int64
	boardServed atomic.Uint64

	starting  atomic.Int32 // workers importing the app
	heartbeat atomic.Int64 // the monitor's last round, unix nanoseconds
	stat      poolStat
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

// PoolStats is a snapshot of a pool.
type PoolStats struct {
	Live, Idle, Waiting int
	Pids                []int
}

// NewPool starts the workers and waits until each has imported the app.
// If the app fails to import, NewPool stops what it started and returns
// the *ImportError.
func NewPool(cfg PoolConfig) (*Pool, error) {
	setDefault(&cfg.Workers, Size{2, 2})
	setDefault(&cfg.WorkerIdle, 10*time.Second)
	setDefault(&cfg.Backlog, 64)
	setDefault(&cfg.QueueTimeout, 10*time.Second)
	setDefault(&cfg.ImportTimeout, 60*time.Second)
	setDefault(&cfg.GraceTimeout, 5*time.Second)
	log := cfg.Worker.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pool{cfg: cfg, log: log, gen: 1, members: map[*member]struct{}{}, stop: make(chan struct{}),
		timeoutCause: fmt.Errorf("the app ran longer than the %v timeout", cfg.Timeout)}
	if cfg.Worker.FastCGI != nil {
		var err error
		if p.lobby, err = openLobby(); err != nil {
			return nil, err
		}
		if p.board, err = openBoard(); err != nil {
			return nil, err
		}
		if p.keeper, err = openKeeper(); err != nil {
			return nil, err
		}
		p.backlog.refusing = make(chan struct{}, maxRefusing)
	}
	p.lastSeen.Store(time.Now().UnixNano())
	p.heartbeat.Store(time.Now().UnixNano())
	if cfg.Preload {
		if err := becomeSubreaper(); err != nil {
			return nil, err
		}
		p.preload = &preload{start: p.startForker, log: log, forkers: map[int]*forker{}}
		if err := p.preload.use(p.gen); err != nil {
			return nil, err
		}
	}
	ms, err := p.spawnAll(p.gen, cfg.Workers.Min)
	if err != nil {
		if p.preload != nil {
			p.preload.close()
		}
		return nil, err
	}
	p.mu.Lock()
	p.size = len(ms)
	for _, m := range ms {
		p.startSlot(m)
	}
	p.mu.Unlock()
	p.slots.Add(1)
	go p.monitor()
	return p, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
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
	// The workers that run now are replaced, however many an elastic
	// pool has grown to.
	n := max(p.live, p.cfg.Workers.Min)
	p.mu.Unlock()
	if p.preload != nil {
		if err := p.preload.use(gen); err != nil {
			return fmt.Errorf("bridge: reload failed, the running workers stay: %w", err)
		}
	}
	ms, err := p.spawnAll(gen, n)
	if err != nil {
		if p.preload != nil {
			p.preload.retire(gen, true)
		}
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
	if p.preload != nil {
		go p.preload.retire(gen, false)
	}
	p.gen = gen
	p.countReload()
	old := p.idle
	p.idle = nil
	p.live = 0
	p.size = len(ms)
	for _, m := range ms {
		p.startSlot(m)
	}
	for _, m := range old {
		m.retireNow(ExitReload)
	}
	return nil
}

// Shutdown stops taking requests, lets the requests in progress finish,
// and stops the workers. If ctx ends first, the remaining workers are
// killed. Shutdown returns when every worker is gone.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing {
		close(p.stop)
	}
	p.closing = true
	p.closeWaiters()
	for _, m := range p.idle {
		m.retireNow(ExitShutdown)
	}
	p.idle = nil
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.slots.Wait()
		if p.preload != nil {
			p.preload.close()
		}
		if p.keeper != nil {
			p.keeper.close()
		}
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

// IdleFor returns how long no request has been in progress: none sent
// through Serve, none that a FastCGI worker served (it reports on the
// board, read here).
func (p *Pool) IdleFor() time.Duration {
	if p.board != nil {
		if served, busy := p.board.activity(); busy || served != p.boardServed.Load() {
			p.boardServed.Store(served)
			p.lastSeen.Store(time.Now().UnixNano())
		}
	}
	if p.active.Load() > 0 {
		return 0
	}
	return time.Since(time.Unix(0, p.lastSeen.Load()))
}

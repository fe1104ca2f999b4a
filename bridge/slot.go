package bridge

// This file holds a pool's slots: each keeps one place of the pool
// filled, starting a worker, waiting until it is retired or dies (and
// killing a FastCGI worker whose app is stuck past its timeout), then
// starting the next, with a back-off when workers die young, so a crash
// loop cannot fork-bomb the machine.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// member is one worker of the pool.
type member struct {
	w      *Worker
	gen    int
	born   time.Time
	served atomic.Int64
	limit  int // requests before recycling; 0: no limit
	retire chan struct{}
	once   sync.Once
	cause  string // why it was retired: one of the Exit* causes
	slot   int    // its place on the board of FastCGI workers, or -1
	// running is the request it serves through Serve, nil between them.
	running atomic.Pointer[current]
	// stuck is set when it is killed for an app stuck past the timeout.
	stuck atomic.Bool
	// lastActive is when it was last seen serving, unix nanoseconds;
	// seenServed, for a FastCGI worker, its count on the board then
	// (the monitor's, under p.mu).
	lastActive atomic.Int64
	seenServed uint64
	// overMemory: it passed MaxRSS and leaves after its request (under
	// p.mu).
	overMemory bool
}

// retireNow retires m, for the first cause given.
func (m *member) retireNow(cause string) {
	m.once.Do(func() {
		m.cause = cause
		close(m.retire)
	})
}

// onPurpose reports whether m was retired on purpose, not because it died.
func (m *member) onPurpose() bool {
	return m.cause != ExitCrash && m.cause != ExitTimeout
}

// spawnAll starts n workers at once and waits until all are ready; on
// any failure it closes them all.
func (p *Pool) spawnAll(gen, n int) ([]*member, error) {
	ms := make([]*member, n)
	errs := make([]error, n)
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
	p.starting.Add(1)
	defer p.starting.Add(-1)
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
			slot = p.board.take()
			fc.Lobby, fc.Board, fc.Slot, fc.Keep = p.lobby, p.board.file, slot, p.keeper.theirs
		}
		fc.Changed = func(file string) { p.codeChanged(gen, file) }
		cfg.FastCGI = &fc
	}
	if p.preload != nil {
		if cfg.from, err = p.preload.forker(gen); err != nil {
			w.Close()
			r.Close()
			p.freeSlot(slot)
			return nil, err
		}
	}
	began := time.Now()
	wk, err := start(cfg)
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
	p.log.Debug("worker ready", "pid", wk.Pid(), "took", time.Since(began))
	m := &member{w: wk, gen: gen, born: time.Now(), retire: make(chan struct{}), slot: slot}
	m.lastActive.Store(m.born.UnixNano())
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

// startForker starts generation gen's fork server (forker.go), its
// output logged as a worker's is, and waits until it imported the app.
func (p *Pool) startForker(gen int) (*forker, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("bridge: fork server output pipe: %w", err)
	}
	cfg := p.cfg.Worker
	cfg.Output = w
	if cfg.FastCGI != nil {
		fc := *cfg.FastCGI
		if p.board != nil {
			fc.Lobby, fc.Board, fc.Keep = p.lobby, p.board.file, p.keeper.theirs
		}
		fc.Changed = nil
		cfg.FastCGI = &fc
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ImportTimeout)
	defer cancel()
	began := time.Now()
	logged := false
	f, err := startForker(ctx, cfg, func(pid int) {
		w.Close()
		logged = true
		go p.logOutput(r, pid)
	})
	if !logged {
		w.Close()
		r.Close()
	}
	if err == nil {
		p.log.Info("the fork server imported the app; workers are forked from it", "pid", f.w.Pid(), "took", time.Since(began).Round(time.Millisecond))
	}
	return f, err
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
	// backoff is the wait before the next start: none after a worker
	// that did not die young (storm.go), nor after the first that did;
	// then 100 ms, doubling, while workers keep dying young.
	var backoff time.Duration
	for {
		p.await(m)
		p.remove(m)
		served := p.servedBy(m)
		young := p.youngDeath(m, served)
		p.closeMember(m)
		p.countExit(m.cause)
		if young {
			p.diedYoung("worker pid " + strconv.Itoa(m.w.Pid()) + " " + m.w.exitStatus())
		}
		if m.cause == ExitIdle {
			p.mu.Lock()
			if m.gen == p.gen {
				p.size--
			}
			p.mu.Unlock()
			return
		}
		if !young {
			backoff = 0
		} else {
			// A crash loop: wait before the next, more each time.
			if backoff > 0 && !p.sleepUnlessStopped(gen, backoff) {
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
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
			p.diedYoung(err.Error())
			backoff = max(backoff, 100*time.Millisecond)
			p.log.Log(context.Background(), p.deathLevel(slog.LevelError), "worker could not be started; retrying", "in", backoff, "err", err)
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
			if seen.stuck(p.board.runningApp(m.slot), now, p.cfg.Timeout+m.w.cfg.StopGrace) {
				p.killStuck(m)
			}
		case <-m.w.Exited():
			if p.takeIdle(m) {
				if m.w.Leaving() {
					m.retireNow(ExitMaxRequests)
					return
				}
				if m.stuck.Load() {
					m.retireNow(ExitTimeout)
					return
				}
				p.log.Log(context.Background(), p.deathLevel(slog.LevelInfo), "worker exited while idle", "pid", m.w.Pid(), "how", m.w.exitStatus())
				m.retireNow(ExitCrash)
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

// closeMember stops m and waits until it is gone. A FastCGI worker may be
// in a request, which it finishes first: it gets as long as the timeout
// gives the request besides the grace, and, without a timeout, as long as
// it takes (a shutdown's deadline kills it then).
func (p *Pool) closeMember(m *member) {
	grace := p.cfg.GraceTimeout
	if m.slot >= 0 {
		grace = time.Duration(math.MaxInt64)
		if p.cfg.Timeout > 0 {
			grace = p.cfg.GraceTimeout + p.cfg.Timeout + m.w.cfg.StopGrace
		}
	}
	m.w.Close(grace)
	if m.slot >= 0 {
		p.rescueKept(m)
	}
	p.freeSlot(m.slot)
	p.mu.Lock()
	delete(p.members, m)
	p.mu.Unlock()
}

// freeSlot gives a gone FastCGI worker's place on the board back (-1:
// it had none), keeping what it served in the pool's counts.
func (p *Pool) freeSlot(slot int) {
	if slot >= 0 {
		r := p.board.free(slot)
		p.mu.Lock()
		p.backlog.retired += r.accepted
		p.mu.Unlock()
		p.stat.mu.Lock()
		p.stat.retired += r.served
		p.stat.counts.add(r.counts)
		p.stat.mu.Unlock()
	}
}

// killStuck kills a FastCGI worker whose app ran past the timeout and the
// Stop raised in it, logging first where the app is stuck when it can.
func (p *Pool) killStuck(m *member) {
	attrs := []any{"pid", m.w.Pid(), "timeout", p.cfg.Timeout}
	if m.w.stacks != nil {
		attrs = append(attrs, "stack", m.w.stuckStack())
	}
	p.log.Error("the app did not stop at the timeout; killing its worker", attrs...)
	m.stuck.Store(true)
	m.w.Kill()
}

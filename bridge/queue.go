package bridge

// This file holds a pool's queue: its idle workers, and the requests
// waiting for one (those Serve sends over the frames, the http mode's),
// in order, bounded by Backlog and QueueTimeout; a request no worker can
// take gets 503. A worker given back goes to the first waiter with the
// waiter's request already begun on it (release); a new worker goes to
// it as it is, and the waiter begins its own request (handOff). FastCGI
// workers take their requests from the listening socket themselves
// (their wait is backlog.go's); the idle list only holds them.

import (
	"context"
	"errors"
	"time"
)

// add makes a ready member available: to the first waiting request, or
// to the idle list.
func (p *Pool) add(m *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addLocked(m)
}

func (p *Pool) addLocked(m *member) {
	if p.closing {
		m.retireNow(ExitShutdown)
		return
	}
	if m.gen != p.gen {
		m.retireNow(ExitReload)
		return
	}
	p.live++
	p.failing = false
	p.handOff(m)
}

// waiter is a request waiting in the queue for a worker.
type waiter struct {
	ch chan *member // gets the worker; closed when none will come
	c  *call
}

// handOff gives m to a waiter or the idle list; the caller holds p.mu.
func (p *Pool) handOff(m *member) {
	if wt := p.nextWaiter(); wt != nil {
		wt.ch <- m
		return
	}
	p.idle = append(p.idle, m)
}

// nextWaiter takes the first waiter off the queue, nil if there is none;
// the caller holds p.mu.
func (p *Pool) nextWaiter() *waiter {
	if len(p.waiters) == 0 {
		return nil
	}
	wt := p.waiters[0]
	p.waiters = p.waiters[1:]
	return wt
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

func (p *Pool) wakeWaitersIfNoWorkers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failing {
		p.closeWaiters()
	}
}

// closeWaiters wakes every waiting request with no worker; the caller
// holds p.mu.
func (p *Pool) closeWaiters() {
	for _, wt := range p.waiters {
		close(wt.ch)
	}
	p.waiters = nil
}

// acquire takes an idle worker for c, or waits for one in the queue. A
// worker handed over from the queue may have c begun on it already.
func (p *Pool) acquire(ctx context.Context, c *call) (*member, error) {
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
		m.retireNow(ExitCrash) // died while idle; its slot replaces it
	}
	if p.failing {
		p.mu.Unlock()
		return nil, ErrNoWorkers
	}
	p.growLocked()
	if len(p.waiters) >= p.cfg.Backlog {
		now := time.Now()
		warn := now.Sub(p.lastFull) > 10*time.Second
		if warn {
			p.lastFull = now
		}
		p.mu.Unlock()
		if warn {
			p.log.Warn("every worker is busy and the queue is full: refusing requests with 503 (raise --workers or --backlog)",
				"workers", p.cfg.Workers.String(), "backlog", p.cfg.Backlog)
		}
		return nil, ErrOverloaded
	}
	wt := &waiter{ch: make(chan *member, 1), c: c}
	p.waiters = append(p.waiters, wt)
	p.mu.Unlock()

	t := time.NewTimer(p.cfg.QueueTimeout)
	defer t.Stop()
	timeout := t.C
	var err error
	select {
	case m, ok := <-wt.ch:
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
	queued := false
	for i, x := range p.waiters {
		if x == wt {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			queued = true
			break
		}
	}
	p.mu.Unlock()
	if queued {
		return nil, err
	}
	// Taken off the queue just before: a worker is on its way, or none
	// will come.
	m, ok := <-wt.ch
	switch {
	case !ok:
	case c.begun:
		// Its request is on the worker already: it is served, and an
		// ended context stops it there as it would have a moment later.
		return m, nil
	default:
		p.release(m)
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
		if m.stuck.Load() {
			m.retireNow(ExitTimeout)
		} else {
			m.retireNow(ExitCrash)
		}
		return
	}
	m.lastActive.Store(time.Now().UnixNano())
	p.mu.Lock()
	var next *waiter
	switch {
	case p.closing:
		m.retireNow(ExitShutdown)
	case m.gen != p.gen:
		m.retireNow(ExitReload)
	case m.limit > 0 && int(m.served.Load()) >= m.limit:
		m.retireNow(ExitMaxRequests)
	case m.overMemory:
		m.retireNow(ExitMaxRSS)
	default:
		if next = p.nextWaiter(); next == nil {
			p.idle = append(p.idle, m)
		}
	}
	p.mu.Unlock()
	if next != nil {
		// The next request goes to the worker from here, outside the
		// lock: the worker finds it as soon as it is done with this
		// one, not when the waiting goroutine next runs (under load,
		// after this one's response is written and its connection
		// closed).
		m.w.begin(next.c)
		m.w.trySend(next.c)
		next.ch <- m
	}
}

// Serve runs one request on a worker of the pool. When no worker can take
// it, the client gets 503 and Serve returns ErrOverloaded,
// ErrQueueTimeout, ErrNoWorkers or ErrClosed; otherwise see Worker.Serve.
func (p *Pool) Serve(ctx context.Context, req *Request, rw ResponseWriter) (Result, error) {
	p.active.Add(1)
	defer func() {
		p.lastSeen.Store(time.Now().UnixNano())
		p.active.Add(-1)
	}()
	c, err := newCall(req)
	if err != nil {
		return refuse(rw, err)
	}
	defer c.free()
	m, err := p.acquire(ctx, c)
	if err != nil {
		p.stat.mu.Lock()
		p.stat.refused++
		p.stat.mu.Unlock()
		return Result{Status: 503}, errors.Join(err, WriteError(rw, 503))
	}
	if p.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, p.cfg.Timeout, p.timeoutCause)
		defer cancel()
	}
	start := time.Now()
	m.running.Store(&current{req: req, since: start})
	res, err := m.w.serve(ctx, c, rw)
	m.running.Store(nil)
	m.served.Add(1)
	if errors.Is(err, ErrStopped) && !m.w.Usable() {
		m.stuck.Store(true) // killed: its app did not stop
	}
	p.countServed(res.Status, time.Since(start))
	p.release(m)
	return res, err
}

package bridge

// This file holds the pool's monitor: one goroutine that looks at the
// workers on a tick and acts on what it sees: an elastic pool grows when
// every FastCGI worker is busy (or, empty, when a connection waits) and
// shrinks when one has idled long enough; the FastCGI wait is bounded
// (backlog.go); workers past their memory are recycled (memory.go); a
// crash storm ends (storm.go); a dead fork server is replaced and the
// app's orphans reaped (forker.go, orphans.go). FastCGI workers are read off the board, so
// the monitor never sits on a request's path.

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

const (
	// fastcgiTick is how often the board is read while a worker of an
	// elastic FastCGI pool is busy (it grows this soon after its last
	// idle worker was taken), or while the supervisor holds waiting
	// connections; restTick is how often otherwise. Each look wakes the
	// supervisor, which a loaded machine pays for in context switches.
	fastcgiTick = 10 * time.Millisecond
	restTick    = 50 * time.Millisecond
	// slowTick is how often what changes over seconds is looked at.
	slowTick = time.Second
)

// monitor runs until the pool shuts down.
func (p *Pool) monitor() {
	defer p.slots.Done()
	t := time.NewTimer(restTick)
	defer t.Stop()
	next := time.Now().Add(slowTick)
	for {
		if p.board != nil && p.empty() {
			// No worker: the first connection wakes the monitor at
			// once, for the pool to start one.
			p.awaitConnection(restTick)
		} else {
			select {
			case <-p.stop:
			case <-t.C:
			}
		}
		select {
		case <-p.stop:
			if p.board != nil {
				p.dropHeld()
			}
			return
		default:
		}
		now := time.Now()
		p.heartbeat.Store(now.UnixNano())
		wait := slowTick
		if p.board != nil {
			idle, busy, accepted := p.readBoard(now)
			p.tendBacklog(now, idle, accepted)
			wait = restTick
			if (busy > 0 && p.cfg.Workers.Elastic()) || len(p.backlog.held) > 0 {
				wait = fastcgiTick
			}
		}
		if !now.Before(next) {
			next = now.Add(slowTick)
			if p.cfg.Workers.Elastic() {
				p.shrink(now)
			}
			if p.cfg.MaxRSS > 0 {
				p.checkMemory()
			}
			p.checkStorm()
			if p.preload != nil {
				p.tendPreload()
			}
			if p.keeper != nil {
				p.keeper.collect()
				p.keeper.sweep()
			}
		}
		t.Reset(wait)
	}
}

// empty reports whether the pool has no worker, nor one starting.
func (p *Pool) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size == 0
}

// awaitConnection waits until a connection waits on the listening socket,
// or for d. No worker polls the socket meanwhile: the pool has none.
func (p *Pool) awaitConnection(d time.Duration) {
	raw, err := p.cfg.Worker.FastCGI.Listener.SyscallConn()
	if err != nil {
		time.Sleep(d)
		return
	}
	_ = raw.Control(func(fd uintptr) {
		poll([]pollFd{{fd: int32(fd), events: pollIn}}, int(d.Milliseconds()))
	})
}

// pollFd is struct pollfd of poll(2), which package syscall lacks.
type pollFd struct {
	fd              int32
	events, revents int16
}

const pollIn = 0x1

// poll waits up to ms milliseconds (0: not at all) for the events asked
// of fds, and returns how many have some (their revents), or 0 on an
// error.
func poll(fds []pollFd, ms int) int {
	n, _, errno := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(ms))
	if errno != 0 {
		return 0
	}
	return int(n)
}

// readBoard notes which FastCGI workers were active since the last look,
// and grows an elastic pool none of whose workers is idle. It returns how
// many of the pool's workers are idle and busy, and how many connections
// the live workers accepted.
func (p *Pool) readBoard(now time.Time) (idle, busy int, accepted uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for m := range p.members {
		if m.slot < 0 {
			continue
		}
		resting, served, took := p.board.peek(m.slot)
		accepted += took
		if m.gen != p.gen {
			continue
		}
		if served != m.seenServed || !resting {
			m.seenServed = served
			m.lastActive.Store(now.UnixNano())
		}
		switch {
		case !m.w.Usable():
		case resting:
			idle++
		default:
			busy++
		}
	}
	if idle == 0 && p.size < p.cfg.Workers.Max && (p.size > 0 || p.connectionWaits()) {
		p.growLocked()
	}
	return idle, busy, accepted
}

// connectionWaits reports whether a connection waits in the listening
// socket's queue, for a FastCGI pool that has no worker to take it.
func (p *Pool) connectionWaits() bool {
	n, _, err := queueLength(p.cfg.Worker.FastCGI.Listener)
	return err == nil && n > 0
}

// queueLength returns how many connections wait on the listening socket f.
func queueLength(f *os.File) (waiting, backlog int, err error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := raw.Control(func(fd uintptr) { waiting, backlog, err = fastcgi.QueueLength(int(fd)) })
	return waiting, backlog, errors.Join(cerr, err)
}

// Heartbeat returns when the pool's monitor last went round: a supervisor
// whose monitor stopped going round is not well.
func (p *Pool) Heartbeat() time.Time {
	return time.Unix(0, p.heartbeat.Load())
}

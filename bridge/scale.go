package bridge

// This file holds the pool's size: fixed, or elastic between a least and
// a most number of workers, as PHP-FPM's dynamic and ondemand pools. An
// elastic pool grows one worker at a time while every worker is busy, and
// retires the workers idle longer than PoolConfig.WorkerIdle, down to the
// least; with a least of 0 no Python runs until the first request. A
// request sent through Serve that finds no idle worker grows the pool;
// FastCGI workers take their requests themselves, so the pool's watch
// (watch.go) reads the board for them.

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Size is how many workers a pool runs: Min == Max is a fixed pool.
type Size struct{ Min, Max int }

// ParseSize reads "N", a fixed pool of N workers, or "MIN:MAX".
func ParseSize(s string) (Size, error) {
	lo, hi, elastic := strings.Cut(s, ":")
	min, err1 := strconv.Atoi(lo)
	max := min
	var err2 error
	if elastic {
		max, err2 = strconv.Atoi(hi)
	}
	switch {
	case err1 != nil || err2 != nil:
		return Size{}, fmt.Errorf("%q is not N or MIN:MAX", s)
	case !elastic && min < 1:
		return Size{}, fmt.Errorf("%q: a fixed pool needs 1 worker or more", s)
	case min < 0 || max < 1 || min > max:
		return Size{}, fmt.Errorf("%q: MIN:MAX wants 0 <= MIN <= MAX and MAX >= 1", s)
	case max > boardSlots:
		return Size{}, fmt.Errorf("%q: at most %d workers", s, boardSlots)
	}
	return Size{Min: min, Max: max}, nil
}

func (s Size) String() string {
	if s.Min == s.Max {
		return strconv.Itoa(s.Min)
	}
	return strconv.Itoa(s.Min) + ":" + strconv.Itoa(s.Max)
}

// Elastic reports whether the pool's size changes with its load.
func (s Size) Elastic() bool { return s.Min != s.Max }

// growLocked starts one more worker, unless the pool is at its most or
// already starting one; the caller holds p.mu.
func (p *Pool) growLocked() {
	if p.closing || p.growing || p.size >= p.cfg.Workers.Max {
		return
	}
	p.growing = true
	p.size++
	gen := p.gen
	p.slots.Add(1)
	go func() {
		defer p.slots.Done()
		m, err := p.spawn(gen)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.growing = false
		if err != nil {
			if gen == p.gen {
				p.size--
				p.failing = p.live == 0
				if p.failing {
					p.closeWaiters()
				}
			}
			p.log.Error("the pool could not grow: a worker could not be started", "err", err)
			return
		}
		p.startSlot(m)
	}()
}

// shrink retires the worker idle longest, if it has been idle longer than
// WorkerIdle and the pool is above its least. Called every second.
func (p *Pool) shrink(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || p.size <= p.cfg.Workers.Min {
		return
	}
	var oldest *member
	for m := range p.members {
		if m.gen != p.gen || !m.w.Usable() || !p.restingLocked(m) {
			continue
		}
		if oldest == nil || m.lastActive.Load() < oldest.lastActive.Load() {
			oldest = m
		}
	}
	if oldest == nil || now.Sub(time.Unix(0, oldest.lastActive.Load())) < p.cfg.WorkerIdle {
		return
	}
	p.dropIdle(oldest)
	p.log.Info("retiring an idle worker", "pid", oldest.w.Pid(), "idle", now.Sub(time.Unix(0, oldest.lastActive.Load())).Round(time.Second),
		"workers", p.size-1)
	oldest.retireNow(ExitIdle)
}

// restingLocked reports whether m waits for work: in the idle list, or,
// for a FastCGI worker, idle on the board; the caller holds p.mu.
func (p *Pool) restingLocked(m *member) bool {
	if m.slot >= 0 {
		return p.board.read(m.slot).idle
	}
	for _, x := range p.idle {
		if x == m {
			return true
		}
	}
	return false
}

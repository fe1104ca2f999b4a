package bridge

// This file holds what the pool does in a crash storm: workers that die
// young (soon after they start, before their second request, or that
// cannot start at all) one after another, as an app broken by a deploy or by
// what it depends on makes them. Each slot already waits longer before
// each restart (slot.go); here the pool tells of the storm once when it
// begins, with the last death's cause, and once when it ends, instead of
// a line per death, and shows itself degraded (Status.Degraded, and the
// board's flag, which the workers' ping path reads) until a worker lives:
// serves a request and waits for the next, or lives youngAge.

import (
	"log/slog"
	"time"
)

const (
	// youngAge: a worker that dies sooner died young.
	youngAge = 10 * time.Second
	// stormDeaths young deaths within stormWindow begin a storm.
	stormDeaths = 3
	stormWindow = time.Minute
)

// storm is the pool's crash storm, if one is on (under p.mu).
type storm struct {
	recent []time.Time // the young deaths within stormWindow
	on     bool
	since  time.Time
	deaths int    // since it began
	last   string // the last death's cause
}

// servedBy returns how many requests m took. Called before its slot is
// freed.
func (p *Pool) servedBy(m *member) uint64 {
	if m.slot >= 0 {
		return p.board.read(m.slot).served
	}
	return uint64(m.served.Load())
}

// youngDeath reports whether m, gone having taken served requests, died
// young: by itself, soon after it started and before it took a second
// request. One that served proved the app can: its death (a kill by
// hand, the OOM killer) is not the app's crash loop.
func (p *Pool) youngDeath(m *member, served uint64) bool {
	return m.cause == ExitCrash && served <= 1 && time.Since(m.born) < youngAge
}

// diedYoung counts a young death (why: its cause), beginning a storm when
// they come fast.
func (p *Pool) diedYoung(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.storm
	now := time.Now()
	s.last = why
	if s.on {
		s.deaths++
		return
	}
	s.recent = append(s.recent, now)
	for len(s.recent) > 0 && now.Sub(s.recent[0]) > stormWindow {
		s.recent = s.recent[1:]
	}
	if len(s.recent) < stormDeaths {
		return
	}
	s.on, s.since, s.deaths, s.recent = true, now, len(s.recent), nil
	p.setDegraded(true)
	p.log.Error("workers keep dying young: the pool is degraded, and restarts them ever more slowly (up to 30s apart) until one lives; the next deaths are not logged one by one",
		"deaths", s.deaths, "within", stormWindow, "last", why)
}

// checkStorm ends the storm once a worker of the pool lives: it has
// served a request and waits for the next, or lived youngAge. The monitor
// calls it every second.
func (p *Pool) checkStorm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.storm
	if !s.on {
		return
	}
	for m := range p.members {
		if m.gen != p.gen || !m.w.Usable() {
			continue
		}
		served := uint64(m.served.Load())
		if m.slot >= 0 {
			served = p.board.read(m.slot).served
		}
		if time.Since(m.born) >= youngAge || (served > 0 && p.restingLocked(m)) {
			p.log.Info("a worker lives again: the crash storm is over", "deaths", s.deaths,
				"lasted", time.Since(s.since).Round(time.Second), "last", s.last)
			*s = storm{}
			p.setDegraded(false)
			return
		}
	}
}

// deathLevel is the level of the line that tells of one worker's death:
// quiet while a storm is on, its summary having said it.
func (p *Pool) deathLevel(normal slog.Level) slog.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.storm.on {
		return slog.LevelDebug
	}
	return normal
}

// setDegraded sets the board's flag, for FastCGI workers; the caller
// holds p.mu.
func (p *Pool) setDegraded(on bool) {
	if p.board != nil {
		p.board.setDegraded(on)
	}
}

package bridge

// This file holds what a pool tells an operator: a snapshot of its
// workers and counters (Status), the requests that run now (Running) and
// a worker's Python stacks (Stacks), for the status page, the metrics and
// the slow log. FastCGI workers report on the board, read here; requests
// sent through Serve are counted here as they end. Counters never go
// backwards: what a worker served stays counted when it is gone.

import (
	"errors"
	"slices"
	"sync"
	"time"
)

// Why a worker left the pool.
const (
	ExitMaxRequests = "max-requests" // recycled after its requests, or the app exited
	ExitReload      = "reload"       // replaced by a reload
	ExitCrash       = "crash"        // died by itself (a signal, an exit)
	ExitTimeout     = "timeout"      // killed: its app did not stop at the timeout
	ExitShutdown    = "shutdown"     // stopped with the pool
	ExitIdle        = "idle"         // an elastic pool shrank
	ExitMaxRSS      = "max-rss"      // recycled after its memory passed the limit
)

// ExitCauses lists the causes of Status.Exits, in the order to show them.
var ExitCauses = []string{ExitMaxRequests, ExitReload, ExitCrash, ExitTimeout, ExitShutdown, ExitIdle, ExitMaxRSS}

// Status is a snapshot of a pool.
type Status struct {
	// Workers is how many the pool may keep, and Size how many it keeps
	// now (both ends of Workers for a fixed pool); Alive counts those
	// running (more than Size during a reload), Busy those running a
	// request, Idle the others, Starting those importing the app.
	Workers                           Size
	Size, Alive, Busy, Idle, Starting int
	// Served counts the requests answered; InProgress those running;
	// Waiting those waiting for a worker of the http mode (FastCGI
	// requests wait in the socket's listen queue); Refused those
	// answered 503 because no worker could take them.
	Served     uint64
	InProgress int
	Waiting    int
	Refused    uint64
	// Exits counts the workers gone, by cause (see ExitCauses).
	Exits map[string]uint64
	// Reloads counts the reloads that replaced the workers; LastReload
	// is the time of the last.
	Reloads    uint64
	LastReload time.Time
	// Classes counts the answered requests by status class, 1xx..5xx
	// (a request whose client left counts as 499). Counted by FastCGI
	// workers only when asked for (FastCGIConfig.Stats), as are these:
	Classes [5]uint64
	// Buckets counts them by duration: Buckets[i] those within
	// DurationBuckets[i] (and above the bucket before), the last one
	// those longer than every bound; Duration is their sum.
	Buckets  [13]uint64
	Duration time.Duration
	// Rows has a row per worker, the oldest first.
	Rows []WorkerStatus
	// Degraded, when not nil, is the crash storm the pool is in.
	Degraded *Degraded
	// ForkServers are the pids of the processes the workers are forked
	// from (PoolConfig.Preload): the current generation's, and during a
	// reload the one before's.
	ForkServers []int
}

// Degraded is a crash storm (see storm.go): since when, how many workers
// died young in it, and the last one's cause.
type Degraded struct {
	Since  time.Time
	Deaths int
	Last   string
}

// WorkerStatus is one worker in a Status.
type WorkerStatus struct {
	Pid     int
	Started time.Time
	Served  uint64
	RSS     int64 // resident memory in bytes, 0 if unknown
	// Busy says it runs a request: Request, when known, is its method
	// and path (no query, no header), and Since its start. A FastCGI
	// worker tells them once the request has run 20 ms.
	Busy    bool
	Request string
	Since   time.Time
}

// Running is a request that runs now, as Pool.Running tells it.
type Running struct {
	Pid     int
	Request string // method and path, no query
	Since   time.Time
	// Run tells this run apart from the worker's next one.
	Run uint64
}

// current is the request a member serves through Serve.
type current struct {
	req   *Request
	since time.Time
}

// poolStat is a pool's counters.
type poolStat struct {
	mu         sync.Mutex
	served     uint64 // through Serve
	retired    uint64 // by FastCGI workers that are gone
	counts     counts // of both
	exits      map[string]uint64
	reloads    uint64
	lastReload time.Time
	refused    uint64
}

// countExit counts a worker gone for cause.
func (p *Pool) countExit(cause string) {
	p.stat.mu.Lock()
	defer p.stat.mu.Unlock()
	if p.stat.exits == nil {
		p.stat.exits = map[string]uint64{}
	}
	p.stat.exits[cause]++
}

// countReload counts a reload that replaced the workers.
func (p *Pool) countReload() {
	p.stat.mu.Lock()
	defer p.stat.mu.Unlock()
	p.stat.reloads++
	p.stat.lastReload = time.Now()
}

// countServed counts a request that Serve answered with status (0: none).
func (p *Pool) countServed(status int, took time.Duration) {
	p.stat.mu.Lock()
	defer p.stat.mu.Unlock()
	p.stat.served++
	p.stat.counts.count(status, took)
}

// count counts a request answered with status (0: none) in took.
func (c *counts) count(status int, took time.Duration) {
	if status >= 100 && status < 600 {
		c.classes[status/100-1]++
	}
	i, _ := slices.BinarySearch(DurationBuckets, took.Seconds())
	c.buckets[i]++
	c.micros += uint64(took.Microseconds())
}

// Status returns a snapshot of the pool.
func (p *Pool) Status() Status {
	p.mu.Lock()
	members := make([]*member, 0, len(p.members))
	for m := range p.members {
		members = append(members, m)
	}
	waiting, size := len(p.waiters), p.size
	var degraded *Degraded
	if p.storm.on {
		degraded = &Degraded{Since: p.storm.since, Deaths: p.storm.deaths, Last: p.storm.last}
	}
	p.mu.Unlock()
	slices.SortFunc(members, func(a, b *member) int { return a.born.Compare(b.born) })

	s := Status{Workers: p.cfg.Workers, Size: size, Starting: int(p.starting.Load()), Waiting: waiting,
		Exits: map[string]uint64{}, Degraded: degraded}
	if p.preload != nil {
		s.ForkServers = p.preload.pids()
		slices.Sort(s.ForkServers)
	}
	p.stat.mu.Lock()
	s.Served = p.stat.served + p.stat.retired
	c := p.stat.counts
	for k, v := range p.stat.exits {
		s.Exits[k] = v
	}
	s.Reloads, s.LastReload, s.Refused = p.stat.reloads, p.stat.lastReload, p.stat.refused
	p.stat.mu.Unlock()

	for _, m := range members {
		if !m.w.Usable() {
			continue
		}
		row := WorkerStatus{Pid: m.w.Pid(), Started: m.born, RSS: residentBytes(m.w.Pid())}
		if m.slot >= 0 {
			r := p.board.read(m.slot)
			row.Served, row.Busy, row.Request, row.Since = r.served, r.running != 0, r.line, r.since
			s.Served += r.served
			c.add(r.counts)
		} else {
			row.Served = uint64(m.served.Load())
			if cur := m.running.Load(); cur != nil {
				row.Busy, row.Request, row.Since = true, requestLine(cur.req), cur.since
			}
		}
		s.Alive++
		if row.Busy {
			s.Busy++
		}
		s.Rows = append(s.Rows, row)
	}
	s.Idle = s.Alive - s.Busy
	s.InProgress = s.Busy
	s.Classes, s.Buckets = c.classes, c.buckets
	s.Duration = time.Duration(c.micros) * time.Microsecond
	return s
}

// Running returns the requests that run now and whose start is known (a
// FastCGI worker tells it once a request has run 20 ms).
func (p *Pool) Running() []Running {
	p.mu.Lock()
	members := make([]*member, 0, len(p.members))
	for m := range p.members {
		members = append(members, m)
	}
	p.mu.Unlock()
	var out []Running
	for _, m := range members {
		if m.slot >= 0 {
			if r := p.board.read(m.slot); r.running != 0 && !r.since.IsZero() {
				out = append(out, Running{Pid: m.w.Pid(), Request: r.line, Since: r.since, Run: r.running})
			}
		} else if cur := m.running.Load(); cur != nil {
			out = append(out, Running{Pid: m.w.Pid(), Request: requestLine(cur.req), Since: cur.since,
				Run: uint64(cur.since.UnixNano())})
		}
	}
	return out
}

// ErrNoSuchWorker is returned by Stacks for a pid that is none of the
// pool's workers.
var ErrNoSuchWorker = errors.New("bridge: no such worker in the pool")

// Stacks returns the Python stack of every thread of the worker pid, as
// Worker.Stacks does, waiting at most wait.
func (p *Pool) Stacks(pid int, wait time.Duration) (string, error) {
	p.mu.Lock()
	var w *Worker
	for m := range p.members {
		if m.w.Pid() == pid {
			w = m.w
		}
	}
	p.mu.Unlock()
	if w == nil {
		return "", ErrNoSuchWorker
	}
	return w.Stacks(wait)
}

// requestLine is the method and path of req, without the query.
func requestLine(req *Request) string {
	var method, uri, script, path string
	for _, v := range req.Env {
		switch v.Name {
		case "REQUEST_METHOD":
			method = v.Value
		case "REQUEST_URI":
			uri = v.Value
		case "SCRIPT_NAME":
			script = v.Value
		case "PATH_INFO":
			path = v.Value
		}
	}
	if uri == "" {
		uri = script + path
	}
	for i := 0; i < len(uri); i++ {
		if uri[i] == '?' {
			uri = uri[:i]
			break
		}
	}
	return method + " " + uri
}

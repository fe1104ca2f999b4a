package bridge

// This file holds the pool's memory limit: a worker whose resident memory
// grew past PoolConfig.MaxRSS (an app that leaks, or caches without end)
// is replaced by a fresh one after its current request, never during it,
// and never before it served one: a worker that starts over the limit
// would only be replaced by another as large.

import (
	"os"
	"strconv"
	"strings"
)

// residentBytes returns the resident memory of process pid, 0 if unknown.
func residentBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// checkMemory recycles the workers over MaxRSS; the monitor calls it
// every second.
func (p *Pool) checkMemory() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for m := range p.members {
		if m.gen != p.gen || m.overMemory || !m.w.Usable() {
			continue
		}
		served := uint64(m.served.Load())
		if m.slot >= 0 {
			served = p.board.read(m.slot).served
		}
		if served == 0 {
			continue
		}
		rss := residentBytes(m.w.Pid())
		if rss <= p.cfg.MaxRSS {
			continue
		}
		p.log.Warn("recycling a worker over --max-rss after its request", "pid", m.w.Pid(),
			"rss_mib", rss>>20, "max_rss_mib", p.cfg.MaxRSS>>20, "served", served)
		m.overMemory = true
		// A FastCGI worker finishes its request before it leaves; a
		// worker of Serve's leaves now if idle, else when released.
		if m.slot >= 0 || p.dropIdle(m) {
			m.retireNow(ExitMaxRSS)
		}
	}
}

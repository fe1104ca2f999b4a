package bridge

// This file holds the reaping of orphans. A preloading pool makes the
// supervisor a child subreaper (forker.go), so that the workers forked
// by its fork servers are its children; a process the app starts and
// leaves behind then becomes its child too, and would stay a zombie, as
// nothing waits for it, if the monitor did not reap it here.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// orphans follows the supervisor's children that the pool does not know.
type orphans struct {
	// zombies are the unknown children seen dead on the last look: one
	// still dead a look later is reaped, as no one else waits for it
	// (a known process's wait reaps it at once).
	zombies map[int]bool
}

// reap reaps the children not in known that stayed zombies since the
// last look, and returns their pids.
func (o *orphans) reap(known map[int]bool) []int {
	var reaped []int
	now := map[int]bool{}
	for _, pid := range children() {
		if known[pid] || !zombie(pid) {
			continue
		}
		if o.zombies[pid] {
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
				reaped = append(reaped, pid)
			}
			continue
		}
		now[pid] = true
	}
	o.zombies = now
	return reaped
}

// children returns this process's children, from /proc.
func children() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

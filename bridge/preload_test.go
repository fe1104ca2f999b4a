package bridge

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// parentOf returns pid's parent, from /proc.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, err := strconv.Atoi(f[1])
	require.NoError(t, err)
	return ppid
}

// TestPreloadFastCGI: a preloading FastCGI pool forks its workers from
// one import; each is the supervisor's own child, with all a started
// worker has (the board, the status path, its stacks); a killed worker
// is replaced without an import; a killed fork server takes no worker
// and is replaced; what the app leaves behind is reaped; and nothing
// outlives the pool.
func TestPreloadFastCGI(t *testing.T) {
	p := startFCGIPoolSized(t, Size{2, 2}, func(c *PoolConfig) { c.Preload = true }, probeApp(t, "application"),
		func(fc *FastCGIConfig) {
			fc.StatusPath = "/status"
			fc.Status = func(full bool) []byte { return []byte(`{"asked": "` + strconv.FormatBool(full) + `"}`) }
		})
	get := func(path string, query ...string) string {
		t.Helper()
		req := tu.FCGIRequest(1, false, "", append([]string{"REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", path}, query...)...)
		r := reply(t, p.request(t, req))
		require.Equal(t, []end{{1, 0}}, r.ends)
		_, body, _ := strings.Cut(r.stdout[1], "\r\n\r\n")
		return body
	}
	imports := func() int { return strings.Count(p.log.String(), "the fork server imported the app") }
	seen := map[int]bool{}
	workers := func() []int {
		pids := p.pool.Stats().Pids
		for _, pid := range pids {
			seen[pid] = true
		}
		return pids
	}
	forkers := p.pool.Status().ForkServers
	require.Len(t, forkers, 1)
	seen[forkers[0]] = true

	t.Run("the workers are forked, and are the supervisor's children", func(t *testing.T) {
		p.healthy(t)
		pids := workers()
		require.Len(t, pids, 2)
		for _, pid := range pids {
			assert.Equal(t, os.Getpid(), parentOf(t, pid), "worker %d", pid)
			assert.NotEqual(t, forkers[0], pid)
		}
		assert.Equal(t, 1, imports())
		assert.Contains(t, pids, mustAtoi(t, get("/pid")))
	})
	t.Run("a forked worker has the status path and gives its stacks", func(t *testing.T) {
		var doc struct{ Asked string }
		require.NoError(t, json.Unmarshal([]byte(get("/status", "QUERY_STRING", "full")), &doc))
		assert.Equal(t, "true", doc.Asked, "the worker asked the supervisor on its own socket")
		done := make(chan string, 1)
		go func() { done <- get("/sleep", "QUERY_STRING", "0.6") }()
		var stack string
		require.Eventually(t, func() bool {
			for _, pid := range workers() {
				if s, err := p.pool.Stacks(pid, time.Second); err == nil && strings.Contains(s, " in sleep\n") {
					stack = s
					return true
				}
			}
			return false
		}, 5*time.Second, 50*time.Millisecond, "the sleeping worker's stack")
		assert.Contains(t, stack, "probe.py")
		assert.Equal(t, "slept", <-done)
		// The bridge's fds are 3 to 12 here (pipes, listener, lobby,
		// board, keeper, fast path, status, stacks); a higher one is the
		// environment's, passed through as to a started worker.
		for _, fd := range strings.Fields(get("/inheritable")) {
			assert.Greater(t, mustAtoi(t, fd), 12, "fd %s reaches the app's subprocesses", fd)
		}
	})
	t.Run("a killed worker is replaced by a fork, without an import", func(t *testing.T) {
		before := workers()
		slices.Sort(before)
		reply(t, p.request(t, tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/kill")))
		require.Eventually(t, func() bool {
			// Sorted: the pool lists its workers in no set order, and
			// the same two in another order are no replacement.
			pids := workers()
			slices.Sort(pids)
			return len(pids) == 2 && !slices.Equal(pids, before)
		}, 10*time.Second, 10*time.Millisecond)
		for _, pid := range workers() {
			assert.Equal(t, os.Getpid(), parentOf(t, pid))
		}
		assert.Equal(t, 1, imports())
		p.healthy(t)
	})
	t.Run("a killed fork server takes no worker, and another starts", func(t *testing.T) {
		before := workers()
		require.NoError(t, syscall.Kill(forkers[0], syscall.SIGKILL))
		for range 4 {
			p.healthy(t)
		}
		assert.ElementsMatch(t, before, workers(), "the workers serve on")
		require.Eventually(t, func() bool {
			now := p.pool.Status().ForkServers
			return len(now) == 1 && now[0] != forkers[0]
		}, 20*time.Second, 20*time.Millisecond, "another fork server")
		forkers = p.pool.Status().ForkServers
		seen[forkers[0]] = true
		assert.Equal(t, 2, imports())
		assert.Contains(t, p.log.String(), "the fork server is gone; starting another")
		require.NoError(t, syscall.Kill(before[0], syscall.SIGKILL))
		require.Eventually(t, func() bool {
			pids := workers()
			return len(pids) == 2 && !slices.Contains(pids, before[0])
		}, 10*time.Second, 10*time.Millisecond)
		assert.Equal(t, 2, imports(), "the new fork server forked the replacement")
		p.healthy(t)
	})
	t.Run("what the app leaves behind is reaped", func(t *testing.T) {
		orphan := mustAtoi(t, get("/orphan", "QUERY_STRING", "0.1"))
		require.Eventually(t, func() bool { return syscall.Kill(orphan, 0) == syscall.ESRCH }, 10*time.Second, 50*time.Millisecond,
			"the orphan, a child of the supervisor now, is reaped, not left a zombie")
		assert.Contains(t, p.log.String(), "reaped a process the app left behind")
	})
	t.Run("nothing outlives the pool", func(t *testing.T) {
		workers()
		require.NoError(t, p.pool.Shutdown(t.Context()))
		for pid := range seen {
			assert.Equal(t, syscall.ESRCH, syscall.Kill(pid, 0), "process %d outlived the pool", pid)
		}
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(t, err, "%q", s)
	return n
}

package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type poolHarness struct {
	t    *testing.T
	pool *Pool
	log  *syncBuffer
}

func newPool(t *testing.T, app string, configure func(*PoolConfig)) *poolHarness {
	t.Helper()
	h := &poolHarness{t: t, log: &syncBuffer{}}
	cfg := PoolConfig{
		Worker:  Config{App: app, Logger: slog.New(slog.NewTextHandler(h.log, nil))},
		Workers: Size{2, 2},
	}
	if configure != nil {
		configure(&cfg)
	}
	var err error
	h.pool, err = NewPool(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		pids := append(h.pool.Stats().Pids, h.pool.Status().ForkServers...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, h.pool.Shutdown(ctx))
		for _, pid := range pids {
			assert.Equal(t, syscall.ESRCH, syscall.Kill(pid, 0), "worker %d outlived Shutdown", pid)
		}
	})
	return h
}

// startModes runs f with workers started by exec, and with workers
// forked from a fork server (PoolConfig.Preload): set sets the mode.
func startModes(t *testing.T, f func(t *testing.T, set func(*PoolConfig))) {
	for _, preload := range []bool{false, true} {
		name := map[bool]string{false: "exec", true: "preload"}[preload]
		t.Run(name, func(t *testing.T) { f(t, func(c *PoolConfig) { c.Preload = preload }) })
	}
}

func (h *poolHarness) get(path string, extra ...string) (*recorder, Result, error) {
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.pool.Serve(ctx, &Request{Env: env(path, extra...)}, rec)
	return rec, res, err
}

// waitLive waits until n workers are ready again.
func (h *poolHarness) waitLive(n int) PoolStats {
	h.t.Helper()
	var s PoolStats
	require.Eventually(h.t, func() bool {
		s = h.pool.Stats()
		return s.Live == n && len(s.Pids) == n
	}, 20*time.Second, 10*time.Millisecond, "pool did not get back to %d workers: %+v", n, s)
	return s
}

func TestPoolServesConcurrently(t *testing.T) {
	h := newPool(t, probeApp(t, "validated"), nil)
	pids := h.pool.Stats().Pids
	require.Len(t, pids, 2)
	var wg sync.WaitGroup
	seen := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, res, err := h.get("/pid")
			assert.NoError(t, err)
			assert.Equal(t, 200, res.Status)
			seen <- rec.body.String()
		}()
	}
	wg.Wait()
	close(seen)
	for pid := range seen {
		n, err := strconv.Atoi(pid)
		require.NoError(t, err)
		assert.Contains(t, pids, n)
	}
}

func TestPoolImportFailure(t *testing.T) {
	startModes(t, testPoolImportFailure)
}

func testPoolImportFailure(t *testing.T, set func(*PoolConfig)) {
	cfg := PoolConfig{Worker: Config{App: "no_such_app_module", Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))}, Workers: Size{2, 2}}
	set(&cfg)
	_, err := NewPool(cfg)
	var ie *ImportError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Msg, "No module named 'no_such_app_module'")
}

func TestPoolReplacesKilledWorker(t *testing.T) {
	startModes(t, testPoolReplacesKilledWorker)
}

func testPoolReplacesKilledWorker(t *testing.T, set func(*PoolConfig)) {
	h := newPool(t, probeApp(t, "application"), set)
	before := h.pool.Stats().Pids
	rec, res, err := h.get("/kill")
	require.ErrorIs(t, err, ErrWorkerDied)
	assert.Equal(t, 502, res.Status)
	assert.Equal(t, 502, rec.status)
	require.Eventually(t, func() bool {
		s := h.pool.Stats()
		return s.Live == 2 && len(s.Pids) == 2 && !slices.Equal(s.Pids, before)
	}, 20*time.Second, 10*time.Millisecond, "the killed worker is replaced")
	_, res, err = h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
}

func TestPoolIdleDeath(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), nil)
	victim := h.pool.Stats().Pids[0]
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		s := h.pool.Stats()
		return s.Live == 2 && len(s.Pids) == 2 && !slices.Contains(s.Pids, victim)
	}, 20*time.Second, 10*time.Millisecond, "the worker that died idle is replaced")
	for i := 0; i < 6; i++ {
		_, res, err := h.get("/hello")
		require.NoError(t, err, "no request fails for a worker that died idle")
		assert.Equal(t, 200, res.Status)
	}
	assert.Contains(t, h.log.String(), "worker exited while idle")
}

func TestPoolTimeout(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) { c.Timeout = 500 * time.Millisecond })
	rec, res, err := h.get("/sleep", "QUERY_STRING", "30")
	require.ErrorIs(t, err, ErrStopped)
	assert.Contains(t, err.Error(), "the app ran longer than the 500ms timeout")
	assert.Equal(t, 504, res.Status)
	assert.Equal(t, 504, rec.status)
	h.waitLive(2)
	_, res, err = h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
}

func TestPoolBacklog(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) { c.Workers, c.Backlog = Size{1, 1}, 1 })
	results := make(chan Result, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, res, _ := h.get("/sleep", "QUERY_STRING", "1")
			results <- res
		}()
	}
	require.Eventually(t, func() bool { return h.pool.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	rec, res, err := h.get("/hello")
	require.ErrorIs(t, err, ErrOverloaded)
	assert.Equal(t, 503, res.Status)
	assert.Equal(t, 503, rec.status)
	assert.Equal(t, 200, (<-results).Status, "the queued request is served")
	assert.Equal(t, 200, (<-results).Status)
	assert.Contains(t, h.log.String(), "the queue is full")
}

func TestPoolMaxRequests(t *testing.T) {
	startModes(t, testPoolMaxRequests)
}

func testPoolMaxRequests(t *testing.T, set func(*PoolConfig)) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) { set(c); c.Workers, c.MaxRequests = Size{1, 1}, 3 })
	var pids []string
	for i := 0; i < 9; i++ {
		rec, res, err := h.get("/pid")
		require.NoError(t, err, "recycling never fails a request")
		require.Equal(t, 200, res.Status)
		pids = append(pids, rec.body.String())
	}
	for i := 0; i < 9; i += 3 {
		assert.Equal(t, pids[i], pids[i+1])
		assert.Equal(t, pids[i], pids[i+2])
	}
	assert.Len(t, slices.Compact(slices.Clone(pids)), 3, "a new worker after every 3 requests: %v", pids)
}

func TestPoolSysExitDoesNotFailNextRequest(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) { c.Workers = Size{1, 1} })
	_, res, err := h.get("/sys-exit")
	require.NoError(t, err)
	assert.Equal(t, 500, res.Status)
	_, res, err = h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
}

func TestPoolReload(t *testing.T) {
	startModes(t, testPoolReload)
}

func testPoolReload(t *testing.T, set func(*PoolConfig)) {
	dir := t.TempDir()
	app := filepath.Join(dir, "reloaded.py")
	write := func(body string) {
		require.NoError(t, os.WriteFile(app, []byte(body), 0o644))
	}
	version := func(v string) string {
		return fmt.Sprintf("def application(e, s):\n    s('200 OK', [])\n    return [b'%s']\n", v)
	}
	write(version("v1"))
	h := newPool(t, app, set)
	old := h.pool.Stats().Pids
	oldForkers := h.pool.Status().ForkServers

	// Requests keep coming during the reload; none may fail.
	stop := make(chan struct{})
	var failures, served int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, res, err := h.get("/")
				mu.Lock()
				served++
				if err != nil || res.Status != 200 {
					failures++
				}
				mu.Unlock()
			}
		}()
	}
	write(version("v2"))
	require.NoError(t, h.pool.Reload())
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	assert.Zero(t, failures, "of %d requests during the reload", served)
	rec, _, err := h.get("/")
	require.NoError(t, err)
	assert.Equal(t, "v2", rec.body.String(), "the new code is served")
	for _, pid := range append(old, oldForkers...) {
		assert.Eventually(t, func() bool { return syscall.Kill(pid, 0) == syscall.ESRCH }, 10*time.Second, 10*time.Millisecond, "old worker or fork server %d retired", pid)
	}

	// A reload whose import fails keeps the running workers, and their
	// fork server.
	running := h.waitLive(2).Pids
	forkers := h.pool.Status().ForkServers
	write("raise RuntimeError('broken deploy')\n")
	err = h.pool.Reload()
	var ie *ImportError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Msg, "broken deploy")
	rec, _, err = h.get("/")
	require.NoError(t, err)
	assert.Equal(t, "v2", rec.body.String())
	assert.ElementsMatch(t, running, h.pool.Stats().Pids)
	assert.Equal(t, forkers, h.pool.Status().ForkServers)
	if h.pool.preload == nil {
		return
	}
	// Preloaded, a worker that dies after the broken deploy is replaced
	// by a fork of the code that runs, not an import of the broken one.
	require.Len(t, oldForkers, 1)
	require.Len(t, forkers, 1)
	assert.NotEqual(t, oldForkers, forkers, "the reload started a fork server of the new code")
	require.NoError(t, syscall.Kill(running[0], syscall.SIGKILL))
	require.Eventually(t, func() bool {
		s := h.pool.Stats()
		return s.Live == 2 && !slices.Contains(s.Pids, running[0])
	}, 10*time.Second, 10*time.Millisecond)
	for range 4 {
		rec, _, err = h.get("/")
		require.NoError(t, err)
		assert.Equal(t, "v2", rec.body.String())
	}
}

func TestPoolShutdownDrains(t *testing.T) {
	startModes(t, testPoolShutdownDrains)
}

func testPoolShutdownDrains(t *testing.T, set func(*PoolConfig)) {
	h := newPool(t, probeApp(t, "application"), set)
	done := make(chan Result, 1)
	go func() {
		_, res, _ := h.get("/sleep", "QUERY_STRING", "0.5")
		done <- res
	}()
	require.Eventually(t, func() bool { return h.pool.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)
	pids := append(h.pool.Stats().Pids, h.pool.Status().ForkServers...)
	require.NoError(t, h.pool.Shutdown(context.Background()))
	assert.Equal(t, 200, (<-done).Status, "the request in flight finishes")
	_, res, err := h.get("/hello")
	assert.True(t, errors.Is(err, ErrClosed))
	assert.Equal(t, 503, res.Status)
	for _, pid := range pids {
		assert.Equal(t, syscall.ESRCH, syscall.Kill(pid, 0))
	}
}

func TestPoolShutdownKillsAfterDeadline(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) { c.Workers = Size{1, 1} })
	done := make(chan error, 1)
	go func() {
		_, _, err := h.get("/sleep", "QUERY_STRING", "60")
		done <- err
	}()
	require.Eventually(t, func() bool { return h.pool.Stats().Idle == 0 }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, h.pool.Shutdown(ctx), context.DeadlineExceeded)
	assert.ErrorIs(t, <-done, ErrWorkerDied)
}

// TestStuckWatch: a worker is stuck only when the same app run (the same
// request count, with the running flag up) outlasts the limit.
func TestStuckWatch(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type look struct {
		run  uint64
		at   time.Time
		want bool
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"one long run", []look{{5, at(0), false}, {5, at(500), false}, {5, at(1001), true}}},
		{"new requests each look", []look{{5, at(0), false}, {6, at(600), false}, {7, at(1200), false}, {8, at(1800), false}}},
		{"idle between looks", []look{{5, at(0), false}, {0, at(600), false}, {5, at(1200), false}}},
		{"not running", []look{{0, at(0), false}, {0, at(5000), false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s stuckWatch
			for i, l := range tt.looks {
				assert.Equal(t, l.want, s.stuck(l.run, l.at, time.Second), "look %d", i)
			}
		})
	}
}

package slowlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsgibridge/wsgibridge/bridge"
	"github.com/wsgibridge/wsgibridge/internal/testutil"
)

// fakePool runs what the test says and gives a fixed stack.
type fakePool struct {
	mu      sync.Mutex
	running []bridge.Running
	asked   int
}

func (f *fakePool) Running() []bridge.Running {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bridge.Running(nil), f.running...)
}

func (f *fakePool) Stacks(pid int, wait time.Duration) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return "Current thread 0x1 (most recent call first):\n  File \"/srv/app.py\", line 7 in handler\n" +
		"  File \"/srv/app.py\", line 2 in application\n", nil
}

func (f *fakePool) set(r ...bridge.Running) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = r
}

// TestSlowLog: a request past the threshold gets one entry however long
// it runs, with its worker's stack, innermost last; a quick one none; the
// next run of the same worker is a request of its own.
func TestSlowLog(t *testing.T) {
	pool := &fakePool{}
	out := &testutil.SyncBuffer{}
	l := Start(Config{Pool: pool, After: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(out, nil))})
	defer l.Stop()

	now := time.Now()
	pool.set(bridge.Running{Pid: 7, Request: "GET /report", Since: now, Run: 1},
		bridge.Running{Pid: 8, Request: "GET /quick", Since: now.Add(time.Hour), Run: 1})
	require.Eventually(t, func() bool { return l.Count() == 1 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // it runs on: still one entry
	assert.Equal(t, uint64(1), l.Count())
	pool.set(bridge.Running{Pid: 7, Request: "GET /other", Since: now, Run: 2})
	require.Eventually(t, func() bool { return l.Count() == 2 }, 5*time.Second, 5*time.Millisecond)
	l.Stop()

	log := out.String()
	assert.Equal(t, 2, strings.Count(log, `msg="slow request"`))
	assert.Contains(t, log, `pid=7 request="GET /report" elapsed=`)
	assert.Contains(t, log, `stack="Current thread 0x1 (innermost last):\n  File \"/srv/app.py\", line 2 in application\n  File \"/srv/app.py\", line 7 in handler"`)
	assert.NotContains(t, log, "/quick")
}

package bridge

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

func TestFormatStacks(t *testing.T) {
	dump := `Thread 0x00007f0000000002 (most recent call first):
  File "/srv/app.py", line 30 in wait_on_lock
  File "/usr/lib/python3.11/threading.py", line 975 in run
  File "/usr/lib/python3.11/threading.py", line 1038 in _bootstrap_inner

Current thread 0x00007f0000000001 (most recent call first):
  File "/srv/app.py", line 12 in slow
  File "/srv/app.py", line 3 in application
  File "bridge/wsgibridge/wsgi.py", line 316 in run_app
`
	tests := []struct {
		name  string
		depth int
		want  string
	}{
		{"every frame", 0, `Thread 0x00007f0000000002 (innermost last):
  File "/usr/lib/python3.11/threading.py", line 1038 in _bootstrap_inner
  File "/usr/lib/python3.11/threading.py", line 975 in run
  File "/srv/app.py", line 30 in wait_on_lock
Current thread 0x00007f0000000001 (innermost last):
  File "bridge/wsgibridge/wsgi.py", line 316 in run_app
  File "/srv/app.py", line 3 in application
  File "/srv/app.py", line 12 in slow`},
		{"the two innermost", 2, `Thread 0x00007f0000000002 (innermost last):
  ... (1 outer frames)
  File "/usr/lib/python3.11/threading.py", line 975 in run
  File "/srv/app.py", line 30 in wait_on_lock
Current thread 0x00007f0000000001 (innermost last):
  ... (1 outer frames)
  File "/srv/app.py", line 3 in application
  File "/srv/app.py", line 12 in slow`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, FormatStacks(dump, tt.depth))
		})
	}
}

// TestWorkerStacks: a worker gives its Python stacks while the app is
// blocked in a C call, and the request goes on to its normal end.
func TestWorkerStacks(t *testing.T) {
	w, err := Start(Config{App: probeApp(t, "application"), Stacks: true})
	require.NoError(t, err)
	defer w.Close(time.Second)
	require.NoError(t, w.Ready(context.Background()))
	done := make(chan string, 1)
	go func() {
		rec := &recorder{}
		_, err := w.Serve(context.Background(), &Request{Env: append(env("/sleep"), Var{"QUERY_STRING", "1"})}, rec)
		assert.NoError(t, err)
		done <- rec.body.String()
	}()
	time.Sleep(300 * time.Millisecond)
	stack, err := w.Stacks(time.Second)
	require.NoError(t, err)
	assert.Contains(t, stack, "probe.py", stack)
	assert.Contains(t, stack, " in sleep\n", "the app's function, where it sleeps")
	assert.Equal(t, "slept", <-done, "the request went on")

	plain, err := Start(Config{App: probeApp(t, "application")})
	require.NoError(t, err)
	defer plain.Close(time.Second)
	_, err = plain.Stacks(time.Second)
	assert.ErrorIs(t, err, ErrNoStacks)
}

// TestPoolStatus: a FastCGI pool's counters come from its workers' board
// and never go backwards, as workers die or are reloaded; the rows show
// what runs, without the query.
func TestPoolStatus(t *testing.T) {
	p := startFCGIPoolApp(t, 2, probeApp(t, "application"), func(fc *FastCGIConfig) { fc.Stats = true })
	for i := 0; i < 3; i++ {
		p.exchange(t, hello(1, false))
	}
	p.exchange(t, tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/missing"))
	st := p.pool.Status()
	assert.Equal(t, uint64(4), st.Served)
	assert.Equal(t, [5]uint64{0, 3, 0, 1, 0}, st.Classes)
	var counted uint64
	for _, n := range st.Buckets {
		counted += n
	}
	assert.Equal(t, uint64(4), counted, "every request in the histogram")
	assert.Equal(t, 2, st.Alive)
	assert.Equal(t, 2, st.Idle)

	// A request that runs shows in its worker's row once it has run 20 ms.
	c := dial(t, p.sock)
	c.send(tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/sleep", "QUERY_STRING", "1", "REQUEST_URI", "/sleep?1"))
	require.Eventually(t, func() bool { return len(p.pool.Running()) == 1 }, 5*time.Second, 10*time.Millisecond)
	run := p.pool.Running()[0]
	assert.Equal(t, "GET /sleep", run.Request, "the query is left out")
	st = p.pool.Status()
	assert.Equal(t, 1, st.Busy)
	assert.Equal(t, 1, st.InProgress)
	stack, err := p.pool.Stacks(run.Pid, time.Second)
	require.NoError(t, err)
	assert.Contains(t, stack, " in sleep\n")
	c.until(endRequest, 1, 10*time.Second)
	// The worker counts a request just after its response has gone.
	require.Eventually(t, func() bool { return p.pool.Status().Classes[1] == 4 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, syscall.Kill(run.Pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return p.pool.Status().Exits[ExitCrash] == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(5), p.pool.Status().Served, "what the dead worker served is still counted")
	// A reload during the back-off after a death would end that slot with
	// nothing to retire; the pool is whole again first, so two are.
	require.Eventually(t, func() bool { return p.pool.Status().Idle == 2 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, p.pool.Reload())
	st = p.pool.Status()
	assert.Equal(t, uint64(1), st.Reloads)
	assert.False(t, st.LastReload.IsZero())
	assert.Equal(t, uint64(5), st.Served)
	require.Eventually(t, func() bool { return p.pool.Status().Exits[ExitReload] == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, [5]uint64{0, 4, 0, 1, 0}, p.pool.Status().Classes)
	var pids []string
	for _, row := range p.pool.Status().Rows {
		pids = append(pids, strconv.Itoa(row.Pid))
	}
	assert.NotContains(t, strings.Join(pids, " "), strconv.Itoa(run.Pid))
}

package bridge

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// outcome is how one of a burst of requests ended.
type outcome struct {
	index  int
	status string // the Status line's code, "" if none
	ended  bool   // an END_REQUEST came
	code   byte   // its protocol status
	took   time.Duration
	done   time.Time
}

// burst sends n requests for path?query at once (in order, a few
// milliseconds apart), each on its own connection, and returns how each
// ended.
func burst(t *testing.T, p *fcgiPool, n int, path, query string) []outcome {
	t.Helper()
	out := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			req := tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1",
				"SCRIPT_NAME", path, "QUERY_STRING", query)
			r := reply(t, p.request(t, req))
			o := outcome{index: i, took: time.Since(start), done: time.Now()}
			if status, ok := strings.CutPrefix(r.stdout[1], "Status: "); ok {
				o.status = status[:3]
			} else if r.stdout[1] != "" {
				o.status = "200" // CGI's default: a 200 has no Status line
			}
			if len(r.ends) == 1 {
				o.ended, o.code = true, r.ends[0].status
			}
			out[i] = o
		}()
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	return out
}

// With every worker busy, requests beyond the backlog are answered 503
// with FCGI_OVERLOADED at once; those within it wait and are served in
// the order they came; none hangs.
func TestFastCGIBacklog(t *testing.T) {
	p := startFCGIPoolSized(t, Size{1, 1}, func(c *PoolConfig) { c.Backlog = 3 }, probeApp(t, "application"))
	out := burst(t, p, 12, "/sleep", "0.5")
	var served, refused []outcome
	for _, o := range out {
		require.True(t, o.ended, "request %d ended with END_REQUEST", o.index)
		switch o.status {
		case "200":
			assert.Equal(t, byte(0), o.code)
			served = append(served, o)
		case "503":
			assert.Equal(t, byte(2), o.code, "FCGI_OVERLOADED")
			assert.Less(t, o.took, 1500*time.Millisecond, "refused at once, not after a wait")
			refused = append(refused, o)
		default:
			t.Errorf("request %d: status %q", o.index, o.status)
		}
	}
	assert.Len(t, served, 4, "the one running and the backlog of 3")
	assert.Len(t, refused, 8)
	for i := 1; i < len(served); i++ {
		assert.True(t, served[i-1].done.Before(served[i].done), "served in the order they came: %v", served)
	}
	assert.Equal(t, uint64(8), p.pool.Status().Refused)
	assert.Contains(t, p.log.String(), "answering requests 503")
	p.healthy(t)
}

// A request that waits longer than QueueTimeout is answered 503.
func TestFastCGIQueueTimeout(t *testing.T) {
	p := startFCGIPoolSized(t, Size{1, 1}, func(c *PoolConfig) { c.QueueTimeout = 500 * time.Millisecond }, probeApp(t, "application"))
	out := burst(t, p, 3, "/sleep", "2")
	assert.Equal(t, "200", out[0].status)
	for _, o := range out[1:] {
		assert.Equal(t, "503", o.status, "request %d waited past the queue timeout", o.index)
		assert.Equal(t, byte(2), o.code)
		assert.Less(t, o.took, 1500*time.Millisecond, "answered once the timeout passed, not when a worker freed")
	}
	p.healthy(t)
}

// A burst within the backlog costs nothing: every request is served.
func TestFastCGIBacklogNotReached(t *testing.T) {
	p := startFCGIPoolSized(t, Size{2, 2}, nil, probeApp(t, "application"))
	out := burst(t, p, 20, "/sleep-pid", "0.05")
	pids := map[string]bool{}
	for _, o := range out {
		assert.Equal(t, "200", o.status, "request %d", o.index)
	}
	for _, row := range p.pool.Status().Rows {
		pids[strconv.Itoa(row.Pid)] = true
	}
	assert.Len(t, pids, 2)
	assert.Zero(t, p.pool.Status().Refused)
}

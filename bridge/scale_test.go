package bridge

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		bad  bool
	}{
		{in: "4", want: Size{4, 4}},
		{in: "2:8", want: Size{2, 8}},
		{in: "0:3", want: Size{0, 3}},
		{in: "1:1", want: Size{1, 1}},
		{in: "0", bad: true},
		{in: "-1", bad: true},
		{in: "3:2", bad: true},
		{in: "0:0", bad: true},
		{in: "1:", bad: true},
		{in: ":4", bad: true},
		{in: "two", bad: true},
		{in: "1:2:3", bad: true},
		{in: "1:1000", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.bad {
			assert.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		assert.Equal(t, tt.want.Min != tt.want.Max, got.Elastic(), tt.in)
	}
	assert.Equal(t, "4", Size{4, 4}.String())
	assert.Equal(t, "0:3", Size{0, 3}.String())
}

// An on-demand pool of the pipe modes: no worker until a request, one
// more while every one is busy, and none again once they idled.
func TestElasticPool(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) {
		c.Workers, c.WorkerIdle = Size{0, 2}, 300*time.Millisecond
	})
	st := h.pool.Status()
	assert.Zero(t, st.Size)
	assert.Zero(t, st.Alive, "no Python runs before the first request")

	rec, res, err := h.get("/pid")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
	first, err := strconv.Atoi(rec.body.String())
	require.NoError(t, err)

	pids := make(chan string, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, _, err := h.get("/sleep-pid", "QUERY_STRING", "0.5")
			assert.NoError(t, err)
			pids <- rec.body.String()
		}()
	}
	wg.Wait()
	close(pids)
	seen := map[string]bool{}
	for p := range pids {
		seen[p] = true
	}
	assert.Len(t, seen, 2, "both ran at once: the pool grew to its most")
	assert.Contains(t, seen, strconv.Itoa(first))
	assert.Equal(t, 2, h.pool.Status().Size)

	require.Eventually(t, func() bool {
		st := h.pool.Status()
		return st.Size == 0 && st.Alive == 0
	}, 10*time.Second, 20*time.Millisecond, "the idle workers were retired")
	assert.Equal(t, uint64(2), h.pool.Status().Exits[ExitIdle])
	assert.Contains(t, h.log.String(), "retiring an idle worker")

	_, res, err = h.get("/hello")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status, "and it starts again for the next")
}

// A FastCGI pool grows while its workers are all busy, up to its most,
// and shrinks back to its least once they idle; one of 0 starts none
// until a connection waits.
func TestElasticFastCGIPool(t *testing.T) {
	p := startFCGIPoolSized(t, Size{0, 3}, func(c *PoolConfig) { c.WorkerIdle = 300 * time.Millisecond }, probeApp(t, "application"))
	assert.Zero(t, p.pool.Status().Alive, "no Python runs before the first request")
	p.healthy(t)

	slow := tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/sleep-pid", "QUERY_STRING", "1")
	pids := make(chan string, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := reply(t, p.request(t, slow))
			_, body, _ := cutHead(r.stdout[1])
			pids <- body
		}()
	}
	require.Eventually(t, func() bool { return p.pool.Status().Size == 3 }, 10*time.Second, 10*time.Millisecond,
		"the pool grew to its most while every worker was busy")
	wg.Wait()
	close(pids)
	seen := map[string]bool{}
	for pid := range pids {
		seen[pid] = true
	}
	assert.GreaterOrEqual(t, len(seen), 2, "the slow requests ran side by side")

	require.Eventually(t, func() bool {
		st := p.pool.Status()
		return st.Size == 0 && st.Alive == 0
	}, 15*time.Second, 20*time.Millisecond, "it shrank back to none")
	p.healthy(t)
}

// cutHead splits a CGI response into its header block and body.
func cutHead(resp string) (string, string, bool) {
	for i := 0; i+4 <= len(resp); i++ {
		if resp[i:i+4] == "\r\n\r\n" {
			return resp[:i], resp[i+4:], true
		}
	}
	return resp, "", false
}

package bridge

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// A worker whose memory passes MaxRSS is replaced after its request: no
// request fails, and the pool counts why it left.
func TestMaxRSS(t *testing.T) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) {
		c.Workers, c.MaxRSS = Size{1, 1}, 60<<20
	})
	pids := map[string]bool{}
	for i := 0; i < 12; i++ {
		rec, res, err := h.get("/hold", "QUERY_STRING", "10")
		require.NoError(t, err, "request %d", i)
		require.Equal(t, 200, res.Status, "request %d", i)
		pids[rec.body.String()] = true
		time.Sleep(300 * time.Millisecond) // the memory is looked at every second
	}
	assert.GreaterOrEqual(t, len(pids), 2, "the worker was replaced")
	assert.GreaterOrEqual(t, h.pool.Status().Exits[ExitMaxRSS], uint64(1))
	assert.Contains(t, h.log.String(), "recycling a worker over --max-rss")
	for _, row := range h.pool.Status().Rows {
		assert.Less(t, row.RSS, int64(200<<20))
	}
}

func TestMaxRSSFastCGI(t *testing.T) {
	p := startFCGIPoolSized(t, Size{1, 1}, func(c *PoolConfig) { c.MaxRSS = 60 << 20 }, probeApp(t, "application"))
	hold := tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1",
		"SCRIPT_NAME", "/hold", "QUERY_STRING", "10")
	pids := map[string]bool{}
	for i := 0; i < 12; i++ {
		r := reply(t, p.request(t, hold))
		head, body, ok := cutHead(r.stdout[1])
		require.True(t, ok, "request %d: %q", i, r.stdout[1])
		require.NotContains(t, head, "Status:", "request %d: a 200", i)
		_, err := strconv.Atoi(body)
		require.NoError(t, err)
		pids[body] = true
		time.Sleep(300 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, len(pids), 2, "the worker was replaced")
	assert.GreaterOrEqual(t, p.pool.Status().Exits[ExitMaxRSS], uint64(1))
}

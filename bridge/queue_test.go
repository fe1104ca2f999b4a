package bridge

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPoolQueueHandOff sends many requests at once through one worker, so
// that most wait in the queue and are begun on the worker by the request
// before them (Pool.release). Some carry an environ larger than the pipe
// holds, which the request before can send only part of; some end while
// they wait, or just as the worker is handed to them. Every request gets
// its own answer or a refusal, and the worker stays in step throughout.
func TestPoolQueueHandOff(t *testing.T) {
	startModes(t, testPoolQueueHandOff)
}

func testPoolQueueHandOff(t *testing.T, set func(*PoolConfig)) {
	h := newPool(t, probeApp(t, "application"), func(c *PoolConfig) {
		set(c)
		c.Workers, c.Backlog = Size{1, 1}, 100
	})
	pids := h.pool.Stats().Pids
	pad := strings.Repeat("p", 200<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered, ended := 0, 0
	for i := range 90 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mark := strconv.Itoa(i)
			var extra []string
			if i%3 == 0 {
				extra = []string{"HTTP_X_PAD", pad}
			}
			timeout := 30 * time.Second
			leaves := i%4 == 1
			if leaves {
				timeout = time.Duration(i%20) * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			rec := &recorder{}
			res, err := h.pool.Serve(ctx, &Request{Env: env("/echo-path/"+mark, extra...)}, rec)
			mu.Lock()
			defer mu.Unlock()
			if leaves && err != nil {
				// Refused in the queue, or begun on the worker and
				// stopped there, before its answer or during it.
				ended++
				assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrStopped), "request %d: %v", i, err)
				assert.True(t, res.Status == 503 || res.Status == 504 || res.CutShort, "request %d: %+v", i, res)
				return
			}
			answered++
			if assert.NoError(t, err, "request %d", i) {
				assert.Equal(t, 200, res.Status)
				assert.Equal(t, "'/echo-path/"+mark+"'", rec.body.String(), "request %d got another's answer", i)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d answered, %d ended early", answered, ended)
	assert.Equal(t, pids, h.pool.Stats().Pids, "the worker was replaced: a request put it out of step")
	assert.NotContains(t, h.log.String(), errProtocol.Error())
	rec, res, err := h.get("/echo-path/last")
	require.NoError(t, err)
	assert.Equal(t, 200, res.Status)
	assert.Equal(t, "'/echo-path/last'", rec.body.String())
}

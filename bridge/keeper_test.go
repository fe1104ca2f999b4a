package bridge

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// ends reads until the worker closes the connection, within 20 s.
func (c *conversation) ends() {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(20*time.Second)))
	rest, err := io.ReadAll(c.nc)
	c.got = append(c.got, rest...)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		require.NoError(c.t, err, "the connection closes, it does not hang")
	}
}

// TestFastCGIWorkerDeathTakesOnlyItsRequest: when a FastCGI worker dies,
// the request it was running fails (its connection closes at once), and
// the connections it kept between requests go to the next worker: the
// requests sent on them are served, not lost with it.
func TestFastCGIWorkerDeathTakesOnlyItsRequest(t *testing.T) {
	p := startFCGIPool(t, 1, "application")
	var idle []*conversation
	for i := 0; i < 3; i++ {
		c := dial(t, p.sock)
		c.send(hello(1, true))
		c.until(endRequest, 1, 10*time.Second)
		idle = append(idle, c)
	}
	running := dial(t, p.sock)
	running.send(hello(1, true))
	running.until(endRequest, 1, 10*time.Second)
	running.send(tu.FCGIRequest(1, true, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/kill"))
	running.ends()
	assert.Equal(t, 1, bytes.Count(running.got, endRequest), "the request the worker ran is not answered")

	for i, c := range idle {
		c.send(hello(1, true))
		c.until(endRequest, 2, 20*time.Second)
		_, second, _ := bytes.Cut(c.got, endRequest)
		assert.Contains(t, string(second), "Hello, world!", "kept connection %d serves on", i)
	}
	assert.Contains(t, p.log.String(), "passed=3")
	assert.Contains(t, p.log.String(), "closed_with_a_request_under_way=1")

	// The connections the web server closed are let go of; the one it
	// keeps is kept.
	for _, c := range idle[:2] {
		c.nc.Close()
	}
	require.Eventually(t, func() bool {
		p.pool.keeper.sweep()
		p.pool.keeper.mu.Lock()
		defer p.pool.keeper.mu.Unlock()
		return len(p.pool.keeper.conns) == 1
	}, 10*time.Second, 50*time.Millisecond, "only the copy of the connection still open is kept")
	assert.NotContains(t, strings.ToLower(p.log.String()), "level=error")
}

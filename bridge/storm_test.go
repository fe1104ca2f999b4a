package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tu "github.com/wsgibridge/wsgibridge/internal/testutil"
)

// Workers that die in every request are a crash storm: told once, not at
// each death, with the pool degraded (its status, the workers' ping path)
// until a worker serves again.
func TestCrashStorm(t *testing.T) {
	p := startFCGIPoolSized(t, Size{1, 1}, nil, probeApp(t, "application"), func(fc *FastCGIConfig) { fc.PingPath = "/ping" })
	kill := tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/kill")
	ping := tu.FCGIRequest(1, false, "", "REQUEST_METHOD", "GET", "SERVER_PROTOCOL", "HTTP/1.1", "SCRIPT_NAME", "/ping")
	p.healthy(t)
	deadline := time.Now().Add(20 * time.Second)
	for p.pool.Status().Degraded == nil {
		require.True(t, time.Now().Before(deadline), "no storm after the workers kept dying:\n%s", p.log.String())
		p.request(t, kill)
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 {
		p.request(t, kill) // deaths in the storm are not told one by one
	}
	st := p.pool.Status()
	require.NotNil(t, st.Degraded)
	assert.GreaterOrEqual(t, st.Degraded.Deaths, stormDeaths)
	assert.Contains(t, st.Degraded.Last, "killed by signal 9")
	logged := p.log.String()
	assert.Equal(t, 1, strings.Count(logged, "workers keep dying young"), logged)
	// The first worker had served a request before its /kill: its death
	// was not young, and is one line more.
	assert.LessOrEqual(t, strings.Count(logged, "worker exited while idle"), stormDeaths+1, "one line per death only before the storm")

	// The workers' ping path says so too, once a worker is up to answer.
	require.Eventually(t, func() bool {
		r := reply(t, p.request(t, ping))
		return strings.HasPrefix(r.stdout[1], "Status: 503")
	}, 40*time.Second, 100*time.Millisecond, "ping answers 503 while degraded")

	// The app stops crashing: the storm ends once a worker served.
	p.healthy(t)
	require.Eventually(t, func() bool { return p.pool.Status().Degraded == nil }, 5*time.Second, 50*time.Millisecond)
	assert.Contains(t, p.log.String(), "the crash storm is over")
	r := reply(t, p.request(t, ping))
	assert.True(t, strings.HasPrefix(r.stdout[1], "Content-Type: "), "a 200, with no Status line: %s", r.stdout[1])
}

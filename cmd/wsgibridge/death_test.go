package main

import (
	"bytes"
	"crypto/rand"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// posts is POST load: clients that post random bodies and check that
// each comes back whole.
type posts struct {
	stop         chan struct{}
	wg           sync.WaitGroup
	mu           sync.Mutex
	ok, failed   int
	failedStatus map[int]int
}

func startPosts(t *testing.T, url string, clients, size int) *posts {
	l := &posts{stop: make(chan struct{}), failedStatus: map[int]int{}}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			body := make([]byte, size)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				_, _ = rand.Read(body)
				status := 0
				resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
				if err == nil {
					var got []byte
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
					if err == nil && status == 200 && !bytes.Equal(got, body) {
						status = -1 // a body that did not come back whole
					}
				}
				l.mu.Lock()
				if status == 200 {
					l.ok++
				} else {
					l.failed++
					l.failedStatus[status]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *posts) finish() (ok, failed int, statuses map[int]int) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failed, l.failedStatus
}

// TestNginxWorkerDeathTakesOnlyItsRequest: through nginx with the README's
// block (kept connections), POSTs, which nginx never retries, go on while
// workers die; only the request a dying worker was running fails: at most
// one POST per death, every other body echoed whole. The deaths: kill -9,
// and a worker the timeout kills because its app cannot be stopped, while
// requests wait on the connections it kept.
func TestNginxWorkerDeathTakesOnlyItsRequest(t *testing.T) {
	apps := appsDir(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + sock})

	t.Run("kill -9", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "2", "--chdir", apps, "probe")
		l := startPosts(t, n.base1+"/echo", 8, 32<<10)
		kills := 0
		for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			if pids := d.workerPids(t); len(pids) > 0 {
				if syscall.Kill(pids[mrand.IntN(len(pids))], syscall.SIGKILL) == nil {
					kills++
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
		ok, failed, statuses := l.finish()
		t.Logf("%d POSTs echoed, %d failed %v, %d kills", ok, failed, statuses, kills)
		assert.Greater(t, ok, 0)
		assert.LessOrEqual(t, failed, kills, "at most the request each dead worker ran")
		assert.Zero(t, statuses[-1], "no body comes back other than it went")
		assert.Contains(t, d.log.String(), "the requests waiting on its connections go to the other workers")
	})

	t.Run("killed at the timeout", func(t *testing.T) {
		d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--workers", "2", "--timeout", "1s", "--chdir", apps, "probe")
		l := startPosts(t, n.base1+"/echo", 8, 32<<10)
		stuck := make(chan int, 2)
		for i := 0; i < 2; i++ {
			go func() {
				// A POST: nginx would send a GET that failed to the next
				// worker, which the same request would then hold too.
				resp, err := http.Post(n.base1+"/masked-sleep", "text/plain", strings.NewReader("x"))
				if err != nil {
					stuck <- 0
					return
				}
				resp.Body.Close()
				stuck <- resp.StatusCode
			}()
			time.Sleep(1500 * time.Millisecond)
		}
		for i := 0; i < 2; i++ {
			status := <-stuck
			assert.Contains(t, []int{502, 504}, status, "the stuck request fails")
		}
		ok, failed, statuses := l.finish()
		kills := strings.Count(d.log.String(), "the app did not stop at the timeout; killing its worker")
		t.Logf("%d POSTs echoed, %d failed %v, %d workers killed", ok, failed, statuses, kills)
		require.NotZero(t, kills)
		assert.Greater(t, ok, 0)
		assert.LessOrEqual(t, failed, kills, "a POST fails only if the killed worker had begun reading it")
		assert.Zero(t, statuses[-1])
	})
}

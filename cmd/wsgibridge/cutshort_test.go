package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNginxCutShortResponses: a response the app cuts short after its
// headers went out (chunked, or short of its Content-Length) reaches the
// client as failed through nginx, with fastcgi_keep_conn on and with the
// stock block, where nginx reads a response to the connection's end, over
// TCP and over a unix socket; a whole response through the same blocks
// still looks whole, and nginx's error log says why the other was cut.
func TestNginxCutShortResponses(t *testing.T) {
	curl := need(t, "curl")
	apps := appsDir(t)
	dir := t.TempDir()
	probeSock := filepath.Join(dir, "probe.sock")
	stockUnix := filepath.Join(dir, "stock.sock")
	stockTCP := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, "fastcgi", "--bind", "unix:"+probeSock, "--chdir", apps, "probe")
	startDaemon(t, "fastcgi", "--bind", "unix:"+stockUnix, "--mount", "/stock-unix", "--chdir", apps, "probe")
	startDaemon(t, "fastcgi", "--bind", stockTCP, "--mount", "/stock", "--chdir", apps, "probe")
	n := startNginx(t, map[string]string{"PROBE": "unix:" + probeSock, "STOCK": stockTCP, "STOCKUNIX": "unix:" + stockUnix})

	blocks := map[string]string{
		"fastcgi_keep_conn on, unix socket": n.base1,
		"stock block, TCP":                  n.base2 + "/stock",
		"stock block, unix socket":          n.base2 + "/stock-unix",
	}
	for block, base := range blocks {
		t.Run(block, func(t *testing.T) {
			for _, path := range []string{"/raise-after", "/short-length"} {
				err := exec.Command(curl, "--silent", "--output", os.DevNull, base+path).Run()
				var ee *exec.ExitError
				require.True(t, errors.As(err, &ee), "%s: curl must fail, got %v", path, err)
				assert.NotZero(t, ee.ExitCode(), path)
				resp, err := http.Get(base + path)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				assert.Error(t, err, "%s: the client sees a truncated response (or none)", path)
			}
			assert.NoError(t, exec.Command(curl, "--silent", "--fail", "--output", os.DevNull, base+"/hello").Run(),
				"a whole response is whole")
		})
	}
	b, err := os.ReadFile(filepath.Join(n.dir, "error.log"))
	require.NoError(t, err)
	assert.Contains(t, string(b), "wsgibridge: the response is cut short: app raised in GET /raise-after: RuntimeError: raised after headers on purpose")
	assert.True(t, strings.Contains(string(b), "app error in GET /short-length: app sent 10 bytes of its Content-Length of 100") ||
		strings.Contains(string(b), "app error in GET /stock/short-length"), "nginx logs why: %s", b)
}

package bridge

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fastPathObjectFile is where make builds the C fast path.
const fastPathObjectFile = "wsgibridge/fastcgi/_fastpath.so"

func TestMain(m *testing.M) {
	if err := loadFastPath(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// loadFastPath gives the tests' FastCGI workers the C fast path, as the
// shipped binary has it. Without the built object they read requests in
// Python; CI does not allow that, or the C would go untested.
func loadFastPath() error {
	data, err := os.ReadFile(fastPathObjectFile)
	switch {
	case err == nil:
		fastPath = data
	case os.Getenv("CI") == "true":
		return fmt.Errorf("bridge tests: %w (make test builds it)", err)
	default:
		fmt.Fprintf(os.Stderr, "bridge tests: %v: the FastCGI workers read requests in Python (make test builds it)\n", err)
	}
	return nil
}

func TestFastCGIWorkersLoadTheFastPath(t *testing.T) {
	if fastPath == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not built; make test builds it", fastPathObjectFile)
		}
		t.Skipf("%s is not built (in CI this fails; make test builds it)", fastPathObjectFile)
	}
	p := startFCGIPool(t, 2, "application")
	for id := uint16(1); id <= 4; id++ {
		r := reply(t, p.exchange(t, hello(id, false)))
		require.Equal(t, []end{{id, 0}}, r.ends)
		assert.Contains(t, r.stdout[id], "\r\n\r\nHello, world!")
	}
	for _, pid := range p.pool.Stats().Pids {
		proc := "/proc/" + strconv.Itoa(pid)
		// A worker loads it just after it reports ready, and the other may
		// have served all four requests by then.
		assert.Eventually(t, func() bool {
			maps, err := os.ReadFile(proc + "/maps")
			return err == nil && strings.Contains(string(maps), "memfd:wsgibridge-fastpath")
		}, 10*time.Second, 10*time.Millisecond, "worker %d mapped it", pid)
		closed := func() bool {
			entries, err := os.ReadDir(proc + "/fd")
			require.NoError(t, err)
			for _, fd := range entries {
				if target, _ := os.Readlink(proc + "/fd/" + fd.Name()); strings.HasPrefix(target, "/memfd:") {
					return false
				}
			}
			return true
		}
		assert.Eventually(t, closed, 10*time.Second, 10*time.Millisecond, "worker %d closed the fd it loaded it from", pid)
	}
	assert.NotContains(t, p.log.String(), "fast path did not load")
}

func TestFastPathFileIsSealed(t *testing.T) {
	f, err := memfd("test", []byte("data"))
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte("x"), 0)
	assert.Error(t, err, "a sealed file cannot be written")
	assert.Error(t, f.Truncate(1), "nor shrunk")
	got := make([]byte, 8)
	n, _ := f.ReadAt(got, 0)
	assert.Equal(t, "data", string(got[:n]))
}

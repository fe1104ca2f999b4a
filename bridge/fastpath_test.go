package bridge

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fastPathObjectFile is where make builds the C fast path.
const fastPathObjectFile = "fastpath/fastpath.so"

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
	assert.NotContains(t, p.log.String(), "fast path did not load")
	for _, pid := range p.pool.Stats().Pids {
		maps, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
		require.NoError(t, err)
		assert.Contains(t, string(maps), "memfd:wsgibridge-fastpath", "worker %d mapped it", pid)
		fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		require.NoError(t, err)
		for _, fd := range fds {
			target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name())
			assert.False(t, strings.HasPrefix(target, "/memfd:"), "worker %d closed the fd it loaded it from (fd %s)", pid, fd.Name())
		}
	}
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

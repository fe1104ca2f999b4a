package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSendBufferFlag: --send-buffer reaches every worker in bytes, and a
// size too small to be meant is refused.
func TestSendBufferFlag(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "probe.sock")
	d := startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--send-buffer", "256", "--chdir", appsDir(t), "probe")
	var pids []int
	require.Eventually(t, func() bool { pids = d.workerPids(t); return len(pids) == 2 }, 10*time.Second, 20*time.Millisecond)
	for _, pid := range pids {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		require.NoError(t, err)
		assert.Contains(t, strings.Split(string(cmdline), "\x00"), "send-buffer=262144")
	}

	cmd := exec.Command(binary, "fastcgi", "--bind", "unix:"+sock+"2", "--send-buffer", "8", "--chdir", appsDir(t), "probe")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "exits: %v", err)
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, stderr.String(), "--send-buffer must be 64 (KiB) or more")
}

package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// written is in the executable's data mapping, which is writable: the
// release must leave it alone, or the value set below reverts to 41.
var written = 41

// executableRSS returns the kB of our own executable resident in memory.
func executableRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	require.NoError(t, err)
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	total, ours := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if name, value, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, " ") {
			if ours && name == "Rss" {
				kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(value, "kB")))
				require.NoError(t, err)
				total += kb
			}
			continue
		}
		ours = strings.HasSuffix(line, " "+exe)
	}
	require.NoError(t, sc.Err())
	return total
}

func TestReleaseExecutable(t *testing.T) {
	written = 42
	before := executableRSS(t)
	require.NoError(t, releaseExecutable())
	after := executableRSS(t)
	t.Logf("executable resident: %d kB before, %d kB after", before, after)
	assert.Less(t, after, before/2, "the read-only pages of the executable should leave memory")
	assert.Equal(t, 42, written, "a written page of the executable must not revert")
	require.NoError(t, releaseExecutable(), "releasing twice is harmless")
}

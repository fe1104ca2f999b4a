package gateway

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCodeWatch(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	for _, f := range []string{"old.py", "ahead.py"} {
		require.NoError(t, os.WriteFile(path(f), []byte("v1"), 0o644))
	}
	hourAhead := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path("ahead.py"), hourAhead, hourAhead))
	// File times come from a clock that lags time.Now by a tick.
	time.Sleep(50 * time.Millisecond)
	since := time.Now()

	w := newCodeWatch([]string{path("old.py"), path("ahead.py"), path("missing.py")}, since)
	assert.Equal(t, "", w.changed(), "files last changed before the import, one of them dated ahead")

	require.NoError(t, os.WriteFile(path("old.py"), []byte("v2"), 0o644))
	assert.Equal(t, path("old.py"), w.changed(), "changed after the snapshot")

	for _, tc := range []struct {
		name  string
		ahead bool
	}{
		{"changed during the import", false},
		{"changed during the import and dated ahead", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := path("during.py")
			since := time.Now()
			require.NoError(t, os.WriteFile(f, []byte("v2"), 0o644))
			if tc.ahead {
				later := time.Now().Add(2 * time.Second)
				require.NoError(t, os.Chtimes(f, later, later))
			}
			w := newCodeWatch([]string{f}, since)
			assert.Equal(t, f, w.changed(), "its old code may be what the workers run")
			time.Sleep(50 * time.Millisecond)
			w.snapshot([]string{f}, time.Now())
			assert.Equal(t, "", w.changed(), "a snapshot after the reload sees it unchanged")
		})
	}
}

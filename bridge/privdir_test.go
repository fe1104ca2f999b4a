package bridge

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnsurePrivate(t *testing.T) {
	base := t.TempDir()
	ok := filepath.Join(base, "a", "ok")
	require.NoError(t, EnsurePrivate(ok), "created with its parents")
	fi, err := os.Stat(ok)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	open := filepath.Join(base, "open")
	require.NoError(t, os.Mkdir(open, 0o755))
	require.NoError(t, os.Chmod(open, 0o755))
	assert.ErrorContains(t, EnsurePrivate(open), "open to other users")

	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(ok, link))
	assert.ErrorContains(t, EnsurePrivate(link), "is not a folder")

	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	assert.Error(t, EnsurePrivate(file))
}

func TestPrivateDirFallsBack(t *testing.T) {
	runtime := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	dir, err := PrivateDir()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(runtime, "wsgibridge"), dir)

	// A folder others can open is passed over, not repaired.
	require.NoError(t, os.Chmod(dir, 0o777))
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	dir, err = PrivateDir()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(cache, "wsgibridge"), dir)
}

func TestWorkerCodeCache(t *testing.T) {
	cache := t.TempDir()
	serve := func() {
		w, err := Start(Config{App: probeApp(t, "application"), CacheDir: cache})
		require.NoError(t, err)
		defer w.Close(time.Second)
		rec := &recorder{}
		_, err = w.Serve(context.Background(), &Request{Env: env("/hello")}, rec)
		require.NoError(t, err)
		assert.Equal(t, "Hello, world!", rec.body.String())
	}
	serve()
	files, err := filepath.Glob(filepath.Join(cache, "worker-"+pipeBundle().hash+"-*.code"))
	require.NoError(t, err)
	require.Len(t, files, 1, "the compiled worker is cached")

	// A damaged cache is not trusted: the worker compiles again and
	// replaces it.
	require.NoError(t, os.WriteFile(files[0], []byte("garbage"), 0o600))
	serve()
	b, err := os.ReadFile(files[0])
	require.NoError(t, err)
	assert.Greater(t, len(b), 1000)
	left, err := filepath.Glob(filepath.Join(cache, "*.code.*"))
	require.NoError(t, err)
	assert.Empty(t, left, "no temporary files left behind")
}

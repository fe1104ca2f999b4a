package gateway

// This file holds the watch over the app's source files that reloads the
// pool when one changes (ReloadOnChange): under the http mode no worker
// watches them itself, as a FastCGI worker does.

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// codeWatch notices when the app's source files change.
type codeWatch struct {
	mu    sync.Mutex
	mtime map[string]time.Time
}

// newCodeWatch watches files as the workers imported them, the import
// having begun at since.
func newCodeWatch(files []string, since time.Time) *codeWatch {
	w := &codeWatch{}
	w.snapshot(files, since)
	return w
}

// snapshot records the files' mtimes. A file changed after since (or just
// before: file times are coarse) is recorded as changed already, as the
// workers may have imported its old code. Its change time says so, not
// its mtime: an mtime can be set ahead, and a file touched ahead while
// the workers imported would otherwise never count as changed.
func (w *codeWatch) snapshot(files []string, since time.Time) {
	w.mtime = map[string]time.Time{}
	now := time.Now()
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		w.mtime[f] = fi.ModTime()
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		// A change time ahead of the clock (the clock was set back) is no
		// sign of anything; counting it would reload on every request.
		if ctime := time.Unix(st.Ctim.Unix()); ctime.After(since.Add(-20*time.Millisecond)) && !ctime.After(now) {
			w.mtime[f] = time.Time{}
		}
	}
}

func (w *codeWatch) changed() string {
	for f, t := range w.mtime {
		if fi, err := os.Stat(f); err != nil || !fi.ModTime().Equal(t) {
			return f
		}
	}
	return ""
}

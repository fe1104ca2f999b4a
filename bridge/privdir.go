package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// PrivateDir returns a folder only the current user can open, creating it
// if needed: $XDG_RUNTIME_DIR/wsgibridge, else the user cache folder
// (~/.cache/wsgibridge), else /tmp/wsgibridge-UID (a web server's CGI
// environment often has neither variable). What is kept there (compiled
// worker code, sockets) is trusted, so a folder that is a symlink, is not
// ours, or is open to others is refused, never repaired.
func PrivateDir() (string, error) {
	var candidates []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		candidates = append(candidates, filepath.Join(d, "wsgibridge"))
	}
	if d, err := os.UserCacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(d, "wsgibridge"))
	}
	candidates = append(candidates, filepath.Join(os.TempDir(), "wsgibridge-"+strconv.Itoa(os.Geteuid())))
	var errs []error
	for _, dir := range candidates {
		err := EnsurePrivate(dir)
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("bridge: no private folder: %v", errs)
}

// EnsurePrivate creates dir (mode 0700) if it is missing, and returns an
// error unless it is a folder, not a symlink, owned by the current user and
// closed to everyone else.
func EnsurePrivate(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a folder", dir)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is not owned by uid %d", dir, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s is open to other users (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

package main

// This file reads the script form: a file Apache executes, whose first line
// is "#!/path/to/wsgibridge" and whose other lines are settings.

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wsgibridge/wsgibridge/bridge"
)

// settings is what a mode needs to start the app, from flags or a script.
type settings struct {
	app        string
	python     string
	chdir      string
	pythonpath []string
	env        []string
	script     string // the script file the settings came from, if any
	// CGI hand-off (package handoff): the pool's socket, whether to start
	// its daemon, and the daemon's idle timeout.
	pool        string
	spawn       bool
	idleTimeout time.Duration
	workers     int // the most of a spawned daemon; 0: its default
	// daemon holds the script's other settings, the daemons' flags by
	// name (mod_fcgid and systemd run a script with no flags).
	daemon []scriptSetting
}

// scriptSetting is one line of a script: key = value.
type scriptSetting struct {
	key, value string
	line       int
}

// scriptKeys lists the settings a script may hold, for error messages.
const scriptKeys = "app, python, chdir, pythonpath, env, pool, spawn, idle-timeout, workers, and any flag of " +
	"wsgibridge fastcgi without its dashes (mount, timeout, max-requests, access-log, ...)"

// isScript reports whether path names a script: a file whose first line is
// a "#!" line. Run by the kernel, wsgibridge gets the script's path as its
// first argument whatever name the #! line gives the binary.
func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 512).ReadSlice('\n')
	if err != nil && len(line) == 0 {
		return false
	}
	return bytes.HasPrefix(line, []byte("#!"))
}

// applyScript sets the flags of fs that the script s names and that the
// command line (explicit, which it updates) did not: the command line
// wins. A key that is no flag of fs is an error.
func applyScript(fs *flag.FlagSet, s settings, explicit map[string]bool) error {
	for _, kv := range s.daemon {
		f := fs.Lookup(kv.key)
		if f == nil {
			return fmt.Errorf("script %s: line %d: unknown setting %q (known: %s)", s.script, kv.line, kv.key, scriptKeys)
		}
		if explicit[kv.key] {
			continue
		}
		value := kv.value
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			on, err := yesNo(value)
			if err != nil {
				return fmt.Errorf("script %s: line %d: %s wants yes or no, got %q", s.script, kv.line, kv.key, value)
			}
			value = strconv.FormatBool(on)
		}
		if err := fs.Set(kv.key, value); err != nil {
			return fmt.Errorf("script %s: line %d: %s: %v", s.script, kv.line, kv.key, err)
		}
		explicit[kv.key] = true
	}
	return nil
}

// checkScriptKeys checks that the daemon settings of a script run as CGI
// (which uses none of them) are ones the daemons know.
func checkScriptKeys(s settings) error {
	var d daemonFlags
	var f fastcgiFlags
	return applyScript(newFastCGIFlagSet(&d, &f, io.Discard), s, map[string]bool{})
}

func yesNo(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true", "on":
		return true, nil
	case "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("want yes or no, got %q", v)
}

// readScript reads the script at path. Relative paths in it (chdir,
// pythonpath, a python with a slash) are relative to the script's folder.
func readScript(path string) (settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return settings{}, fmt.Errorf("script: %w", err)
	}
	defer f.Close()
	s, err := parseScript(f, path)
	if err != nil {
		return settings{}, err
	}
	s.script = path
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	s.chdir = rel(s.chdir)
	if s.chdir == "" {
		s.chdir = dir
	}
	for i, p := range s.pythonpath {
		s.pythonpath[i] = rel(p)
	}
	if strings.Contains(s.python, "/") {
		s.python = rel(s.python)
	}
	if p, ok := strings.CutPrefix(s.pool, "unix:"); ok {
		s.pool = "unix:" + rel(p)
	}
	return s, nil
}

// parseScript parses a script's text; name is used in error messages.
func parseScript(r io.Reader, name string) (settings, error) {
	var s settings
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			if !strings.HasPrefix(line, "#!") {
				return s, fmt.Errorf("script %s: line 1: want a #! line naming wsgibridge, got %q", name, line)
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" {
			return s, fmt.Errorf("script %s: line %d: want 'setting = value', got %q", name, n, line)
		}
		if value == "" {
			return s, fmt.Errorf("script %s: line %d: %s has no value", name, n, key)
		}
		if prev, dup := seen[key]; dup && key != "pythonpath" && key != "env" {
			return s, fmt.Errorf("script %s: line %d: %s is already set on line %d", name, n, key, prev)
		}
		seen[key] = n
		switch key {
		case "app":
			s.app = value
		case "python":
			s.python = value
		case "chdir":
			s.chdir = value
		case "pythonpath":
			s.pythonpath = append(s.pythonpath, value)
		case "env":
			if k, _, ok := strings.Cut(value, "="); !ok || k == "" {
				return s, fmt.Errorf("script %s: line %d: env wants NAME=value, got %q", name, n, value)
			}
			s.env = append(s.env, value)
		case "pool":
			if value != "auto" && !strings.HasPrefix(value, "unix:") {
				return s, fmt.Errorf("script %s: line %d: pool wants unix:PATH or auto, got %q", name, n, value)
			}
			s.pool = value
		case "spawn":
			on, err := yesNo(value)
			if err != nil {
				return s, fmt.Errorf("script %s: line %d: spawn wants yes or no, got %q", name, n, value)
			}
			s.spawn = on
		case "workers":
			size, err := bridge.ParseSize(value)
			if err != nil {
				return s, fmt.Errorf("script %s: line %d: workers: %v", name, n, err)
			}
			s.workers = size.Max
			s.daemon = append(s.daemon, scriptSetting{key, value, n})
		case "idle-timeout":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return s, fmt.Errorf("script %s: line %d: idle-timeout wants a duration like 10m, got %q", name, n, value)
			}
			s.idleTimeout = d
		default:
			s.daemon = append(s.daemon, scriptSetting{key, value, n})
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("script %s: %w", name, err)
	}
	if s.app == "" {
		return s, fmt.Errorf("script %s: no app setting (add a line like 'app = mysite.wsgi:application')", name)
	}
	if s.spawn && s.pool == "" {
		s.pool = "auto"
	}
	return s, nil
}

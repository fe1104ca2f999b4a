package main

// This file reads the script form: a file Apache executes, whose first line
// is "#!/path/to/wsgibridge" and whose other lines are settings.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// settings is what a mode needs to start the app, from flags or a script.
type settings struct {
	app        string
	python     string
	chdir      string
	pythonpath []string
	env        []string
	// CGI hand-off (package handoff): the pool's socket, whether to start
	// its daemon, and the daemon's idle timeout.
	pool        string
	spawn       bool
	idleTimeout time.Duration
	workers     int // of a spawned daemon; 0: its default
}

// scriptKeys lists the settings a script may hold, for error messages.
const scriptKeys = "app, python, chdir, pythonpath, env, pool, spawn, idle-timeout, workers"

// isScript reports whether path names a wsgibridge script: a file whose
// first line is a "#!" line naming wsgibridge.
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
	return bytes.HasPrefix(line, []byte("#!")) && bytes.Contains(line, []byte("wsgibridge"))
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
			switch strings.ToLower(value) {
			case "yes", "true", "on":
				s.spawn = true
			case "no", "false", "off":
				s.spawn = false
			default:
				return s, fmt.Errorf("script %s: line %d: spawn wants yes or no, got %q", name, n, value)
			}
		case "workers":
			w, err := strconv.Atoi(value)
			if err != nil || w < 1 {
				return s, fmt.Errorf("script %s: line %d: workers wants a number of 1 or more, got %q", name, n, value)
			}
			s.workers = w
		case "idle-timeout":
			d, err := time.ParseDuration(value)
			if err != nil || d <= 0 {
				return s, fmt.Errorf("script %s: line %d: idle-timeout wants a duration like 10m, got %q", name, n, value)
			}
			s.idleTimeout = d
		default:
			return s, fmt.Errorf("script %s: line %d: unknown setting %q (known: %s)", name, n, key, scriptKeys)
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

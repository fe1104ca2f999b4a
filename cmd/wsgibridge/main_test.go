package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// binary is the wsgibridge built for this test run, in a folder any user
// can read (Apache runs scripts as its own user).
var binary string

// fastPathBuilt says the binary has the FastCGI workers' C fast path.
var fastPathBuilt bool

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgibridge-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binary = filepath.Join(dir, "wsgibridge")
		// Built as make build builds it: static, so it starts as the
		// shipped binary does, and with the workers' C fast path when
		// make has built it (CI always has).
		args := []string{"build", "-o", binary}
		if _, err := os.Stat("../../bridge/wsgibridge/fastcgi/_fastpath.so"); err == nil {
			args = append(args, "-tags", "fastpath")
			fastPathBuilt = true
		} else if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "the C fast path is not built (make test builds it): %v\n", err)
			return 1
		}
		build := exec.Command("go", append(args, ".")...)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func TestParseScript(t *testing.T) {
	tests := []struct {
		name string
		text string
		want settings
		err  string
	}{
		{
			name: "all settings",
			text: "#!/usr/local/bin/wsgibridge\n# a comment\n\napp = mysite.wsgi:application\npython = /srv/venv/bin/python\n" +
				"chdir = /srv/mysite\npythonpath = /srv/lib\npythonpath=/srv/lib2\nenv = DJANGO_SETTINGS_MODULE=mysite.settings\n",
			want: settings{app: "mysite.wsgi:application", python: "/srv/venv/bin/python", chdir: "/srv/mysite",
				pythonpath: []string{"/srv/lib", "/srv/lib2"}, env: []string{"DJANGO_SETTINGS_MODULE=mysite.settings"}},
		},
		{name: "app only", text: "#!/usr/bin/wsgibridge\napp = hello\n", want: settings{app: "hello"}},
		{
			name: "hand-off",
			text: "#!/usr/bin/wsgibridge\napp = hello\npool = unix:/run/site/pool.sock\nspawn = yes\nidle-timeout = 90s\nworkers = 1\n",
			want: settings{app: "hello", pool: "unix:/run/site/pool.sock", spawn: true, idleTimeout: 90 * time.Second, workers: 1,
				daemon: []scriptSetting{{"workers", "1", 6}}},
		},
		{
			name: "daemon settings",
			text: "#!/usr/bin/wsgibridge\napp = hello\nmount = /app\ntimeout = 30s\naccess-log = yes\nworkers = 2:6\n",
			want: settings{app: "hello", workers: 6, daemon: []scriptSetting{
				{"mount", "/app", 3}, {"timeout", "30s", 4}, {"access-log", "yes", 5}, {"workers", "2:6", 6}}},
		},
		{name: "spawn picks a pool", text: "#!/usr/bin/wsgibridge\napp = hello\nspawn = on\n", want: settings{app: "hello", pool: "auto", spawn: true}},
		{name: "bad pool", text: "#!/usr/bin/wsgibridge\napp = a\npool = /run/x.sock\n", err: "line 3: pool wants unix:PATH or auto"},
		{name: "bad spawn", text: "#!/usr/bin/wsgibridge\napp = a\nspawn = maybe\n", err: "line 3: spawn wants yes or no"},
		{name: "bad idle timeout", text: "#!/usr/bin/wsgibridge\napp = a\nidle-timeout = soon\n", err: "line 3: idle-timeout wants a duration"},
		{name: "bad workers", text: "#!/usr/bin/wsgibridge\napp = a\nworkers = 0\n", err: `line 3: workers: "0": a fixed pool needs 1 worker or more`},
		{name: "no shebang", text: "app = x\n", err: "line 1: want a #! line"},
		{name: "no equals", text: "#!/usr/bin/wsgibridge\napp x\n", err: "line 2: want 'setting = value'"},
		{name: "empty value", text: "#!/usr/bin/wsgibridge\napp =\n", err: "line 2: app has no value"},
		{name: "twice", text: "#!/usr/bin/wsgibridge\napp = a\n\napp = b\n", err: "line 4: app is already set on line 2"},
		{name: "bad env", text: "#!/usr/bin/wsgibridge\napp = a\nenv = NOVALUE\n", err: "line 3: env wants NAME=value"},
		{name: "no app", text: "#!/usr/bin/wsgibridge\npython = python3\n", err: "no app setting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseScript(strings.NewReader(tt.text), "site.wsgi")
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "script site.wsgi: "+tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestScriptDaemonSettings: a script's other settings are the daemons'
// flags; the command line wins; a key that is no flag is an error,
// wherever the script runs.
func TestScriptDaemonSettings(t *testing.T) {
	s, err := parseScript(strings.NewReader("#!/opt/wsgibridge-1.4/bin/wsgi-bridge\napp = a\nmount = /app\n"+
		"timeout = 30s\naccess-log = yes\nmax-requests = 500\nworkers = 2:6\n"), "site.wsgi")
	require.NoError(t, err)
	var d daemonFlags
	var f fastcgiFlags
	fs := newFastCGIFlagSet(&d, &f, io.Discard)
	require.NoError(t, fs.Parse([]string{"--max-requests", "100", "x"}))
	explicit := map[string]bool{"max-requests": true}
	require.NoError(t, applyScript(fs, s, explicit))
	assert.Equal(t, "/app", d.mount)
	assert.Equal(t, 30*time.Second, d.timeout)
	assert.True(t, d.accessLog)
	assert.Equal(t, "2:6", d.workers)
	assert.Equal(t, 100, d.maxRequests, "the command line wins")
	assert.True(t, explicit["workers"])

	for text, want := range map[string]string{
		"pyhton = /usr/bin/python3": `line 3: unknown setting "pyhton" (known: app, python, chdir`,
		"access-log = maybe":        "line 3: access-log wants yes or no",
		"timeout = soon":            `line 3: timeout: parse error`,
	} {
		s, err := parseScript(strings.NewReader("#!/usr/bin/wsgibridge\napp = a\n"+text+"\n"), "site.wsgi")
		require.NoError(t, err)
		s.script = "site.wsgi"
		err = checkScriptKeys(s)
		require.Error(t, err, text)
		assert.Contains(t, err.Error(), "script site.wsgi: "+want)
	}
}

func TestReadScriptRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "site.wsgi")
	require.NoError(t, os.WriteFile(path, []byte("#!/usr/bin/wsgibridge\napp = x\npython = venv/bin/python\npythonpath = lib\n"), 0o755))
	s, err := readScript(path)
	require.NoError(t, err)
	assert.Equal(t, dir, s.chdir, "chdir defaults to the script's folder")
	assert.Equal(t, filepath.Join(dir, "venv/bin/python"), s.python)
	assert.Equal(t, []string{filepath.Join(dir, "lib")}, s.pythonpath)
	assert.True(t, isScript(path))
	assert.False(t, isScript(filepath.Join(dir, "missing")))
}

func appsDir(t *testing.T) string {
	p, err := filepath.Abs("../../testdata/apps")
	require.NoError(t, err)
	return p
}

// cgiEnv is the environment a web server gives a CGI program.
func cgiEnv(method, path string, extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"), "REQUEST_METHOD=" + method, "SERVER_PROTOCOL=HTTP/1.1",
		"SERVER_NAME=localhost", "SERVER_PORT=80", "SCRIPT_NAME=/app", "PATH_INFO=" + path,
		"QUERY_STRING=", "REQUEST_URI=/app" + path,
	}, extra...)
}

type cgiRun struct {
	code   int
	stdout string
	stderr string
}

func runCGI(t *testing.T, env []string, stdin string, args ...string) cgiRun {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return cgiRun{code, stdout.String(), stderr.String()}
}

func TestCGIExitCodes(t *testing.T) {
	apps := appsDir(t)
	tests := []struct {
		name   string
		env    []string
		app    string
		code   int
		stdout string
		stderr string
	}{
		{"hello", cgiEnv("GET", "/hello"), "probe", 0, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\r\nHello", ""},
		{"not run by a web server", []string{"PATH=" + os.Getenv("PATH")}, "probe", 2, "", "REQUEST_METHOD is not set"},
		{"import fails", cgiEnv("GET", "/"), "no_such_app", 3, "Status: 500 Internal Server Error\r\n",
			"app 'no_such_app' failed to import: ModuleNotFoundError: No module named 'no_such_app' (python "},
		{"raise before headers", cgiEnv("GET", "/raise-before"), "probe", 0, "Status: 500 Internal Server Error\r\n", "raised before start_response on purpose"},
		{"raise after headers", cgiEnv("GET", "/raise-after"), "probe", 1, "partial ", "raised after headers on purpose"},
		{"worker killed", cgiEnv("GET", "/kill"), "probe", 0, "Status: 502 Bad Gateway\r\n", "killed by signal 9"},
		{"bad content length", cgiEnv("POST", "/echo", "CONTENT_LENGTH=-5"), "probe", 0, "Status: 400 Bad Request\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runCGI(t, tt.env, "", "cgi", "--chdir", apps, tt.app)
			assert.Equal(t, tt.code, got.code, got.stderr)
			assert.Contains(t, got.stdout, tt.stdout)
			assert.Contains(t, got.stderr, tt.stderr)
		})
	}
}

func TestCGIImportErrorLog(t *testing.T) {
	got := runCGI(t, cgiEnv("GET", "/"), "", "cgi", "--chdir", t.TempDir(), "--python", "python3", "mysite.wsgi")
	assert.Equal(t, 3, got.code)
	assert.Contains(t, got.stderr, "Traceback (most recent call last)")
	assert.Contains(t, got.stderr, "app 'mysite.wsgi' failed to import: ModuleNotFoundError: No module named 'mysite'")
	assert.Contains(t, got.stdout, "\r\n\r\n500 Internal Server Error\n", "a short body, no traceback")
}

func TestCGIPost(t *testing.T) {
	body := strings.Repeat("0123456789", 10000)
	got := runCGI(t, cgiEnv("POST", "/echo", "CONTENT_LENGTH="+strconv.Itoa(len(body))), body, "cgi", "--chdir", appsDir(t), "probe:validated")
	require.Equal(t, 0, got.code, got.stderr)
	_, respBody, ok := strings.Cut(got.stdout, "\r\n\r\n")
	require.True(t, ok)
	assert.Equal(t, body, respBody)

	// The client went away: stdin ends before CONTENT_LENGTH, and the
	// app's read raises rather than give a cut body as a whole one.
	got = runCGI(t, cgiEnv("POST", "/read-all", "CONTENT_LENGTH=100"), "only 14 bytes.", "cgi", "--chdir", appsDir(t), "probe")
	assert.True(t, strings.HasPrefix(got.stdout, "Status: 400 Bad Request\r\n"), got.stdout)
	assert.Contains(t, got.stderr, `why="the body ended after 14 of its CONTENT_LENGTH 100 bytes"`)

	// Chunked request: no CONTENT_LENGTH, the body runs to the end of stdin.
	got = runCGI(t, cgiEnv("POST", "/read-all", "HTTP_TRANSFER_ENCODING=chunked"), "twelve bytes", "cgi", "--chdir", appsDir(t), "probe")
	assert.Contains(t, got.stdout, "\r\n\r\n12 0")
}

func TestCGIHttpoxy(t *testing.T) {
	env := cgiEnv("GET", "/os-environ", "HTTP_PROXY=http://evil.example:3128", "HTTP_X_TOKEN=secret", "LANG=C.UTF-8")
	got := runCGI(t, env, "", "cgi", "--chdir", appsDir(t), "--env", "APP_SETTING=yes", "probe")
	require.Equal(t, 0, got.code, got.stderr)
	assert.NotContains(t, got.stdout, "HTTP_PROXY")
	assert.NotContains(t, got.stdout, "secret")
	assert.NotContains(t, got.stdout, "REQUEST_METHOD")
	assert.Contains(t, got.stdout, "APP_SETTING=yes")
	assert.Contains(t, got.stdout, "LANG=C.UTF-8")

	got = runCGI(t, append(env[:len(env):len(env)], "PATH_INFO=/environ"), "", "cgi", "--chdir", appsDir(t), "probe")
	assert.NotContains(t, got.stdout, "HTTP_PROXY", "nor in the WSGI environ")
	assert.Contains(t, got.stdout, "HTTP_X_TOKEN=secret")
}

func TestScriptExecutedByKernel(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "probe.wsgi")
	text := fmt.Sprintf("#!%s\napp = probe:validated\nchdir = %s\nenv = FROM_SCRIPT=1\n", binary, appsDir(t))
	require.NoError(t, os.WriteFile(script, []byte(text), 0o755))
	cmd := exec.Command(script)
	cmd.Env = cgiEnv("GET", "/os-environ")
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(out), "Content-Type: "), "a 200, with no Status line: %s", out)
	assert.Contains(t, string(out), "FROM_SCRIPT=1")

	bad := filepath.Join(dir, "bad.wsgi")
	require.NoError(t, os.WriteFile(bad, []byte("#!"+binary+"\napp = probe\nwokers = 3\n"), 0o755))
	cmd = exec.Command(bad)
	cmd.Env = cgiEnv("GET", "/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.ExitCode())
	assert.Contains(t, string(out), "Status: 500 Internal Server Error\r\n")
	assert.Contains(t, stderr.String(), `bad.wsgi: line 3: unknown setting \"wokers\"`)
}

// children returns the pids of pid's child processes.
func children(t *testing.T, pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(field)
			require.NoError(t, err)
			out = append(out, n)
		}
	}
	return out
}

func TestCGISigtermKillsWorker(t *testing.T) {
	cmd := exec.Command(binary, "cgi", "--chdir", appsDir(t), "probe")
	cmd.Env = cgiEnv("GET", "/sleep")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var worker int
	require.Eventually(t, func() bool {
		if kids := children(t, cmd.Process.Pid); len(kids) == 1 {
			worker = kids[0]
			return true
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the worker did not start")
	time.Sleep(200 * time.Millisecond) // let the worker reach the app's sleep
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("wsgibridge cgi did not exit after SIGTERM")
	}
	assert.Contains(t, stderr.String(), "terminated")
	assert.Eventually(t, func() bool {
		return syscall.Kill(worker, 0) == syscall.ESRCH
	}, 5*time.Second, 10*time.Millisecond, "worker pid %d outlived wsgibridge", worker)
}

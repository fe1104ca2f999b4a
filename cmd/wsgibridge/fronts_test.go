package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
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

// front is a FastCGI web server a test started in front of wsgibridge.
type front struct {
	name string
	base string // http://127.0.0.1:PORT
	dir  string // its folder, for its logs
}

// fillTemplate writes testdata/NAME with its words in at-signs filled in
// to dir, and returns the path.
func fillTemplate(t *testing.T, name, dir string, vars map[string]string) string {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	require.NoError(t, err)
	pairs := []string{}
	for k, v := range vars {
		pairs = append(pairs, "@"+k+"@", v)
	}
	out := filepath.Join(dir, filepath.Base(name))
	require.NoError(t, os.WriteFile(out, []byte(strings.NewReplacer(pairs...).Replace(string(tmpl))), 0o644))
	return out
}

// needFile is need for a file a package installs (a module).
func needFile(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (package %s); make test installs it", path, pkg)
	}
	t.Skipf("%s is missing (package %s; in CI this fails)", path, pkg)
}

// startLighttpd starts lighttpd with testdata/lighttpd/fastcgi.conf: the
// daemon on the unix socket app at /app, root's at /.
func startLighttpd(t *testing.T, app, root string) front {
	t.Helper()
	bin := need(t, "lighttpd", "/usr/sbin/lighttpd")
	dir := t.TempDir()
	for _, sub := range []string{"htdocs", "tmp"} {
		require.NoError(t, os.Mkdir(filepath.Join(dir, sub), 0o755))
	}
	port := freePort(t)
	conf := fillTemplate(t, "lighttpd/fastcgi.conf", dir, map[string]string{
		"DIR": dir, "PORT": strconv.Itoa(port), "APP": app, "ROOT": root})
	return runFront(t, "lighttpd", exec.Command(bin, "-D", "-f", conf), port, dir)
}

// runFront starts a front's command, which logs to dir/error.log, and
// waits until it listens on port.
func runFront(t *testing.T, name string, cmd *exec.Cmd, port int, dir string) front {
	t.Helper()
	startServer(t, name, cmd, syscall.SIGTERM, port, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	})
	return front{name: name, base: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir}
}

// logToFile sends the output of a front that logs to it (Caddy, HAProxy)
// to dir/error.log, where runFront reads a front's log.
func logToFile(t *testing.T, cmd *exec.Cmd, dir string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, "error.log"))
	require.NoError(t, err)
	t.Cleanup(func() { log.Close() })
	cmd.Stdout, cmd.Stderr = log, log
}

// startCaddy starts Caddy with testdata/caddy/Caddyfile: the daemon on
// the unix socket app at /app (split) and /strip (prefix stripped).
func startCaddy(t *testing.T, app string) front {
	t.Helper()
	bin := need(t, "caddy", "/usr/bin/caddy")
	dir := t.TempDir()
	port := freePort(t)
	conf := fillTemplate(t, "caddy/Caddyfile", dir, map[string]string{"PORT": strconv.Itoa(port), "APP": app})
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	// Caddy keeps its state under HOME: the test's folder, not root's.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logToFile(t, cmd, dir)
	return runFront(t, "caddy", cmd, port, dir)
}

// startH2O starts H2O with testdata/h2o/h2o.conf: the daemon on the unix
// socket app at /app.
func startH2O(t *testing.T, app string) front {
	t.Helper()
	bin := need(t, "h2o", "/usr/bin/h2o")
	dir := t.TempDir()
	port := freePort(t)
	user := ""
	if os.Geteuid() == 0 {
		// Else H2O drops to nobody, who may not reach the test's folder.
		user = "user: root"
	}
	conf := fillTemplate(t, "h2o/h2o.conf", dir, map[string]string{
		"DIR": dir, "PORT": strconv.Itoa(port), "APP": app, "USER": user})
	return runFront(t, "h2o", exec.Command(bin, "-c", conf), port, dir)
}

// startHAProxy starts HAProxy with testdata/haproxy/haproxy.cfg: the
// daemon on the unix socket app at /app.
func startHAProxy(t *testing.T, app string) front {
	t.Helper()
	bin := need(t, "haproxy", "/usr/sbin/haproxy")
	dir := t.TempDir()
	port := freePort(t)
	conf := fillTemplate(t, "haproxy/haproxy.cfg", dir, map[string]string{
		"DIR": dir, "PORT": strconv.Itoa(port), "APP": app})
	cmd := exec.Command(bin, "-db", "-f", conf)
	logToFile(t, cmd, dir)
	return runFront(t, "haproxy", cmd, port, dir)
}

// startFcgid starts Apache with testdata/apache/fcgid.conf, running the
// script file whose settings (the lines after its #! line) are settings,
// Alias'ed to /app.
func startFcgid(t *testing.T, settings string) (front, *apache) {
	t.Helper()
	needFile(t, "/usr/lib/apache2/modules/mod_fcgid.so", "libapache2-mod-fcgid")
	a := startApacheConf(t, "fcgid.conf", nil, func(dir string) {
		for _, sub := range []string{"site", "fcgid", "apps"} {
			require.NoError(t, os.Mkdir(filepath.Join(dir, sub), 0o755))
		}
		require.NoError(t, os.Chmod(filepath.Join(dir, "fcgid"), 0o777))
		// Apache's user may not reach the checkout: the apps are copied.
		b, err := os.ReadFile(filepath.Join(appsDir(t), "probe.py"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "apps", "probe.py"), b, 0o644))
		script := "#!" + binary + "\n" + strings.ReplaceAll(settings, "@DIR@", dir)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "site", "app.wsgi"), []byte(script), 0o755))
	})
	return front{name: "mod_fcgid", base: a.base, dir: a.dir}, a
}

// environOf GETs url and returns the environ the probe app dumped.
func environOf(t *testing.T, url string, header ...string) map[string]string {
	t.Helper()
	resp, body, err := httpDo(t, "GET", url, nil, header...)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, "%s: %s", url, body)
	env := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// TestFrontsMountRule: what the app sees for GET /app/some/environ?x=1
// (and the like) behind each front configured as its guide shows, with
// no --mount: a split the front made is kept, a prefix it stripped comes
// back, a front that splits nothing leaves the whole path in PATH_INFO.
func TestFrontsMountRule(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--socket-mode", "0666", "--chdir", appsDir(t), "probe")
	lighttpd := startLighttpd(t, sock, sock)
	caddy := startCaddy(t, sock)
	h2o := startH2O(t, sock)
	haproxy := startHAProxy(t, sock)
	fcgid, _ := startFcgid(t, "app = probe:application\nchdir = @DIR@/apps\n")
	for _, tt := range []struct {
		front               front
		path                string
		scriptName, pathInf string
	}{
		{lighttpd, "/app/some/environ?x=1", "/app", "/some/environ"},
		{lighttpd, "/site/some/environ?x=1", "", "/site/some/environ"},
		{caddy, "/app/some/environ?x=1", "/app", "/some/environ"},
		{caddy, "/strip/some/environ?x=1", "/strip", "/some/environ"},
		{h2o, "/app/some/environ?x=1", "", "/app/some/environ"},
		{haproxy, "/app/some/environ?x=1", "/app", "/some/environ"},
		{fcgid, "/app/some/environ?x=1", "/app", "/some/environ"},
	} {
		t.Run(tt.front.name+tt.path, func(t *testing.T) {
			env := environOf(t, tt.front.base+tt.path)
			assert.Equal(t, tt.scriptName, env["SCRIPT_NAME"])
			assert.Equal(t, tt.pathInf, env["PATH_INFO"])
			assert.Equal(t, "x=1", env["QUERY_STRING"])
		})
	}
}

// TestFronts: behind every front, configured as the README shows, the
// app gets the same request and the client the same response: bodies up
// to 20 MiB with a length and chunked, a 50 MiB response, HEAD, 204 and
// 304, three Set-Cookie headers, a repeated header joined, Authorization
// passed on, no Status header for a 200, and a response cut short that
// reaches the client cut. HAProxy refuses a chunked body past its buffer
// itself; a small one reaches the app whole behind every front.
func TestFronts(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "probe.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+sock, "--socket-mode", "0666", "--chdir", appsDir(t), "probe")
	// H2O splits nothing: the daemon is told where the app is.
	mounted := filepath.Join(dir, "mounted.sock")
	startDaemon(t, "fastcgi", "--bind", "unix:"+mounted, "--socket-mode", "0666", "--mount", "/app", "--chdir", appsDir(t), "probe")
	fcgid, _ := startFcgid(t, "app = probe:application\nchdir = @DIR@/apps\n")
	body := bytes.Repeat([]byte("0123456789abcdef"), 20<<16) // 20 MiB
	sum := fmt.Sprintf("%x", sha256.Sum256(body))
	for _, f := range []front{startLighttpd(t, sock, sock), startCaddy(t, sock), startH2O(t, mounted), startHAProxy(t, sock), fcgid} {
		t.Run(f.name, func(t *testing.T) {
			resp, got, err := httpDo(t, "GET", f.base+"/app/hello", nil)
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "Hello, world!", got)
			assert.Empty(t, resp.Header.Values("Status"), "no Status header reaches the client")

			for _, chunked := range []bool{false, true} {
				if chunked && f.name == "haproxy" {
					// HAProxy gives a FastCGI app only bodies of a
					// known length: one past its buffer it refuses
					// itself, as the README says. (64 KiB, all sent
					// before it answers: with more, its early answer
					// can meet the client still writing.)
					resp, _, err = httpDo(t, "POST", f.base+"/app/digest?65536", io.MultiReader(bytes.NewReader(body[:64<<10])))
					require.NoError(t, err)
					assert.Equal(t, 400, resp.StatusCode)
					continue
				}
				var r io.Reader = bytes.NewReader(body)
				if chunked {
					r = io.MultiReader(r) // no length known: sent chunked
				}
				resp, got, err = httpDo(t, "POST", f.base+"/app/digest?65536", r)
				require.NoError(t, err)
				assert.Equal(t, 200, resp.StatusCode)
				assert.Equal(t, fmt.Sprintf("whole %d %s", len(body), sum), got, "chunked: %v", chunked)
			}
			small := body[:8<<10]
			resp, got, err = httpDo(t, "POST", f.base+"/app/digest?65536", io.MultiReader(bytes.NewReader(small)))
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, fmt.Sprintf("whole %d %x", len(small), sha256.Sum256(small)), got, "a small chunked body")

			resp, got, err = httpDo(t, "GET", f.base+"/app/big?50", nil)
			require.NoError(t, err)
			assert.Equal(t, 50<<20, len(got), "a 50 MiB response")

			resp, got, err = httpDo(t, "HEAD", f.base+"/app/hello", nil)
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Empty(t, got)
			for _, code := range []int{204, 304} {
				resp, got, err = httpDo(t, "GET", fmt.Sprintf("%s/app/respond?%d", f.base, code), nil)
				require.NoError(t, err)
				assert.Equal(t, code, resp.StatusCode)
				assert.Empty(t, got)
			}
			resp, _, err = httpDo(t, "GET", f.base+"/app/cookies", nil)
			require.NoError(t, err)
			assert.Equal(t, []string{"a=1; Path=/", "b=2; HttpOnly", "c=3"}, resp.Header.Values("Set-Cookie"))

			req, err := http.NewRequest("GET", f.base+"/app/environ", nil)
			require.NoError(t, err)
			req.Header["X-Dup"] = []string{"one", "two"}
			req.Header.Set("Authorization", "Bearer token-17")
			resp, got, err = doRequest(req)
			require.NoError(t, err)
			assert.Contains(t, got, "\nHTTP_X_DUP=one, two\n", "a repeated header is joined, not its last copy")
			assert.Contains(t, got, "\nHTTP_AUTHORIZATION=Bearer token-17\n", "the app sees Authorization (token logins)")

			// A failure once the headers are out: the worker ends the
			// response with a STDERR record and bytes that are no record.
			_, got, err = httpDo(t, "GET", f.base+"/app/raise-after", nil)
			switch f.name {
			case "lighttpd", "haproxy":
				assert.Error(t, err, "the client sees the response cut short")
				if f.name == "haproxy" {
					assert.Eventually(t, func() bool {
						b, _ := os.ReadFile(filepath.Join(f.dir, "error.log"))
						return strings.Contains(string(b), "the response is cut short")
					}, 5*time.Second, 20*time.Millisecond, "log-stderr puts the worker's reason in HAProxy's log")
				}
			case "mod_fcgid":
				// Apache appends its own error page to what was streamed.
				require.NoError(t, err)
				assert.NotEqual(t, "partial ", got, "the response does not look complete")
			default:
				// Caddy 2.6 and H2O 2.2 end it as a complete one (their
				// doing, as the README says); they log why.
				require.NoError(t, err)
				assert.Equal(t, "partial ", got)
				want := map[string]string{"caddy": "aborting with incomplete response", "h2o": "received unexpected record"}[f.name]
				assert.Eventually(t, func() bool {
					b, _ := os.ReadFile(filepath.Join(f.dir, "error.log"))
					return strings.Contains(string(b), want)
				}, 5*time.Second, 20*time.Millisecond, "%s logs the failure", f.name)
			}
		})
	}
}

// doRequest runs req and reads its body.
func doRequest(req *http.Request) (*http.Response, string, error) {
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// fcgidProcesses finds the daemons mod_fcgid started for the script at
// path, and returns their pids and their workers' (their children).
func fcgidProcesses(t *testing.T, path string) (daemons, workers []int) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(path)) || !bytes.HasPrefix(cmdline, []byte(binary)) {
			continue
		}
		daemons = append(daemons, pid)
		workers = append(workers, children(t, pid)...)
	}
	return daemons, workers
}

// pss returns the proportional set size of the processes, in bytes.
func pss(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// TestFcgidOneWorkerPerProcess: mod_fcgid sends each process it starts one
// request at a time, so a script it runs holds one worker unless its
// workers setting says otherwise: six clients at once make six daemons
// and six workers, not twelve. The memory each takes is logged, beside
// the old default's.
func TestFcgidOneWorkerPerProcess(t *testing.T) {
	for _, tt := range []struct {
		settings string
		workers  int
	}{
		{"", 1},
		{"workers = 2\n", 2},
	} {
		f, a := startFcgid(t, "app = probe:application\nchdir = @DIR@/apps\n"+tt.settings)
		script := filepath.Join(a.dir, "site", "app.wsgi")
		done := make(chan []fetch, 1)
		go func() { done <- fetchAll(f.base+"/app/sleep?2", 6) }()
		require.Eventually(t, func() bool {
			daemons, _ := fcgidProcesses(t, script)
			return len(daemons) >= 6
		}, 15*time.Second, 50*time.Millisecond, "mod_fcgid starts a process per client")
		for _, got := range <-done {
			require.NoError(t, got.err)
			assert.Equal(t, 200, got.status)
		}
		// Counted once every request is answered: a daemon that has just
		// started may not have started all its workers yet, and by the
		// end of its 2 s request it has.
		daemons, workers := fcgidProcesses(t, script)
		memory := pss(append(append([]int{}, daemons...), workers...))
		assert.Len(t, workers, tt.workers*len(daemons), "%q: workers per daemon", tt.settings)
		t.Logf("mod_fcgid, 6 clients at once, %q: %d daemons, %d Python workers, PSS %.1f MiB in all (%.1f MiB per client)",
			tt.settings, len(daemons), len(workers), float64(memory)/(1<<20), float64(memory)/(1<<20)/float64(len(daemons)))
	}
}

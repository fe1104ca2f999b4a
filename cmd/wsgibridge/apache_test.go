package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// need returns the path of a program an end-to-end test needs. A missing
// program fails the test in CI (CI=true) and skips it elsewhere.
func need(t *testing.T, name string, alternatives ...string) string {
	t.Helper()
	for _, n := range append([]string{name}, alternatives...) {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; make test installs it", name)
	}
	t.Skipf("%s is not installed (in CI this fails; make test installs it)", name)
	return ""
}

// needPythonModules checks that /usr/bin/python3 imports the modules, as
// needed for the Flask and Django apps (Debian's packages).
func needPythonModules(t *testing.T, modules ...string) string {
	t.Helper()
	python := need(t, "/usr/bin/python3")
	out, err := exec.Command(python, "-c", "import "+strings.Join(modules, ", ")).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s cannot import %v: %s", python, modules, out)
		}
		t.Skipf("%s cannot import %v (in CI this fails; make test installs them): %s", python, modules, out)
	}
	return python
}

// apache is an Apache httpd started by a test with testdata/apache/cgi.conf.
type apache struct {
	dir  string
	base string
	cmd  *exec.Cmd
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// worldReadableDir makes a temp folder Apache's user can enter.
func worldReadableDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	return dir
}

// startApache starts Apache with testdata/apache/cgi.conf, serving the
// scripts (name -> script body after the #! line) from its cgi-bin.
func startApache(t *testing.T, scripts map[string]string) *apache {
	t.Helper()
	return startApacheConf(t, "cgi.conf", nil, func(dir string) {
		for _, sub := range []string{"cgi-bin", "apps", "gates"} {
			require.NoError(t, os.Mkdir(filepath.Join(dir, sub), 0o755))
		}
		// Apache's user may not reach the checkout: the apps are copied.
		srcApps := appsDir(t)
		entries, err := os.ReadDir(srcApps)
		require.NoError(t, err)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".py") {
				b, err := os.ReadFile(filepath.Join(srcApps, e.Name()))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, "apps", e.Name()), b, 0o644))
			}
		}
		for name, body := range scripts {
			text := "#!" + binary + "\n" + strings.ReplaceAll(body, "@DIR@", dir)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "cgi-bin", name+".wsgi"), []byte(text), 0o755))
		}
	})
}

// startApacheConf starts Apache with the template testdata/apache/NAME,
// its words in at-signs filled from vars and the usual DIR, PORT, MODULES
// and USER; prepare fills the folder first. Apache is stopped by PID when
// the test ends.
func startApacheConf(t *testing.T, name string, vars map[string]string, prepare func(dir string)) *apache {
	t.Helper()
	httpd := need(t, "apache2", "/usr/sbin/apache2")
	dir := worldReadableDir(t)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "htdocs"), 0o755))
	if prepare != nil {
		prepare(dir)
	}
	tmpl, err := os.ReadFile("../../testdata/apache/" + name)
	require.NoError(t, err)
	user := ""
	if os.Geteuid() == 0 {
		user = "User www-data\nGroup www-data"
	}
	port := freePort(t)
	pairs := []string{"@DIR@", dir, "@PORT@", fmt.Sprint(port), "@MODULES@", "/usr/lib/apache2/modules", "@USER@", user}
	for k, v := range vars {
		pairs = append(pairs, "@"+k+"@", v)
	}
	conf := strings.NewReplacer(pairs...).Replace(string(tmpl))
	confPath := filepath.Join(dir, "httpd.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))

	a := &apache{dir: dir, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	a.cmd = exec.Command(httpd, "-f", confPath, "-DFOREGROUND")
	startServer(t, "apache", a.cmd, syscall.SIGTERM, port, func() string { return a.errorLog(t) })
	return a
}

// startServer starts a web server, waits until it listens on port, and
// stops it by PID with sig (then SIGKILL) when the test ends; its log is
// shown when the test fails.
func startServer(t *testing.T, name string, cmd *exec.Cmd, sig syscall.Signal, port int, log func() string) {
	t.Helper()
	if cmd.Stdout == nil && cmd.Stderr == nil {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited at start (%v):\n%s", name, waitErr, log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %d:\n%s", name, port, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertStreamed checks that the /stream route's first chunk reaches the
// client while the app's generator waits for the gate file.
func assertStreamed(t *testing.T, url, gate string) {
	t.Helper()
	resp, err := http.Get(url + "?" + gate)
	require.NoError(t, err)
	defer resp.Body.Close()
	first := make(chan string, 1)
	br := bufio.NewReader(resp.Body)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		assert.Equal(t, "first chunk\n", line, "the first chunk arrives while the generator waits")
	case <-time.After(15 * time.Second):
		t.Fatal("the first chunk did not arrive before the generator finished")
	}
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "second chunk\n", string(rest))
}

func (a *apache) errorLog(t *testing.T) string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "error.log"))
	return string(b)
}

// waitLog waits until Apache's error log holds want.
func (a *apache) waitLog(t *testing.T, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(a.errorLog(t), want) },
		10*time.Second, 20*time.Millisecond, "error.log lacks %q:\n%s", want, a.errorLog(t))
}

func (a *apache) do(t *testing.T, method, path string, body io.Reader, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, body)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func script(app string, python string) string {
	return fmt.Sprintf("app = %s\npython = %s\nchdir = @DIR@/apps\n", app, python)
}

func TestApacheCGI(t *testing.T) {
	python := needPythonModules(t, "flask", "django")
	a := startApache(t, map[string]string{
		"probe":            script("probe:application", python),
		"probe-validated":  script("probe:validated", python),
		"flask":            script("flaskapp:application", python),
		"flask-validated":  script("flaskapp:validated", python),
		"django":           script("djangoapp:application", python),
		"django-validated": script("djangoapp:validated", python),
		"broken":           script("no_such_module", python),
		"badkey":           "app = probe\npyhton = " + python + "\n",
	})

	for _, app := range []string{"probe", "probe-validated"} {
		t.Run("hello/"+app, func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/hello", nil)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "Hello, world!", body)
			assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
		})
	}

	for _, app := range []string{"flask", "flask-validated"} {
		t.Run(app, func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/", nil)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "Hello from Flask", body)
			_, body = a.do(t, "GET", "/"+app+"/user/ana", nil)
			assert.Equal(t, "user ana, script /"+app, body, "SCRIPT_NAME and PATH_INFO reach the router")
			resp, body = a.do(t, "POST", "/"+app+"/echo", strings.NewReader("flask body"))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "flask body", body)
			resp, _ = a.do(t, "GET", "/"+app+"/missing", nil)
			assert.Equal(t, 404, resp.StatusCode)
		})
	}

	for _, app := range []string{"django", "django-validated"} {
		t.Run(app, func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/", nil)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "Hello from Django at /"+app+"/", body)
			_, body = a.do(t, "GET", "/"+app+"/page/3", nil)
			assert.Equal(t, "Page 3 at /"+app+"/page/3", body)
			resp, body = a.do(t, "POST", "/"+app+"/echo", strings.NewReader("django body"), "Content-Type", "application/octet-stream")
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "django body", body)
		})
	}

	for _, app := range []string{"probe", "probe-validated"} {
		app := app
		t.Run(app+"/10 MiB POST echoed", func(t *testing.T) {
			payload := make([]byte, 10<<20)
			_, err := rand.Read(payload)
			require.NoError(t, err)
			resp, body := a.do(t, "POST", "/"+app+"/echo", bytes.NewReader(payload))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, len(payload), len(body))
			assert.Equal(t, sha256.Sum256(payload), sha256.Sum256([]byte(body)))
		})

		t.Run(app+"/streamed response", func(t *testing.T) {
			assertStreamed(t, a.base+"/"+app+"/stream", filepath.Join(a.dir, "gates", app))
		})

		t.Run(app+"/PATH_INFO is latin-1 decoded bytes", func(t *testing.T) {
			_, body := a.do(t, "GET", "/"+app+"/echo-path/caf%C3%A9", nil)
			assert.Equal(t, `'/echo-path/caf\xc3\xa9'`, body)
		})

		t.Run(app+"/app that prints", func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/print", nil)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "printed", body)
			a.waitLog(t, "probe: printed to stdout by /"+app)
		})

		t.Run(app+"/raise before start_response", func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/raise-before", nil)
			assert.Equal(t, 500, resp.StatusCode)
			assert.Equal(t, "Internal Server Error\n", body)
			a.waitLog(t, "Traceback (most recent call last)")
			a.waitLog(t, "app raised in GET /"+app+"/raise-before: RuntimeError: raised before start_response on purpose")
		})

		t.Run(app+"/raise after headers", func(t *testing.T) {
			resp, body := a.do(t, "GET", "/"+app+"/raise-after", nil)
			// CGI cannot tell the client: Apache ends the chunked body as if
			// complete. The response is cut where the app failed and logged.
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "partial ", body)
			a.waitLog(t, "GET /"+app+"/raise-after: RuntimeError: raised after headers on purpose")
		})
	}

	t.Run("worker dies", func(t *testing.T) {
		resp, _ := a.do(t, "GET", "/probe/kill", nil)
		assert.Equal(t, 502, resp.StatusCode)
		a.waitLog(t, "was killed by signal 9")
	})

	t.Run("httpoxy", func(t *testing.T) {
		_, body := a.do(t, "GET", "/probe/os-environ", nil, "Proxy", "http://evil.example:3128")
		assert.NotContains(t, body, "HTTP_PROXY")
		assert.NotContains(t, body, "REQUEST_METHOD", "request data never reaches os.environ")
		_, body = a.do(t, "GET", "/probe/environ", nil, "Proxy", "http://evil.example:3128", "X-Other", "kept")
		assert.NotContains(t, body, "HTTP_PROXY")
		assert.Contains(t, body, "HTTP_X_OTHER=kept")
	})

	t.Run("import failure", func(t *testing.T) {
		resp, body := a.do(t, "GET", "/broken/", nil)
		assert.Equal(t, 500, resp.StatusCode)
		assert.Equal(t, "500 Internal Server Error\n", body)
		a.waitLog(t, "app 'no_such_module' failed to import: ModuleNotFoundError: No module named 'no_such_module' (python "+python+", cwd "+a.dir+"/apps)")
	})

	t.Run("script with an unknown setting", func(t *testing.T) {
		resp, _ := a.do(t, "GET", "/badkey/", nil)
		assert.Equal(t, 500, resp.StatusCode)
		a.waitLog(t, `badkey.wsgi: line 3: unknown setting \"pyhton\"`)
	})
}

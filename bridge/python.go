package bridge

// This file holds the embedded Python worker (the package in wsgibridge/,
// stdlib only) and how it reaches Python. The modules a mode needs go to
// the worker's fd 3 as one bundle, so no file of ours needs to be on the
// machine and ps shows a short command; a bootstrap given with -c
// compiles them (or takes their compiled code from the cache), makes them
// the package wsgibridge, and runs wsgibridge.main. Each module's code
// is compiled under its path in the repository, so a traceback names the
// file and line a maintainer can open.

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
)

//go:embed wsgibridge/*.py wsgibridge/fastcgi/*.py
var pythonFiles embed.FS

// pipeModules are the modules of a worker that serves requests sent over
// the frames (the cgi and http modes), in the order they run: each after
// those it imports at its top.
var pipeModules = []string{
	"wsgibridge", "wsgibridge.frames", "wsgibridge.wsgi", "wsgibridge.pipe",
	"wsgibridge.app", "wsgibridge.spool", "wsgibridge.stacks", "wsgibridge.forker", "wsgibridge.main",
}

// fastCGIModules are the further modules of a FastCGI worker; main
// imports the server only once it knows the mode.
var fastCGIModules = []string{
	"wsgibridge.fastcgi", "wsgibridge.fastcgi.records", "wsgibridge.fastcgi.connection",
	"wsgibridge.fastcgi.board", "wsgibridge.fastcgi.environ", "wsgibridge.fastcgi.response",
	"wsgibridge.fastcgi.watch", "wsgibridge.fastcgi.fastpath", "wsgibridge.fastcgi.statuspath", "wsgibridge.fastcgi.keep",
	"wsgibridge.fastcgi.request",
	"wsgibridge.fastcgi.server",
}

// bundle is what a worker reads on fd 3: for each module a line
// "NAME PATH SIZE" and SIZE bytes of its source.
type bundle struct {
	data []byte
	hash string // names the bundle's compiled code in the cache
}

var (
	pipeBundle    = sync.OnceValue(func() bundle { return makeBundle(pipeModules) })
	fastCGIBundle = sync.OnceValue(func() bundle {
		return makeBundle(append(append([]string{}, pipeModules...), fastCGIModules...))
	})
)

// modulePath is where a module's source is, in the embedded files and
// (under bridge/) in the repository.
func modulePath(name string) string {
	path := strings.ReplaceAll(name, ".", "/")
	if name == "wsgibridge" || name == "wsgibridge.fastcgi" {
		return path + "/__init__.py"
	}
	return path + ".py"
}

func makeBundle(modules []string) bundle {
	var b []byte
	for _, name := range modules {
		src, err := pythonFiles.ReadFile(modulePath(name))
		if err != nil {
			panic(fmt.Sprintf("bridge: the embedded worker lacks %s: %v", name, err))
		}
		b = fmt.Appendf(b, "%s bridge/%s %d\n", name, modulePath(name), len(src))
		b = append(b, src...)
	}
	sum := sha256.Sum256(b)
	return bundle{data: b, hash: hex.EncodeToString(sum[:8])}
}

// bootstrap is what python runs with -c: it reads the bundle (n bytes)
// from fd 3 and runs it. Compiling the modules costs about 3 ms, a fifth
// of a cold CGI request; so with a cache folder (one only this user can
// write: see PrivateDir) the compiled code of the whole bundle is kept
// there in one file, named by the bundle's hash and the interpreter's
// bytecode magic number, and reused by later starts. The modules get no
// __file__: they are no files of the app's (see app_files).
func bootstrap(n int, cacheDir, hash string) string {
	return fmt.Sprintf(`import os, sys
n = %d
b = bytearray()
while len(b) < n:
    c = os.read(3, n - len(b))
    if not c:
        raise SystemExit("wsgibridge worker: fd 3 closed before the worker source arrived")
    b += c
d = %q
code = None
if d:
    import marshal, _frozen_importlib_external as fie
    p = "%%s/worker-%s-%%s.code" %% (d, fie.MAGIC_NUMBER.hex())
    try:
        with open(p, "rb") as f:
            code = marshal.load(f)
    except (OSError, ValueError, EOFError, TypeError):
        pass
if code is None:
    code, i = [], 0
    while i < n:
        j = b.index(10, i)
        name, path, size = bytes(b[i:j]).decode().split()
        i = j + 1 + int(size)
        code.append((name, compile(bytes(b[j + 1:i]), path, "exec")))
    if d:
        try:
            t = "%%s.%%d" %% (p, os.getpid())
            with open(t, "wb") as f:
                marshal.dump(code, f)
            os.replace(t, p)
        except OSError:
            pass
for name, c in code:
    m = sys.modules[name] = type(sys)(name)
    if c.co_filename.endswith("/__init__.py"):
        m.__path__ = []
    p, _, a = name.rpartition(".")
    if p:
        setattr(sys.modules[p], a, m)
    exec(c, m.__dict__)
del n, b, d, code
sys.exit(sys.modules["wsgibridge.main"].main(sys.argv[1:]))
`, n, cacheDir, hash)
}

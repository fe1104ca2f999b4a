// Command wsgibridge runs a Python WSGI application (PEP 3333) for a web
// server that speaks CGI or FastCGI, or for a browser.
//
//	wsgibridge cgi [flags] APP      one request, as a CGI program
//	wsgibridge SCRIPT               the same, with settings read from SCRIPT
//	wsgibridge fastcgi [flags] APP  a FastCGI daemon with a pool of workers
//	wsgibridge http [flags] APP     plain HTTP with a pool of workers
//
// Exit codes: 0 a response was served (whatever its HTTP status), 1 the
// response was cut short or could not be written, 2 usage error, 3 the app
// could not be started (import failed, python missing).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/wsgibridge/wsgibridge/fastcgi"
)

const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitAppError = 3
)

const usage = `usage:
  wsgibridge cgi [flags] APP      serve one CGI request (run by the web server)
  wsgibridge SCRIPT               the same, with settings from a script file
                                  whose first line is #!/path/to/wsgibridge
  wsgibridge fastcgi [flags] APP  serve FastCGI (nginx, Apache mod_proxy_fcgi)
  wsgibridge http [flags] APP     serve plain HTTP (development)

APP is MODULE[:CALLABLE] or path/to/file.py[:CALLABLE]; CALLABLE defaults
to "application"; fastcgi and http also take a script file. Run
"wsgibridge MODE -h" for the flags of a mode.
`

func main() {
	closeInheritedOnExec()
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
}

// closeInheritedOnExec marks the fds this process inherited beyond stdio
// close-on-exec. Go's exec passes on any fd without the flag, so a web
// server or shell that leaked one to us would leak it on to the workers
// and to the app's subprocesses. What a worker needs it gets explicitly
// (ExtraFiles), and a listener handed to us stays usable here.
func closeInheritedOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return // no /proc (a chroot): nothing to sweep with
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// run is main without the process: the tests call it.
func run(args, environ []string, stdin io.Reader, stdout io.Writer, stderr *os.File) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "cgi":
		return runCGIFlags(args[1:], environ, stdin, stdout, stderr)
	case "fastcgi":
		return runFastCGI(args[1:], stderr)
	case "http":
		return runHTTP(args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if isScript(args[0]) {
		// mod_fcgid and cgi-fcgi -start run a FastCGI program with its
		// listening socket on fd 0; a CGI server gives a pipe or nothing.
		if fastcgi.ListeningOnStdin() {
			return runFastCGI(args, stderr)
		}
		return runScript(args[0], environ, stdin, stdout, stderr)
	}
	if _, err := os.Stat(args[0]); err == nil {
		fmt.Fprintf(stderr, "wsgibridge: %s is not a script: its first line must be a #! line naming wsgibridge\n\n%s", args[0], usage)
		return exitUsage
	}
	fmt.Fprintf(stderr, "wsgibridge: unknown mode %q\n\n%s", args[0], usage)
	return exitUsage
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// appFlags registers the flags that say how to start the app.
func appFlags(fs *flag.FlagSet, s *settings) {
	fs.StringVar(&s.python, "python", "python3", "Python interpreter (path, or a name looked up in PATH)")
	fs.StringVar(&s.chdir, "chdir", "", "working directory of the app; it also goes first in sys.path")
	fs.Var((*stringList)(&s.pythonpath), "pythonpath", "directory to put first in sys.path (repeatable)")
	fs.Var((*stringList)(&s.env), "env", "NAME=value to set in the app's os.environ (repeatable)")
}

// newLogger returns the slog logger for a mode. Under CGI the web server
// stamps each line of our stderr itself, so lines carry no time.
func newLogger(w io.Writer, level slog.Level, withTime bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if !withTime {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// checkEnv validates NAME=value settings.
func checkEnv(env []string) error {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return errors.New("--env wants NAME=value, got " + fmt.Sprintf("%q", kv))
		}
	}
	return nil
}

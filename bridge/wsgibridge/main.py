"""The worker's entry point: it takes its fds from the Go side (they are
not for the app's subprocesses), installs the stop signal, imports the
app, says ready (or why the import failed), then serves: requests over the
frames (pipe), or FastCGI connections (fastcgi.server) under
"wsgibridge fastcgi". The Go side starts it as
``python -c BOOTSTRAP [--fastcgi OPTION=VALUE... --] APP [PYTHONPATH...]``
(bridge/python.go).
"""

import os
import sys

# _signal, not signal: the signal module imports enum, 4 ms of a cold start.
import _signal

from wsgibridge.app import app_files, load_app, watch_list
from wsgibridge.spool import keep_freed_blocks
from wsgibridge.frames import IMPORT_FAILED, READY, send
from wsgibridge.pipe import serve
from wsgibridge.wsgi import on_stop


def main(argv):
    """Runs the worker: argv is [--MODE OPTION=VALUE... --] APP
    [PYTHONPATH...], MODE fastcgi or pipe (the default; bridge/worker.go
    and bridge/fastcgiworker.go make it); returns the exit status."""
    fastcgi, opts = False, {}
    if argv and argv[0] in ("--fastcgi", "--pipe"):
        fastcgi = argv[0] == "--fastcgi"
        end = argv.index("--")
        opts = dict(a.split("=", 1) for a in argv[1:end])
        argv = argv[end + 1:]
    spec, pythonpath = argv[0], argv[1:]
    sys.argv = ["wsgibridge"]
    for d in reversed(pythonpath):
        sys.path.insert(0, d)
    # The bridge's fds are not for the app's own subprocesses: one holding
    # the listener or the lobby would keep them open after this worker.
    fds = [3, 4]
    if fastcgi:
        fds.append(5)
        if "slot" in opts:
            fds += [6, 7, 8]  # the lobby's two ends and the board
    for name in ("fastpath", "stacks", "status", "keep"):
        if name in opts:
            fds.append(int(opts[name]))
    for fd in fds:
        os.set_inheritable(fd, False)
    _signal.signal(_signal.SIGUSR1, on_stop)
    if "stacks" in opts:
        from wsgibridge.stacks import install
        install(int(opts["stacks"]))
    rin = open(3, "rb", buffering=256 * 1024)
    out = open(4, "wb", buffering=256 * 1024)
    sys.stdout.reconfigure(line_buffering=True)
    keep_freed_blocks()
    import time
    imported_at = time.time_ns()
    try:
        app = load_app(spec)
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        summary = "app %r failed to import: %s (python %s, cwd %s)" % (
            spec, "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            sys.executable, os.getcwd())
        send(out, IMPORT_FAILED, summary.encode("utf-8", "replace"))
        return 3
    files = app_files(spec, pythonpath)
    if "reload-on-change" in opts:
        opts["files"] = watch_list(files, imported_at)
    send(out, READY, "\n".join(files).encode("utf-8", "surrogateescape"))
    if not fastcgi:
        return serve(app, rin, out)
    # _socket, not socket: socket imports enum, selectors and collections,
    # a MiB in every worker of an app that needs none of them.
    import _socket
    from wsgibridge.fastcgi.server import FastCGIServer
    listener = _socket.socket(fileno=5)
    listener.setblocking(False)
    server = FastCGIServer(app, listener, out, opts)
    _signal.signal(_signal.SIGALRM, server.on_alarm)
    _signal.signal(_signal.SIGIO, server.on_io)
    return server.serve()

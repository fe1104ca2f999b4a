"""The worker's entry point: it takes its fds from the Go side (they are
not for the app's subprocesses), installs the stop signal, imports the
app, says ready (or why the import failed), then serves: requests over the
frames (pipe), or FastCGI connections (fastcgi.server) under
"wsgibridge fastcgi". The Go side starts it as
``python -c BOOTSTRAP [--fastcgi OPTION=VALUE... --] APP [PYTHONPATH...]``
(bridge/python.go). Under --preload the process it starts imports the
app and then forks the workers, each of which goes on here with its own
command line (forker.py).
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


def parse(argv):
    """Splits the command line [--MODE OPTION=VALUE... --] APP
    [PYTHONPATH...], MODE fastcgi or pipe (the default; bridge/worker.go
    and bridge/fastcgiworker.go make it), into whether it is fastcgi, the
    options, the app and its python path."""
    fastcgi, opts = False, {}
    if argv and argv[0] in ("--fastcgi", "--pipe"):
        fastcgi = argv[0] == "--fastcgi"
        end = argv.index("--")
        opts = dict(a.split("=", 1) for a in argv[1:end])
        argv = argv[end + 1:]
    return fastcgi, opts, argv[0], argv[1:]


def install_stacks(opts):
    """Gives the stacks on SIGUSR2 (stacks.py) when the supervisor asks
    for them: before the app imports, since SIGUSR2 would kill the worker
    otherwise."""
    if "stacks" in opts:
        from wsgibridge.stacks import install
        install(int(opts["stacks"]))


def main(argv):
    """Runs the worker, or with the option forks the fork server of
    --preload (forker.py) and then each worker it forks; returns the exit
    status."""
    fastcgi, opts, spec, pythonpath = parse(argv)
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
    for name in ("fastpath", "stacks", "status", "keep", "forks"):
        if name in opts:
            fds.append(int(opts[name]))
    for fd in fds:
        os.set_inheritable(fd, False)
    _signal.signal(_signal.SIGUSR1, on_stop)
    install_stacks(opts)
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
    ready = "\n".join(files).encode("utf-8", "surrogateescape")
    if "forks" in opts:
        from wsgibridge.forker import serve_forks
        send(out, READY, ready)
        argv = serve_forks(int(opts["forks"]))
        if argv is None:
            return 0
        # A worker: its fds 3 and 4 are its own pipes now, under rin and
        # out, which the fork server never read or left data in.
        fastcgi, opts, _, _ = parse(argv)
        install_stacks(opts)
    if "reload-on-change" in opts:
        opts["files"] = watch_list(files, imported_at)
    send(out, READY, ready)
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

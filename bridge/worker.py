"""The wsgibridge worker: runs one WSGI application (PEP 3333) for the Go side.

The Go side starts it as ``python -c BOOTSTRAP APP [PYTHONPATH...]`` and
writes this file's source on fd 3 first (so ``ps`` shows a short command).
After that, fd 3 carries frames from Go and fd 4 frames to Go. Standard
input is /dev/null and standard output goes to the error log with standard
error, so an app that prints can never corrupt a response.

Every frame is an 8-byte header and a payload:

    +--------+--------+-----------------+-----------------------------------+
    | type   | flags  | request id      | payload length                    |
    | uint8  | uint8  | uint16, big end | uint32, big endian                |
    +--------+--------+-----------------+-----------------------------------+

From Go: R (request: a marshal'd dict of str->str, the CGI environ), then
B (body bytes) frames and exactly one E (end of body). The worker must read
up to E before the next R, even if the app did not read the body.

To Go: Y (ready, once, after the app imported; payload: the app's own
source files, one per line, so the bridge can reload when they change) or
I (import failed, then exit), then per request: H (the CGI header block, "Status:" line first),
D (body bytes; flag FLUSH when the app yielded it from a generator, so it
reaches the client now), L (a message for the bridge's log) and one F
(finished) or X (aborted after headers were sent).

The protocol fds are not inheritable, so a subprocess the app starts cannot
hold a response open.

SIGUSR1 stops the request in progress (the client went away, or it ran out
of time): Stop is raised inside the app, so its iterable is closed and the
worker serves on. The handler raises only while app code runs, never in
the middle of writing a frame.
"""

# _signal, not signal: the signal module imports enum, 4 ms of a cold start.
import _signal
import marshal
import os
import struct
import sys

HEADER = struct.Struct(">BBHI")

REQUEST, BODY, BODY_END = ord("R"), ord("B"), ord("E")
READY, IMPORT_FAILED = ord("Y"), ord("I")
HEAD, DATA, LOG, FINISHED, ABORTED = ord("H"), ord("D"), ord("L"), ord("F"), ord("X")

# Request flags.
RUN_ONCE, INPUT_TERMINATED = 1, 2
# DATA flag.
FLUSH = 1
# FINISHED flags: the response is an error page made by the worker; the
# worker exits after this request.
APP_ERROR, EXITING = 1, 2
# LOG flags (levels).
LOG_WARN, LOG_ERROR = 1, 2

MAX_HEADER_BLOCK = 32 * 1024
MAX_FRAME = 1 << 20

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
     "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade")
)
# RFC 9110 token characters; a name is valid when deleting them leaves nothing.
TOKEN = (b"!#$%&'*+-.^_`|~0123456789"
         b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Controls forbidden in a header value or reason phrase (HTAB is allowed).
BAD_VALUE = bytes(c for c in range(32) if c != 9) + b"\x7f"


class Stop(BaseException):
    """Raised inside the app when the bridge stops its request."""


# True while app code runs: only then may SIGUSR1 raise Stop. A stop that
# comes while the worker writes a frame waits in stop_pending until the
# write is done, so it is never lost and never tears a frame.
app_running = False
stop_pending = False


def on_stop(signum, frame):
    global stop_pending
    if app_running:
        raise stopped()
    stop_pending = True


def stopped():
    return Stop("the bridge stopped the request (the client went away or it ran out of time)")


class ProtocolError(Exception):
    """The Go side sent something the protocol does not allow."""


class AppError(Exception):
    """The app broke the WSGI contract; the message names the mistake."""


def check_status(status):
    if type(status) is not str:
        raise AppError("status must be str, not %s: %r" % (type(status).__name__, status))
    try:
        raw = status.encode("latin-1")
    except UnicodeEncodeError:
        raise AppError("status is not latin-1: %r" % status) from None
    if (len(raw) < 4 or not raw[:3].isdigit() or raw[0:1] == b"0" or raw[3:4] != b" "
            or len(raw.translate(None, BAD_VALUE)) != len(raw)):
        raise AppError("status must look like '200 OK' (3 digits, a space, a reason "
                       "without control characters): %r" % status)
    return raw


def header_block(status, headers):
    """Validates a status and header list and returns the CGI header block."""
    raw = check_status(status)
    if type(headers) is not list:
        raise AppError("response headers must be a list, not %s" % type(headers).__name__)
    lines = [b"Status: " + raw]
    length = None
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise AppError("each response header must be a (name, value) tuple: %r" % (item,))
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise AppError("header name and value must be str: %r" % (item,))
        try:
            bname, bvalue = name.encode("latin-1"), value.encode("latin-1")
        except UnicodeEncodeError:
            raise AppError("header is not latin-1: %r" % (item,)) from None
        if not bname or bname.translate(None, TOKEN):
            raise AppError("invalid header name %r" % name)
        if len(bvalue.translate(None, BAD_VALUE)) != len(bvalue):
            raise AppError("header %r has a control character (CR, LF, NUL...) in its value: %r"
                           % (name, value))
        lower = name.lower()
        if lower in HOP_BY_HOP:
            raise AppError("hop-by-hop header %r is not allowed from a WSGI app (PEP 3333)" % name)
        if lower == "status":
            raise AppError("'Status' is not a header; pass the status to start_response")
        if lower == "content-length":
            if not bvalue.isdigit() or len(bvalue) > 18:
                raise AppError("invalid Content-Length %r" % value)
            length = int(bvalue)
        lines.append(bname + b": " + bvalue)
    lines.append(b"\r\n")
    block = b"\r\n".join(lines)
    if len(block) > MAX_HEADER_BLOCK:
        raise AppError("response headers are %d bytes, over the %d-byte limit"
                       % (len(block), MAX_HEADER_BLOCK))
    return block, length


class Input:
    """wsgi.input: the request body, read from B frames up to the E frame."""

    def __init__(self, rin, rid):
        self._rin = rin
        self._rid = rid
        self._buf = b""
        self._eof = False

    def _next(self):
        if self._eof:
            return b""
        kind, _, rid, n = read_header(self._rin)
        if rid != self._rid:
            raise ProtocolError("body frame for request %d during request %d" % (rid, self._rid))
        if kind == BODY_END:
            self._eof = True
            return b""
        if kind != BODY:
            raise ProtocolError("frame %r inside a request body" % chr(kind))
        return read_exact(self._rin, n)

    def drain(self):
        while not self._eof:
            self._next()

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._buf]
            while not self._eof:
                parts.append(self._next())
            self._buf = b""
            return b"".join(parts)
        buf = self._buf
        if len(buf) < size and not self._eof:
            parts, have = [buf], len(buf)
            while have < size and not self._eof:
                chunk = self._next()
                parts.append(chunk)
                have += len(chunk)
            buf = b"".join(parts)
        self._buf = buf[size:]
        return buf[:size]

    def readline(self, size=-1):
        if size is None:
            size = -1
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                end = nl + 1
                break
            if 0 <= size <= len(buf) or self._eof:
                end = len(buf)
                break
            start = len(buf)
            buf += self._next()
        if 0 <= size < end:
            end = size
        self._buf = buf[end:]
        return buf[:end]

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks (PEP 3333)."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class Response:
    """start_response, write() and the lazy sending of headers for one request."""

    def __init__(self, out, rid, omit_body):
        self.out = out
        self.rid = rid
        self.omit_body = omit_body
        self.block = None
        self.length = None
        self.sent = 0
        self.headers_sent = False

    def frame(self, kind, payload=b"", flags=0):
        self.out.write(HEADER.pack(kind, flags, self.rid, len(payload)))
        self.out.write(payload)

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.block is not None:
            raise AppError("start_response() called a second time without exc_info")
        self.block, self.length = header_block(status, headers)
        code = self.block[8:11]
        if code[:1] == b"1" or code in (b"204", b"304"):
            self.omit_body = True
        return self.write

    def send_headers(self):
        self.headers_sent = True
        self.frame(HEAD, self.block)

    def write(self, data, flags=FLUSH):
        global app_running
        running, app_running = app_running, False
        try:
            self._write(data, flags)
        finally:
            app_running = running
        if running and stop_pending:
            raise stopped()

    def _write(self, data, flags):
        if self.block is None:
            raise AppError("write() called before start_response()")
        if type(data) is not bytes:
            raise AppError("body chunks must be bytes, not %s: %r"
                           % (type(data).__name__, data[:40] if hasattr(data, "__getitem__") else data))
        if not data:
            return
        if self.length is not None and self.sent + len(data) > self.length:
            log(self.out, self.rid, LOG_WARN, "app sent more than its Content-Length of %d; "
                "the excess is dropped" % self.length)
            data = data[:self.length - self.sent]
        self.sent += len(data)
        if self.omit_body:
            return
        if not self.headers_sent:
            self.send_headers()
        for i in range(0, len(data), MAX_FRAME):
            self.frame(DATA, data[i:i + MAX_FRAME], flags)
        if flags & FLUSH:
            self.out.flush()

    def finish(self):
        if self.block is None:
            raise AppError("the app returned without calling start_response()")
        if self.length is not None and self.sent < self.length and not self.omit_body:
            raise AppError("app sent %d bytes of its Content-Length of %d" % (self.sent, self.length))
        if not self.headers_sent:
            self.send_headers()
        self.frame(FINISHED)
        self.out.flush()

    def fail(self, summary, exiting=False):
        """Ends the request after an app error: a 500 if nothing was sent, else an abort."""
        if self.headers_sent:
            self.frame(ABORTED, summary.encode("utf-8", "replace"), EXITING if exiting else 0)
        else:
            body = b"Internal Server Error\n"
            self.frame(HEAD, b"Status: 500 Internal Server Error\r\n"
                       b"Content-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body))
            if not self.omit_body:
                self.frame(DATA, body)
            self.frame(FINISHED, flags=APP_ERROR | (EXITING if exiting else 0))
        self.out.flush()


def read_exact(rin, n):
    data = rin.read(n)
    if len(data) != n:
        raise ProtocolError("the bridge closed the pipe inside a frame")
    return data


def read_header(rin):
    return HEADER.unpack(read_exact(rin, 8))


def log(out, rid, level, message):
    data = message.encode("utf-8", "replace")
    out.write(HEADER.pack(LOG, level, rid, len(data)))
    out.write(data)


def describe(environ):
    return "%s %s%s" % (environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME", ""),
                        environ.get("PATH_INFO", ""))


def report(out, rid, environ, exc):
    """Logs an app error: the traceback on stderr, one summary line to the bridge."""
    import traceback
    where = describe(environ)
    if isinstance(exc, AppError):
        summary = "app error in %s: %s" % (where, exc)
    else:
        summary = "app raised in %s: %s" % (where, "".join(
            traceback.format_exception_only(type(exc), exc)).strip())
    sys.stderr.write("wsgibridge: traceback for %s\n%s" % (
        where, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    sys.stderr.flush()
    log(out, rid, LOG_ERROR, summary)
    return summary


BASE_ENVIRON = {
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.file_wrapper": FileWrapper,
}


def handle(app, rin, out, flags, rid, payload):
    """Serves one request; returns True when the worker should exit after it."""
    global app_running, stop_pending
    stop_pending = False
    environ = marshal.loads(payload)
    environ.update(BASE_ENVIRON)
    environ["wsgi.run_once"] = bool(flags & RUN_ONCE)
    if flags & INPUT_TERMINATED:
        environ["wsgi.input_terminated"] = True
    inp = environ["wsgi.input"] = Input(rin, rid)
    resp = Response(out, rid, environ["REQUEST_METHOD"] == "HEAD")
    try:
        app_running = True
        result = app(environ, resp.start_response)
        try:
            if type(result) in (list, tuple):
                # A sequence is complete already: send it in one write.
                for chunk in result:
                    resp.write(chunk, 0)
            else:
                for chunk in result:
                    resp.write(chunk)
        finally:
            app_running = False
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:
                    report(out, rid, environ, exc)
        resp.finish()
    except (ProtocolError, BrokenPipeError):
        raise
    except BaseException as exc:
        app_running = False
        # Interpreter state is suspect after these; a fresh worker is cheap.
        exiting = isinstance(exc, (SystemExit, KeyboardInterrupt, MemoryError))
        resp.fail(report(out, rid, environ, exc), exiting)
        if exiting:
            return True
    inp.drain()
    return False


def load_app(spec):
    """Imports MODULE[:CALLABLE] or path/to/file.py[:CALLABLE]."""
    import importlib
    target, sep, name = spec.rpartition(":")
    if not sep:
        target, name = spec, ""
    name = name or "application"
    if target.endswith(".py") or os.sep in target:
        import importlib.util
        path = os.path.abspath(target)
        modname = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        modspec = importlib.util.spec_from_file_location(modname, path)
        if modspec is None:
            raise ImportError("cannot load %s as Python source" % path)
        module = importlib.util.module_from_spec(modspec)
        sys.modules[modname] = module
        modspec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    app = module
    for part in name.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AttributeError("module %r has no attribute %r" % (module.__name__, name)) from None
    if not callable(app):
        raise TypeError("%r in %r is %s, which is not callable" % (name, module.__name__, type(app).__name__))
    return app


def app_files(spec, pythonpath):
    """The source files of the modules imported from the app's own folders:
    the working directory, --pythonpath and the app file's folder."""
    target = spec.rpartition(":")[0] or spec
    roots = [os.getcwd()] + [os.path.abspath(d) for d in pythonpath]
    if target.endswith(".py") or os.sep in target:
        roots.append(os.path.dirname(os.path.abspath(target)))
    roots = tuple(os.path.join(r, "") for r in roots)
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and os.path.abspath(path).startswith(roots):
            files.add(os.path.abspath(path))
    return sorted(files)


def main(argv):
    spec, pythonpath = argv[0], argv[1:]
    sys.argv = ["wsgibridge"]
    for d in reversed(pythonpath):
        sys.path.insert(0, d)
    os.set_inheritable(3, False)
    os.set_inheritable(4, False)
    _signal.signal(_signal.SIGUSR1, on_stop)
    rin = open(3, "rb", buffering=256 * 1024)
    out = open(4, "wb", buffering=256 * 1024)
    sys.stdout.reconfigure(line_buffering=True)
    try:
        app = load_app(spec)
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        summary = "app %r failed to import: %s (python %s, cwd %s)" % (
            spec, "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            sys.executable, os.getcwd())
        data = summary.encode("utf-8", "replace")
        out.write(HEADER.pack(IMPORT_FAILED, 0, 0, len(data)) + data)
        out.flush()
        return 3
    files = "\n".join(app_files(spec, pythonpath)).encode("utf-8", "surrogateescape")
    out.write(HEADER.pack(READY, 0, 0, len(files)) + files)
    out.flush()
    while True:
        head = rin.read(8)
        if not head:
            return 0
        if len(head) != 8:
            raise ProtocolError("the bridge closed the pipe inside a frame")
        kind, flags, rid, n = HEADER.unpack(head)
        if kind != REQUEST:
            raise ProtocolError("expected a request frame, got %r" % chr(kind))
        if handle(app, rin, out, flags, rid, read_exact(rin, n)):
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

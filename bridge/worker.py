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
the middle of writing a frame, and once per request: the bridge sends the
signal again while the request goes on, as one that lands just before a
blocking call is handled only when the call returns.
"""

# _signal, not signal: the signal module imports enum, 4 ms of a cold start.
import _signal
import io
import marshal
import os
import struct
import sys

HEADER = struct.Struct(">BBHI")

REQUEST, BODY, BODY_END = ord("R"), ord("B"), ord("E")
READY, IMPORT_FAILED = ord("Y"), ord("I")
HEAD, DATA, LOG, FINISHED, ABORTED = ord("H"), ord("D"), ord("L"), ord("F"), ord("X")
CHANGED = ord("C")  # FastCGI workers: the app's code changed; payload: the file
ACCESS = ord("A")  # FastCGI workers, --access-log: method, uri, status, bytes, microseconds

# Request flags.
RUN_ONCE, INPUT_TERMINATED = 1, 2
# DATA flag.
FLUSH = 1
# FINISHED flags: the response is an error page made by the worker; the
# worker exits after this request.
APP_ERROR, EXITING = 1, 2
# LOG flags (levels).
LOG_INFO, LOG_WARN, LOG_ERROR = 0, 1, 2

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
# write is done, so it is never lost and never tears a frame. Once Stop was
# raised, stop_raised keeps the signals sent again from raising it inside
# the app's own clean-up.
app_running = False
stop_pending = False
stop_raised = False


def on_stop(signum, frame):
    global stop_pending, stop_raised
    if stop_raised:
        return
    if app_running:
        stop_raised = True
        raise stopped()
    stop_pending = True


def stopped():
    return Stop("the bridge stopped the request (the client went away or it ran out of time)")


class ProtocolError(Exception):
    """The Go side sent something the protocol does not allow."""


class AppError(Exception):
    """The app broke the WSGI contract; the message names the mistake."""


# Statuses already checked: an app sends the same few again and again.
checked_status = {}


def check_status(status):
    raw = checked_status.get(status) if type(status) is str else None
    if raw is not None:
        return raw
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
    if len(checked_status) < 256:
        checked_status[status] = raw
    return raw


# Header lines already checked, with their Content-Length or None: an app
# sends the same few headers again and again. Bounded, and only short
# values, as values can come from clients (cookies, redirects).
checked_lines = {}


def header_block(status, headers):
    """Validates a status and header list and returns the CGI header block."""
    raw = check_status(status)
    if type(headers) is not list:
        raise AppError("response headers must be a list, not %s" % type(headers).__name__)
    lines = [b"Status: " + raw]
    length = None
    for item in headers:
        if type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) is str:
            hit = checked_lines.get(item)
            if hit is not None:
                lines.append(hit[0])
                if hit[1] is not None:
                    length = hit[1]
                continue
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
        line = bname + b": " + bvalue
        lines.append(line)
        if len(value) <= 64 and len(checked_lines) < 1024:
            checked_lines[item] = (line, length if lower == "content-length" else None)
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


SEQUENCE_ITERATORS = (type(iter([])), type(iter(())))


class Response:
    """start_response, write() and the lazy sending of headers for one request."""

    # Whether the response ends before the app's close() runs. Not on the
    # pipe: the bridge would send the next request, and perhaps the signal
    # that stops it, while this one's close() still runs.
    finish_first = False
    # The C fast path's header_block, which returns None where the Python
    # must judge (see bridge/fastpath/fastpath.c).
    fast_head = None
    # The state of a response not yet begun (defaults, as on Conn).
    block = length = None
    sent = 0
    headers_sent = False
    # The client left (known under FastCGI only): the Stop that ends the
    # app then is no error of the app's.
    aborted = False

    def __init__(self, out, rid, omit_body):
        self.out = out
        self.rid = rid
        self.omit_body = omit_body

    def frame(self, kind, payload=b"", flags=0):
        self.out.write(HEADER.pack(kind, flags, self.rid, len(payload)))
        self.out.write(payload)

    def log(self, level, message):
        self.frame(LOG, message.encode("utf-8", "replace"), level)

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.block is not None:
            raise AppError("start_response() called a second time without exc_info")
        got = self.fast_head(status, headers) if self.fast_head is not None else None
        self.block, self.length = got or header_block(status, headers)
        code = self.block[8:11]
        if code[:1] == b"1" or code in (b"204", b"304"):
            self.omit_body = True
        return self.write

    def send_headers(self):
        self.headers_sent = True
        self.frame(HEAD, self.block)

    def write(self, data, flags=FLUSH):
        global app_running, stop_raised
        running, app_running = app_running, False
        try:
            self._write(data, flags)
        finally:
            app_running = running
        if running and stop_pending:
            stop_raised = True
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
            self.log(LOG_WARN, "app sent more than its Content-Length of %d; "
                     "the excess is dropped" % self.length)
            data = data[:self.length - self.sent]
        self.sent += len(data)
        if self.omit_body:
            return
        if not self.headers_sent:
            self.send_headers()
        if len(data) > MAX_FRAME:
            data = memoryview(data)
        for i in range(0, len(data), MAX_FRAME):
            self.frame(DATA, data[i:i + MAX_FRAME], flags)
        if flags & FLUSH:
            self.flush()

    def flush(self):
        self.out.flush()

    def finish(self):
        if self.block is None:
            raise AppError("the app returned without calling start_response()")
        if self.length is not None and self.sent < self.length and not self.omit_body:
            raise AppError("app sent %d bytes of its Content-Length of %d" % (self.sent, self.length))
        if not self.headers_sent:
            self.send_headers()
        self.frame(FINISHED)
        self.flush()

    def fail(self, summary, exiting=False, status=500):
        """Ends the request after an error: an error page if nothing was sent, else an abort."""
        if self.headers_sent:
            self.frame(ABORTED, summary.encode("utf-8", "replace"), EXITING if exiting else 0)
        else:
            reason = "Gateway Timeout" if status == 504 else "Internal Server Error"
            body = reason.encode() + b"\n"
            self.frame(HEAD, b"Status: %d %s\r\n"
                       b"Content-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Length: %d\r\n\r\n" % (status, reason.encode(), len(body)))
            if not self.omit_body:
                self.frame(DATA, body)
            self.frame(FINISHED, flags=APP_ERROR | (EXITING if exiting else 0))
        self.flush()


def read_exact(rin, n):
    data = rin.read(n)
    if len(data) != n:
        raise ProtocolError("the bridge closed the pipe inside a frame")
    return data


def read_header(rin):
    return HEADER.unpack(read_exact(rin, 8))


def describe(environ):
    return "%s %s%s" % (environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME", ""),
                        environ.get("PATH_INFO", ""))


def report(resp, environ, exc):
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
    resp.log(LOG_ERROR, summary)
    return summary


BASE_ENVIRON = {
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.file_wrapper": FileWrapper,
}


# A FastCGI worker serves many requests.
FASTCGI_ENVIRON = {**BASE_ENVIRON, "wsgi.run_once": False}


def handle(app, rin, out, flags, rid, payload):
    """Serves one request from the pipe; returns True when the worker should exit after it."""
    global stop_pending, stop_raised
    stop_pending = stop_raised = False
    environ = marshal.loads(payload)
    environ.update(BASE_ENVIRON)
    environ["wsgi.run_once"] = bool(flags & RUN_ONCE)
    if flags & INPUT_TERMINATED:
        environ["wsgi.input_terminated"] = True
    inp = environ["wsgi.input"] = Input(rin, rid)
    exiting = run_app(app, environ, Response(out, rid, environ["REQUEST_METHOD"] == "HEAD"))
    if not exiting:
        inp.drain()
    return exiting


def run_app(app, environ, resp):
    """Calls the app and sends its response; returns True when the worker
    should exit after this request."""
    global app_running
    try:
        app_running = True
        result = app(environ, resp.start_response)
        try:
            chunks = iter(result)
            # The chunks of a list, or of an object that iterates one (as
            # Django's HttpResponse does), are all there: no app code runs
            # between them, so they go out together, in one write. Others
            # are sent as they come (PEP 3333).
            flags = 0 if type(chunks) in SEQUENCE_ITERATORS else FLUSH
            for chunk in chunks:
                resp.write(chunk, flags)
            if resp.finish_first:
                app_running = False
                resp.finish()
        finally:
            app_running = False
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:
                    report(resp, environ, exc)
        if not resp.finish_first:
            resp.finish()
    except (ProtocolError, BrokenPipeError, ConnClosed):
        raise
    except BaseException as exc:
        app_running = False
        if resp.aborted and isinstance(exc, Stop):
            return False  # the client left: nothing to send, nothing to report
        # Interpreter state is suspect after these; a fresh worker is cheap.
        exiting = isinstance(exc, (SystemExit, KeyboardInterrupt, MemoryError))
        resp.fail(report(resp, environ, exc), exiting, 504 if isinstance(exc, Stop) else 500)
        return exiting
    return False


# FastCGI: in the daemon the worker takes connections from the listening
# socket itself and answers the web server directly, so a request crosses
# no process but this one; the Go side supervises (starts, stops, reloads,
# enforces the timeout) and hears only log lines on fd 4.

FCGI_BEGIN, FCGI_ABORT, FCGI_END, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 2, 3, 4, 5, 6
FCGI_DATA, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE = 8, 9, 10, 11
FCGI_RESPONDER, FCGI_KEEP_CONN = 1, 1
REQUEST_COMPLETE, CANT_MPX_CONN, UNKNOWN_ROLE = 0, 1, 3
RECORD = struct.Struct(">BBHHBx")
END_REQUEST = struct.Struct(">BBHHBxIB3x")
MAX_RECORD_CONTENT = 65528  # a multiple of 8: full records need no padding
MAX_PARAMS_BYTES = 256 * 1024
MAX_PARAMS = 1000
BODY_MEMORY = 1 << 20
STALL_AFTER = 0.02  # seconds
STOP_AGAIN = 0.1  # seconds between the signals that stop a request
ACCEPT_RUN = 16
MSG_CMSG_CLOEXEC = 0x40000000  # Linux; not in the socket module
SERVED = struct.Struct("<Q")  # a worker's request count on the board, at 64 + 8 * slot
RUNNING = 576  # board[RUNNING + slot] is 1 while the worker's app runs under a timeout


def mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


BODY_STALL = 1.0  # seconds the oldest body may stall others before it goes to a file


class ConnClosed(Exception):
    """The connection ended or broke; it is closed without a reply."""


class Incomplete(Exception):
    """The rest of a request has not come yet. What came is kept with its
    connection, which waits in the epoll while the worker serves others:
    a web server that streams a slow upload (nginx with
    fastcgi_request_buffering off, Apache's mod_proxy_fcgi) or stalls
    costs the worker nothing until more arrives."""


class Paused(Incomplete):
    """A request body must wait for memory (Body.fits); its connection is
    not read until another body leaves it some."""


MSG_DONTWAIT = 0x40  # Linux
EPOLLIN = 1  # select.EPOLLIN; select is imported only by the fastcgi mode
SEND_BUFFER = 1 << 20  # bytes a connection may ask of the kernel; see Conn.grow


class Conn:
    """One connection from the web server, with its read buffer and what
    has come of its request. Reads never wait: when the web server has
    sent nothing more, they raise Incomplete. Writes try first without
    waiting; only when the web server is not ready do they wait, and then
    at most TIMEOUT seconds (a poll costs a call only then, where socket
    timeouts would cost two per connection).

    Reads go straight into a buffer the connection borrows from a small
    pool while it has unread bytes, and records are views of it: a request
    body is copied once, into the Body, not at every step."""

    TIMEOUT = 60  # seconds the web server may leave a request stalled
    BUFFER = 80 * 1024  # holds the largest record, 8 + 65535 + 255 bytes
    free = []  # buffers (bytearray, memoryview) to borrow

    # A new connection's state, until it changes: defaults here cost a new
    # connection nothing, where setting each costs it (one per request
    # with nginx's usual block).
    mem = view = None
    start = end = 0  # the unread bytes are mem[start:end]
    keep = cut_short = passed = grown = False
    paused = False  # its body waits for memory: not read meanwhile
    last = 0
    rid = 0  # the request begun, from BEGIN_REQUEST to its end
    params = ()  # its PARAMS records so far
    params_size = 0
    pending = None  # its Pending, once the params are whole

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()

    def buffered(self):
        return self.end - self.start

    def movable(self):
        """True when nothing of a request is held here, so the connection
        can go to another worker."""
        return self.start == self.end and not self.rid

    def wait(self, event):
        import select
        p = select.poll()
        p.register(self.fd, event)
        if not p.poll(self.TIMEOUT * 1000):
            raise ConnClosed("the web server went silent for %ds" % self.TIMEOUT)

    def room(self):
        """Makes room after the unread bytes; borrows a buffer if needed."""
        if self.mem is None:
            if self.free:
                self.mem, self.view = self.free.pop()
            else:
                self.mem = bytearray(self.BUFFER)
                self.view = memoryview(self.mem)
        elif self.start:
            n = self.end - self.start
            # Through a copy: the unread bytes may overlap where they go.
            self.mem[:n] = bytes(self.view[self.start:self.end])
            self.start, self.end = 0, n

    def release(self):
        """Gives the buffer back when no unread bytes are left in it."""
        if self.mem is not None and self.start == self.end:
            if len(self.free) < 4:
                self.free.append((self.mem, self.view))
            self.mem = self.view = None
            self.start = self.end = 0

    def fill(self):
        if self.mem is None or self.end == len(self.mem):
            self.room()
        try:
            n = self.sock.recv_into(self.view[self.end:], 0, MSG_DONTWAIT)
        except BlockingIOError:
            raise Incomplete from None
        except OSError as exc:
            raise ConnClosed(str(exc)) from None
        if not n:
            raise ConnClosed("the web server closed the connection")
        self.end += n

    def need(self, n):
        """Reads until n unread bytes are buffered, or raises Incomplete."""
        if self.mem is None or len(self.mem) - self.start < n:
            self.room()
        while self.end - self.start < n:
            self.fill()

    def record(self):
        """Returns the next record's (type, request id, content); content is
        a view of the buffer, good until the next call."""
        if self.end - self.start < 8:
            self.need(8)
        version, kind, rid, n, pad = RECORD.unpack_from(self.mem, self.start)
        if version != 1:
            raise ConnClosed("not FastCGI (version byte %d)" % version)
        start = self.start
        if self.end - start < 8 + n + pad:
            self.need(8 + n + pad)
            start = self.start
        self.last = start
        self.start = start + 8 + n + pad
        return kind, rid, self.view[start + 8:start + 8 + n]

    def unread(self):
        """Puts the record record() returned last back, to be read again."""
        self.start = self.last

    def send(self, data):
        try:
            sent = self.sock.send(data, MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ConnClosed(str(exc)) from None
        if sent < len(data):
            self.sendv([memoryview(data)[sent:]])

    def sendv(self, parts):
        """Sends the buffers in parts, in order, as one stream: a large
        response goes out as it came from the app, never copied whole."""
        while parts:
            try:
                sent = self.sock.sendmsg(parts[:512], (), MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ConnClosed(str(exc)) from None
            i = 0
            while i < len(parts) and sent >= len(parts[i]):
                sent -= len(parts[i])
                i += 1
            parts = parts[i:]
            if not parts:
                return
            if sent:
                parts[0] = memoryview(parts[0])[sent:]
            if not self.grown and self.grow():
                continue
            self.wait(4)  # POLLOUT: the socket is full

    def grow(self):
        """Raises the socket's send buffer, once, when a response fills it.
        A response larger than the buffer otherwise waits for the web
        server to drain it, a poll and two context switches each time (five
        times per MiB with Linux's default buffer). The kernel caps the size
        at net.core.wmem_max; SEND_BUFFER bounds what one connection can
        leave in the kernel for a slow reader."""
        import _socket
        self.grown = True
        try:
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            return False
        return True

    def close(self):
        if self.pending is not None and self.pending.body is not None:
            self.pending.body.discard()
        self.pending = None
        self.start = self.end
        self.release()
        self.sock.close()


def end_request(rid, status=REQUEST_COMPLETE):
    return END_REQUEST.pack(1, FCGI_END, rid, 8, 0, 0, status)


PADDING = [bytes(n) for n in range(8)]


# end_records by request id: web servers number the requests of a
# connection 1, or a few more.
ENDS = {}


def end_records(rid):
    """The empty STDOUT record that ends a response, and END_REQUEST."""
    tail = ENDS.get(rid)
    if tail is None:
        tail = RECORD.pack(1, FCGI_STDOUT, rid, 0, 0) + end_request(rid)
        if len(ENDS) < 64:
            ENDS[rid] = tail
    return tail


def stdout_records(rid, data, parts):
    """Appends data to parts as FCGI_STDOUT records, the content by
    reference, not copied."""
    if len(data) > MAX_RECORD_CONTENT:
        data = memoryview(data)
    for i in range(0, len(data), MAX_RECORD_CONTENT):
        chunk = data[i:i + MAX_RECORD_CONTENT]
        n = len(chunk)
        pad = -n & 7
        parts.append(RECORD.pack(1, FCGI_STDOUT, rid, n, pad))
        parts.append(chunk)
        if pad:
            parts.append(bytes(pad))


def decode_pairs(data, pairs, limit):
    """Adds the name-value pairs in data to the pairs dict (latin-1 str)."""
    text = str(data, "latin-1")  # one decode; the pairs are slices of it
    i, n = 0, len(data)
    # Inline, not by a helper, and short lengths (one byte each, nearly
    # all of them) first: this loop runs for every variable of every request.
    try:
        while i < n:
            ln = data[i]
            lv = data[i + 1]
            if (ln | lv) >= 128:
                if ln >= 128:
                    ln = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
                    i += 3
                lv = data[i + 1]
                if lv >= 128:
                    lv = int.from_bytes(data[i + 1:i + 5], "big") & 0x7FFFFFFF
                    i += 3
            i += 2
            j = i + ln
            i = j + lv
            pairs[text[j - ln:j]] = text[j:i]
    except IndexError:
        raise ConnClosed("malformed params") from None
    if i != n:
        raise ConnClosed("malformed params")
    if len(pairs) > limit:
        raise ConnClosed("more than %d params" % limit)


class FastCGIResponse(Response):
    """A Response sent as FCGI_STDOUT records on the connection."""

    # The web server has the whole response, END_REQUEST with it, before
    # close() runs (Django's sends signals and closes database connections).
    finish_first = True

    size = 0
    finished = ended = cut_short = False
    # aborted: the web server gave the request up (FCGI_ABORT_REQUEST), or
    # is gone (it closed the connection, or stopped reading for
    # Conn.TIMEOUT): either way its client left.
    gone = False
    status = b"-"
    head_size = sent_out = 0  # bytes of the header block, and of all flush sent

    def body_sent(self):
        """The body bytes that went out: what the client got."""
        return max(self.sent_out - self.head_size, 0)

    def __init__(self, conn, rid, omit_body, ctl, fast_head):
        Response.__init__(self, None, rid, omit_body)
        self.fast_head = fast_head
        self.conn = conn
        self.ctl = ctl
        self.pending = []

    def frame(self, kind, payload=b"", flags=0):
        if kind == HEAD or kind == DATA:
            if kind == HEAD:
                self.status = payload[8:11]
                self.head_size = len(payload)
            self.pending.append(payload)
            self.size += len(payload)
        elif kind == FINISHED:
            self.finished = True
        elif kind == ABORTED:
            # No END_REQUEST: the connection is closed, which is how the web
            # server learns that the response is incomplete. A response that
            # ended complete stays so, and its connection is kept.
            self.cut_short = not self.aborted and not self.ended
        else:
            self.ctl.write(HEADER.pack(kind, flags, self.rid, len(payload)) + payload)
            self.ctl.flush()

    def refuse(self, status):
        reason = b"Bad Request" if status == 400 else b"Internal Server Error"
        body = reason + b"\n"
        self.frame(HEAD, b"Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Length: %d\r\n\r\n" % (status, reason, len(body)))
        if not self.omit_body:
            self.frame(DATA, body)
        self.frame(FINISHED)
        self.flush()

    def complete(self):
        """True once the body has all of its Content-Length: the request
        can end with the last of it, in the same write, before the app's
        iterable is exhausted and closed (a generator, or Flask's response,
        would otherwise cost a second write, and the web server a second
        wake-up, for END_REQUEST alone)."""
        return self.headers_sent and self.length is not None and self.sent >= self.length

    def flush(self):
        """Sends what the app gave so far as STDOUT records: a short response
        as one record with its END_REQUEST, in one write; a large one by
        reference, record by record. A web server that went away stops
        the app as its abort does (Stop, raised when the app's write
        returns)."""
        global stop_pending
        parts, size = self.pending, self.size
        self.pending, self.size = [], 0
        if self.aborted:
            return
        tail = b""
        if not self.ended and (self.finished or self.complete()):
            self.ended = True
            tail = end_records(self.rid)
        try:
            if size > MAX_RECORD_CONTENT:
                out = []
                for part in parts:
                    stdout_records(self.rid, part, out)
                out.append(tail)
                self.conn.sendv(out)
            elif size:
                pad = -size & 7
                self.conn.send(RECORD.pack(1, FCGI_STDOUT, self.rid, size, pad) + b"".join(parts) + PADDING[pad] + tail)
            elif tail:
                self.conn.send(tail)
        except ConnClosed:
            self.aborted = self.gone = True
            stop_pending = True
            return
        self.sent_out += size


class Pending:
    """A request whose params have come: its environ, and its body as it
    comes (refused: the status it gets instead of running the app)."""

    __slots__ = ("head", "line", "environ", "to_eof", "body", "refused")

    def __init__(self):
        self.body = self.refused = None


class Refused(Exception):
    """A request refused before the app sees it; status is what the client gets."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


HTTP_NAME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
DROPPED = frozenset(("HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"))
METHOD_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Valid by the rules below; a set lookup spares the usual request the checks.
COMMON_METHODS = frozenset(("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"))
COMMON_PROTOCOLS = frozenset(("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/3.0"))
# Names already judged, so that the rules cost a lookup per variable on
# the usual request; bounded, as names come from clients (HTTP_*).
name_ok = {}


def valid_name(name):
    ok = name_ok.get(name)
    if ok is None:
        if not name or name.startswith("wsgi.") or "=" in name or name in DROPPED:
            ok = False
        elif name.startswith("HTTP_"):
            ok = len(name) > 5 and HTTP_NAME.issuperset(name[5:])
        else:
            ok = True
        if len(name_ok) < 4096:
            name_ok[name] = ok
    return ok


# For each set of names a web server sends (nginx sends the same ones
# every time), the names the rules drop; bounded like name_ok.
dropped_names = {}


def make_environ(params, mount):
    """The PEP 3333 environ for a request's CGI params, by the same rules as
    the Go side's (bridge/request.go): returns (environ, content length or
    -1, whether a body without a length runs to its end). params becomes
    the environ. The C fast path makes the usual environ by the same rules."""
    if "\0" in "".join(params) or "\0" in "".join(params.values()):
        raise Refused(400, "NUL byte in a variable")
    names = tuple(params)
    drop = dropped_names.get(names)
    if drop is None:
        drop = [name for name in names if not valid_name(name)]
        if len(dropped_names) < 256:
            dropped_names[names] = drop
    env = params
    for name in drop:
        del env[name]
    length = -1
    cl = env.pop("CONTENT_LENGTH", "")
    if cl:
        if not cl.isdigit() or not cl.isascii() or len(cl) > 18:
            raise Refused(400, "invalid CONTENT_LENGTH %r" % cl)
        length = int(cl)
        env["CONTENT_LENGTH"] = cl
    method = env.get("REQUEST_METHOD", "")
    if method not in COMMON_METHODS and (not method or not METHOD_CHARS.issuperset(method)):
        raise Refused(500, "gateway misconfigured: REQUEST_METHOD is %r" % method)
    proto = env.get("SERVER_PROTOCOL", "")
    if proto not in COMMON_PROTOCOLS and (proto[:5] != "HTTP/" or len(proto) == 5
                                          or proto[5:].strip("0123456789.")):
        raise Refused(500, "gateway misconfigured: SERVER_PROTOCOL is %r" % proto)
    script = env.get("SCRIPT_NAME", "")
    path = env.get("PATH_INFO", "")
    if mount is not None:
        path = path or env.get("DOCUMENT_URI", "") or script
        if path.startswith(mount) and (len(path) == len(mount) or path[len(mount)] == "/"):
            path = path[len(mount):]
        script = mount
    elif script.endswith("/"):
        script = script.rstrip("/")
        path = "/" + path.lstrip("/")
    env["SCRIPT_NAME"] = script
    env["PATH_INFO"] = path
    if "QUERY_STRING" not in env:
        env["QUERY_STRING"] = ""
    https = env.get("HTTPS")
    if https is not None and https.lower() in ("on", "1"):
        scheme = "https"
    else:
        scheme = "https" if env.get("REQUEST_SCHEME", "").lower() == "https" else "http"
    env["wsgi.url_scheme"] = scheme
    if not env.get("SERVER_NAME") or not env.get("SERVER_PORT"):
        host = env.get("HTTP_HOST", "")
        port = "443" if scheme == "https" else "80"
        name = host or "localhost"
        i = host.rfind(":")
        if i >= 0 and "]" not in host[i:]:
            name = host[:i]
            port = host[i + 1:] or port
        if not env.get("SERVER_NAME"):
            env["SERVER_NAME"] = name
        if not env.get("SERVER_PORT"):
            env["SERVER_PORT"] = port
    coding = env.get("HTTP_TRANSFER_ENCODING")
    to_eof = length < 0 and coding is not None and "chunked" in coding.lower()
    return env, length, to_eof


class Body:
    """Collects a request body: in memory, as copies of the pieces that
    came, joined once when the app reads (no buffer of the whole length to
    zero first; see keep_freed_blocks for what the two copies cost
    malloc); past BODY_MEMORY, in an unlinked temporary file; keeping at
    most limit bytes (-1: all).

    The bodies a worker collects at once share BODY_MEMORY: the oldest may
    always grow, another only while they all fit (fits()), so that many
    uploads streamed at once wait in the web server and the kernel, not
    in the worker's memory, and are taken in turn."""

    held = 0  # bytes in memory of the bodies being collected
    collecting = {}  # those bodies, oldest first: when each last grew
    taken = 0  # counts the bodies that left collecting, freeing memory

    def __init__(self, limit):
        self.limit = limit
        self.size = 0
        self.file = None
        self.chunks = []

    def fits(self, n):
        """True if n more bytes may be added now."""
        return (self.file is not None or Body.held + n <= BODY_MEMORY
                or next(iter(Body.collecting), self) is self)

    def add(self, data, now=0.0):
        if self.limit >= 0:
            data = data[:self.limit - self.size]
        n = len(data)
        if not n:
            return
        if self.file is None and self.size + n > BODY_MEMORY:
            self.spill()
        if self.file is not None:
            self.file.write(data)
        else:
            self.chunks.append(bytes(data))
            Body.held += n
            Body.collecting[self] = now
        self.size += n

    def spill(self):
        """Moves what came so far to a temporary file, freeing its memory."""
        import tempfile
        self.file = tempfile.TemporaryFile()
        self.file.writelines(self.chunks)
        self.forget()

    def forget(self):
        if self.chunks is not None:
            self.chunks = None
            Body.held -= self.size
            if Body.collecting.pop(self, None) is not None:
                Body.taken += 1

    def reader(self):
        if self.file is None:
            data = b"".join(self.chunks)
            self.forget()
            return io.BytesIO(data)
        self.file.seek(0)
        return self.file

    def discard(self):
        """Drops a body that no app will read."""
        self.forget()
        if self.file is not None:
            self.file.close()


class FastCGIServer:
    """Serves FastCGI connections taken from the listening socket until
    fd 3 closes (the bridge retires this worker) or max_requests are done."""

    IDLE_TIMEOUT = 75.0  # a kept connection with no request is closed after it

    def __init__(self, app, listener, ctl, opts):
        self.app = app
        self.listener = listener
        self.ctl = ctl
        self.mount = opts.get("mount")
        self.timeout = float(opts.get("timeout", 0))
        self.max_requests = int(opts.get("max-requests", 0))
        self.max_conns = opts.get("workers", "1")
        self.access_log = "access-log" in opts
        self.served = 0
        self.conns = {}
        self.paused = []  # connections whose body waits for memory
        self.taken = Body.taken
        self.draining = False
        self.next_sweep = 0.0
        self.board = self.slot = self.current = self.current_resp = None
        self.alarm_at = None  # when the alarm fires next, by self.clock; None: not armed
        self.stalled = self.watching = False
        self.started = 0.0
        import time
        self.clock = time.monotonic
        self.allowed = frozenset(opts["allow"].split(",")) if "allow" in opts else None
        self.watched = opts.get("files")
        if "slot" in opts:
            import mmap
            self.board = mmap.mmap(8, 4096)
            self.slot = int(opts["slot"])
        self.fast = self.fast_head = self.fast_accept = None
        if "fastpath" in opts:
            self.use_fastpath(load_fastpath(int(opts["fastpath"]), self.log))

    def use_fastpath(self, module):
        """Accepts connections, reads the usual request and checks the usual
        headers with the C fast path (module; None: all in Python)."""
        self.fast = self.fast_head = self.fast_accept = None
        if module is not None:
            self.fast_accept, self.fast_head = module.accept, module.head
            try:
                self.fast_mount = None if self.mount is None else self.mount.encode("latin-1")
            except UnicodeEncodeError:
                return  # the environ's str cannot hold it either: make_environ judges
            self.fast = module.request

    def serve(self):
        import _socket
        import select
        import time
        ep = select.epoll()
        lfd = self.listener.fileno()
        # Exclusive: a new connection, or a connection passed on by a busy
        # peer, wakes one idle worker, not all.
        ep.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        ep.register(3, select.EPOLLIN)
        lobby = None
        if self.board is not None:
            lobby = _socket.socket(fileno=7)
            ep.register(7, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self.lobby_out = _socket.socket(fileno=6)
        self.ep, self.socket = ep, _socket
        clock = time.monotonic
        board, slot = self.board, self.slot
        accept, new_socket = self.fast_accept or self.accept, _socket.socket
        family, stype = self.listener.family, self.listener.type
        hangup = select.EPOLLHUP | select.EPOLLERR
        while True:
            if self.paused:
                timeout = BODY_STALL
            else:
                timeout = Conn.TIMEOUT if self.conns else -1
            if board is not None:
                board[slot] = 1
            events = ep.poll(timeout)
            if board is not None:
                board[slot] = 0
            # Events become objects before anything is closed, so a number
            # reused by an accept below cannot be mistaken for another.
            items = []
            for fd, _ in events:
                if fd == 3:
                    return self.close_all()
                items.append(self.conns[fd][0] if fd in self.conns else fd)
            # Only a paused connection is watched for its hang-up alone.
            hung = {fd for fd, ev in events if ev & hangup} if self.paused else ()
            if len(items) > 1 and board is not None and 1 in board[:64]:
                # Another worker waits idle: it takes the other ready
                # connections, so no request waits behind ours.
                for conn in [x for x in items if type(x) is Conn and x.movable()][1:]:
                    self.pass_conn(conn)
            if self.watched is not None and self.code_changed() and self.retired():
                return self.close_all()
            for item in items:
                if type(item) is Conn:
                    conn = item
                    if conn.passed:
                        continue
                    if conn.paused:
                        # Not read while paused; closed by the web server
                        # (its client went away), it is done.
                        if conn.fd in hung:
                            self.drop(conn)
                        continue
                    self.turn(conn)
                    continue
                if item == lfd:
                    # Accepts on while connections wait: under load a worker
                    # serves a run of them per wake-up, not one.
                    for run in range(ACCEPT_RUN):
                        fd = accept(lfd, run)
                        if fd is None:
                            break
                        sock = new_socket(family, stype, 0, fd)
                        if self.allowed is not None and not self.allowed_peer(sock):
                            sock.close()
                            continue
                        self.admit(Conn(sock))
                        if self.conns or (self.max_requests and self.served >= self.max_requests):
                            break
                elif item == 7:
                    fd = self.receive_conn(lobby)
                    if fd is not None:
                        self.admit(Conn(new_socket(fileno=fd)))
            if self.max_requests and self.served >= self.max_requests:
                self.ctl.write(HEADER.pack(FINISHED, EXITING, 0, 0))
                self.ctl.flush()
                return self.close_all()
            if self.paused:
                self.unstall(clock())
                if Body.taken != self.taken:
                    self.resume()
            if self.conns:
                now = clock()
                # The deadlines are a minute long: a look each second is
                # enough, not a walk over every kept connection per wake-up.
                if now >= self.next_sweep:
                    self.next_sweep = now + 1.0
                    self.sweep(now)

    def accept(self, fd, probe):
        """The next connection on the listener (fd), or None when none
        waits. The fast path's accept does the same in C, without the
        exception, and probes first (see bridge/fastpath/fastpath.c)."""
        try:
            return self.listener._accept()[0]
        except (BlockingIOError, InterruptedError):
            return None

    def admit(self, conn):
        """Serves a new connection now if its request is there: one may
        come without it yet (an idle one passed on, a web server slow to
        write), and must not hold up the others; it waits in the epoll."""
        if not self.serve_conn(conn):
            conn.close()
            return
        self.conns[conn.fd] = (conn, self.clock())
        self.ep.register(conn.fd, 0 if conn.paused else EPOLLIN)

    def turn(self, conn):
        """Serves what came on a kept connection."""
        if self.serve_conn(conn):
            self.conns[conn.fd] = (conn, self.clock())
        else:
            self.drop(conn)

    def pause(self, conn):
        conn.paused = True
        self.paused.append(conn)
        if conn.fd in self.conns:
            self.ep.modify(conn.fd, 0)

    def resume(self):
        """Gives the paused connections their turn again, once a body left
        memory free (they pause again if it is not enough)."""
        while self.paused and Body.taken != self.taken:
            self.taken = Body.taken
            paused, self.paused = self.paused, []
            for conn in paused:
                conn.paused = False
                if self.conns.get(conn.fd, (None,))[0] is conn:
                    self.ep.modify(conn.fd, EPOLLIN)
                    # Its next record waits in its buffer: no event would come for it.
                    self.turn(conn)

    def unstall(self, now):
        """Sends the oldest body to a file when it stalls the paused ones:
        a client that stops uploading must not hold the others up."""
        for body, grew in Body.collecting.items():
            if now - grew > BODY_STALL:
                body.spill()
            return

    def sweep(self, now):
        """Closes the kept connections idle past IDLE_TIMEOUT, and those
        whose request has not come whole after Conn.TIMEOUT without news."""
        for conn, since in list(self.conns.values()):
            if conn.paused:
                continue  # it waits for the worker, not for the web server
            if conn.movable():
                if now - since > self.IDLE_TIMEOUT:
                    self.drop(conn)
            elif now - since > conn.TIMEOUT:
                self.log(LOG_WARN, "fastcgi: closing a connection: the web server left "
                         "a request unfinished for %gs" % conn.TIMEOUT)
                self.drop(conn)

    def drop(self, conn):
        if self.conns.pop(conn.fd, (None,))[0] is conn:
            self.ep.unregister(conn.fd)
        conn.close()

    def pass_conn(self, conn):
        """Gives conn to another worker through the lobby; False if it cannot."""
        try:
            self.lobby_out.sendmsg([b"c"], [(self.socket.SOL_SOCKET, self.socket.SCM_RIGHTS,
                                             conn.fd.to_bytes(4, sys.byteorder))])
        except OSError:
            return False
        conn.passed = True
        self.drop(conn)
        return True

    def allowed_peer(self, sock):
        """FCGI_WEB_SERVER_ADDRS: a TCP peer must be one of the allowed
        addresses; unix sockets are guarded by their file mode instead."""
        if sock.family not in (self.socket.AF_INET, self.socket.AF_INET6):
            return True
        addr = sock.getpeername()[0]
        if addr.startswith("::ffff:") and "." in addr:
            addr = addr[7:]
        if addr in self.allowed:
            return True
        self.log(LOG_WARN, "fastcgi: refused a connection from %s, not in FCGI_WEB_SERVER_ADDRS" % addr)
        return False

    def code_changed(self):
        """With --reload-on-change: True (and the bridge told) when one of
        the app's files changed since this worker imported it."""
        for path, seen in self.watched:
            if mtime(path) != seen:
                data = path.encode("utf-8", "surrogateescape")
                self.ctl.write(HEADER.pack(CHANGED, 0, 0, len(data)) + data)
                self.ctl.flush()
                return True
        return False

    def retired(self):
        """Serves nothing more with old code: waits until the bridge, having
        started workers with the new code, retires this one (True; its
        connections, and the requests waiting on them, go to the new ones),
        or says the new code failed to start (a byte on fd 3; False: this
        worker serves on with the code it has)."""
        if not os.read(3, 1):
            return True
        self.watched = [(path, mtime(path)) for path, _ in self.watched]
        return False

    def receive_conn(self, lobby):
        """Takes a connection another worker passed on, or None if another
        idle worker took it first. (socket.recv_fds would block: the
        Python versions we run on ignore its flags.)"""
        socket = self.socket
        try:
            _, ancdata, _, _ = lobby.recvmsg(1, socket.CMSG_LEN(4), socket.MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4:
                return int.from_bytes(data[:4], sys.byteorder)
        return None

    def arm(self, delay, again=0):
        delay = max(delay, 0.001)
        self.alarm_at = self.clock() + delay
        _signal.setitimer(_signal.ITIMER_REAL, delay, again)

    def watch(self, started):
        """Makes sure the alarm looks at the request that started at
        started in time: after STALL_AFTER (the timeout, without a board).
        An alarm left armed by an earlier request (its timeout) that fires
        later is brought forward; one that fires sooner is left, so a run
        of short requests costs one setitimer, not one each (respond calls
        this only when the alarm is not due by STALL_AFTER)."""
        if self.board is None:
            if self.alarm_at is None or self.alarm_at > started + self.timeout:
                self.arm_timeout(0)
        elif self.alarm_at is None or self.alarm_at > started + STALL_AFTER:
            self.arm(STALL_AFTER)

    def arm_timeout(self, elapsed):
        """Arms the alarm for the request's timeout, and again every
        STOP_AGAIN after it: CPython handles a signal that lands just before
        a blocking call only when the call returns, and the next one
        interrupts the call."""
        self.arm(self.timeout - elapsed, STOP_AGAIN)

    def on_alarm(self, signum, frame):
        """Looks at the request in progress: one running past STALL_AFTER
        passes this worker's other connections to idle peers and listens
        for its abort; one past the timeout is stopped. The alarm is not
        rearmed once the worker is idle, and is armed once for a run of
        short requests, not for each (see watch)."""
        self.alarm_at = None
        if self.current is None or stop_raised:
            _signal.setitimer(_signal.ITIMER_REAL, 0)  # the timeout's repeats
            return
        elapsed = self.clock() - self.started
        if self.timeout and elapsed >= self.timeout:
            if app_running:
                self.log(LOG_ERROR, "the app ran longer than the %gs timeout; stopping it" % self.timeout)
            return on_stop(signum, frame)
        watch_stall = self.board is not None and not self.stalled
        if watch_stall and elapsed >= STALL_AFTER:
            if not app_running:
                return self.arm(0.005)  # it is writing its response: look again soon
            self.stalled = True
            if self.timeout:
                self.arm_timeout(elapsed)
            for conn, _ in list(self.conns.values()):
                if conn is not self.current and conn.movable():
                    self.pass_conn(conn)
            return self.watch_abort(True)
        if watch_stall:
            self.arm(STALL_AFTER - elapsed)
        elif self.timeout:
            self.arm_timeout(elapsed)

    def watch_abort(self, on):
        """A request that runs long hears of its abort (FCGI_ABORT_REQUEST,
        or the connection closed) by SIGIO, so its app is stopped then."""
        import fcntl
        fd = self.current.fd
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if on:
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_ASYNC)
            self.on_io(0, None)  # what came before
        else:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_ASYNC)
        self.watching = on

    def on_io(self, signum, frame):
        resp = self.current_resp
        if not app_running or resp is None or resp.aborted or resp.ended:
            return
        try:
            data = self.current.sock.recv(65536, self.socket.MSG_PEEK | self.socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn = self.current
            data = bytes(conn.view[conn.start:conn.end]) + data if conn.buffered() else data
            abort = RECORD.pack(1, FCGI_ABORT, resp.rid, 0, 0)
            if abort not in data:
                return
        else:
            resp.gone = True  # the connection closed
        resp.aborted = True
        on_stop(signum, frame)

    def close_all(self):
        """Leaves: requests still coming are served first; then the kept
        connections go to the other workers (a reload's new ones, or the
        peers of a worker that served its max requests), so nginx never
        finds one closed under a request."""
        self.draining = True  # bodies no longer wait for memory, but in turn
        for conn, _ in list(self.conns.values()):
            if not self.finish(conn) or self.board is None or not self.pass_conn(conn):
                self.drop(conn)
        return 0

    def log(self, level, message):
        data = message.encode("utf-8", "replace")
        self.ctl.write(HEADER.pack(LOG, level, 0, len(data)) + data)
        self.ctl.flush()

    def serve_conn(self, conn):
        """Reads what has come of the next request on conn, and serves the
        request once it is whole; True: keep the connection (a request
        still coming waits in it)."""
        try:
            req = conn.pending
            ended = False
            if req is None:
                got = self.read_params(conn)
                if got is None:
                    return False
                params, made, ended = got
                req = conn.pending = self.prepare(params, made)
            done = ended or self.read_stdin(conn, req.body)
            rid, conn.rid, conn.pending = conn.rid, 0, None
            if done:
                self.run(conn, rid, req)
            elif req.body is not None:
                req.body.discard()
        except Paused:
            self.pause(conn)
            return True
        except Incomplete:
            conn.release()
            return True
        except ConnClosed as exc:
            self.log(LOG_WARN, "fastcgi: closing a connection: %s" % exc)
            return False
        conn.release()
        return conn.keep and not conn.cut_short

    def finish(self, conn):
        """Serves the request that has begun on conn, waiting for the rest
        of it; True: the connection is kept."""
        try:
            while not conn.movable():
                if not self.serve_conn(conn):
                    return False
                if not conn.movable():
                    conn.wait(1)  # POLLIN
        except ConnClosed as exc:
            self.log(LOG_WARN, "fastcgi: closing a connection: %s" % exc)
            return False
        return True

    def read_params(self, conn):
        """Reads records up to the end of a request's params; returns the
        params, what make_environ makes of them when the fast path made it
        already (else None), and whether the request's STDIN has ended with
        them; or None when the web server closed the connection between
        requests."""
        fast = self.fast
        while True:
            if not conn.rid and not conn.buffered():
                try:
                    conn.fill()
                except ConnClosed:
                    return None
            if fast is not None and not conn.rid:
                got = fast(conn.mem, conn.start, conn.end, MAX_PARAMS_BYTES, MAX_PARAMS, self.fast_mount)
                if got is not None:
                    conn.start, conn.rid, conn.keep, ended, made = got
                    return made[0], made, ended
                fast = None  # the rest of this request is read here
            kind, r, content = conn.record()
            if r == 0:
                self.management(conn, kind, content)
            elif kind == FCGI_BEGIN:
                if len(content) < 3:
                    raise ConnClosed("short BEGIN_REQUEST")
                role = (content[0] << 8) | content[1]
                if conn.rid:
                    conn.send(end_request(r, CANT_MPX_CONN))
                elif role != FCGI_RESPONDER:
                    conn.send(end_request(r, UNKNOWN_ROLE))
                else:
                    conn.rid, conn.keep = r, bool(content[2] & FCGI_KEEP_CONN)
            elif r != conn.rid:
                continue  # a record of a request that ended or never began
            elif kind == FCGI_ABORT:
                conn.send(end_request(r))
                conn.rid, conn.params, conn.params_size = 0, (), 0
            elif kind == FCGI_PARAMS:
                if not content:
                    pairs = {}
                    decode_pairs(b"".join(conn.params), pairs, MAX_PARAMS)
                    conn.params, conn.params_size = (), 0
                    return pairs, None, False
                conn.params_size += len(content)
                if conn.params_size > MAX_PARAMS_BYTES:
                    raise ConnClosed("params over %d bytes" % MAX_PARAMS_BYTES)
                conn.params += (bytes(content),)
            elif kind != FCGI_DATA:
                raise ConnClosed("record type %d before the params ended" % kind)

    def read_stdin(self, conn, body):
        """Reads the request's STDIN to its end, into body (None: dropped);
        False if the web server aborted the request."""
        rid = conn.rid
        while True:
            kind, r, content = conn.record()
            if r == 0:
                self.management(conn, kind, content)
            elif r != rid:
                if kind == FCGI_BEGIN:
                    conn.send(end_request(r, CANT_MPX_CONN))
            elif kind == FCGI_STDIN:
                if not content:
                    return True
                if body is not None:
                    if not self.draining and not body.fits(len(content)):
                        conn.unread()
                        raise Paused
                    body.add(content, self.clock())
            elif kind == FCGI_ABORT:
                conn.send(end_request(rid))
                return False
            elif kind != FCGI_DATA:
                raise ConnClosed("record type %d inside the request body" % kind)

    def management(self, conn, kind, content):
        if kind == FCGI_GET_VALUES:
            asked = {}
            decode_pairs(content, asked, MAX_PARAMS)
            known = {"FCGI_MAX_CONNS": self.max_conns, "FCGI_MAX_REQS": self.max_conns, "FCGI_MPXS_CONNS": "0"}
            out = b""
            for name in asked:
                if name in known:
                    n, v = name.encode(), known[name].encode()
                    out += bytes((len(n), len(v))) + n + v
            pad = -len(out) & 7
            conn.send(RECORD.pack(1, FCGI_GET_VALUES_RESULT, 0, len(out), pad) + out + bytes(pad))
        else:
            conn.send(RECORD.pack(1, FCGI_UNKNOWN_TYPE, 0, 8, 0) + bytes((kind,)) + bytes(7))

    def prepare(self, pairs, made):
        """The Pending request for params that have come whole; made: what
        make_environ makes of them, when the fast path made it."""
        req = Pending()
        req.head = pairs.get("REQUEST_METHOD") == "HEAD"
        if self.access_log:
            req.line = (pairs.get("REQUEST_METHOD", ""), pairs.get("REQUEST_URI", ""), self.clock())
        try:
            req.environ, length, req.to_eof = made or make_environ(pairs, self.mount)
        except Refused as exc:
            self.log(LOG_WARN, "request refused: %s" % exc)
            req.refused = exc.status
            return req
        # The whole body is read before the app runs: a web server may stop
        # sending it once the response begins (nginx does).
        if length > 0 or req.to_eof:
            req.body = Body(length)
        return req

    def run(self, conn, rid, req):
        global stop_pending, stop_raised
        stop_pending = stop_raised = False
        self.served += 1
        if self.board is not None:
            SERVED.pack_into(self.board, 64 + 8 * self.slot, self.served)
        resp = FastCGIResponse(conn, rid, req.head, self.ctl, self.fast_head)
        try:
            if req.refused:
                resp.refuse(req.refused)
            else:
                self.respond(conn, rid, req, resp)
        finally:
            if self.access_log or resp.aborted:
                self.access(req, resp)

    def access(self, req, resp):
        """Sends the bridge an access-log entry: what the client got. A
        request the web server gave up gets one, as nginx logs it (499),
        with the access log or without: it is the one line such a request
        gets."""
        if self.access_log:
            method, uri, start = req.line
        else:
            env = req.environ
            method, uri, start = env.get("REQUEST_METHOD", ""), env.get("REQUEST_URI", ""), self.started
        status = "499" if resp.aborted else resp.status.decode("latin-1")
        entry = "\0".join((method, uri, status, str(resp.body_sent()),
                            str(int((self.clock() - start) * 1e6)))).encode("utf-8", "surrogateescape")
        self.ctl.write(HEADER.pack(ACCESS, 0, 0, len(entry)) + entry)
        self.ctl.flush()

    def respond(self, conn, rid, req, resp):
        environ = req.environ
        environ.update(FASTCGI_ENVIRON)
        environ["wsgi.input"] = req.body.reader() if req.body else io.BytesIO()
        if req.to_eof:
            environ["wsgi.input_terminated"] = True
        # started first: an alarm that fires before current is set must
        # not measure this request by the last one's start.
        started = self.started = self.clock()
        timed = self.timeout or self.board is not None
        if timed:
            self.stalled = False
            self.current, self.current_resp = conn, resp
            alarm_at = self.alarm_at
            if alarm_at is None or alarm_at > started + STALL_AFTER:
                self.watch(started)
            if self.timeout and self.board is not None:
                # The bridge kills this worker if the flag stays up past
                # the timeout: an app stuck where Stop cannot reach it.
                self.board[RUNNING + self.slot] = 1
        try:
            exiting = run_app(self.app, environ, resp)
        except BrokenPipeError as exc:
            raise ConnClosed(str(exc)) from None
        finally:
            if timed:
                if self.timeout and self.board is not None:
                    self.board[RUNNING + self.slot] = 0
                if self.watching:
                    self.watch_abort(False)
                self.current = self.current_resp = None
        if resp.gone:
            conn.keep = False  # closed without a word: nobody listens
        elif resp.aborted:
            conn.send(end_request(rid))
        conn.cut_short = resp.cut_short
        if exiting:
            self.ctl.write(HEADER.pack(FINISHED, EXITING, 0, 0))
            self.ctl.flush()
            raise SystemExit(0)


def load_fastpath(fd, log):
    """Loads the C fast path (bridge/fastpath/fastpath.c), which the bridge passes
    as a shared object on fd, and returns the module; None,
    logged, when this Python cannot load it (a debug or free-threaded
    build cannot load the stable ABI): the worker does its work in
    Python then, which is slower but the same."""
    import _imp

    class Spec:  # what _imp reads of a ModuleSpec; importlib costs 1 MiB
        name = "_fastpath"
        origin = "/proc/self/fd/%d" % fd

    try:
        module = _imp.create_dynamic(Spec)
        _imp.exec_dynamic(module)
        return module
    except Exception as exc:
        log(LOG_WARN, "the C fast path did not load (%s: %s); requests are read in Python, "
            "which costs more CPU" % (type(exc).__name__, exc))
        return None
    finally:
        os.close(fd)


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


def watch_list(files, imported_at):
    """The files to watch with their mtimes as imported. A file changed
    while the app imported (or just before: file times are coarse) counts
    as changed already, as its new code may not be what runs. The change
    time says so, not the mtime: an mtime can be set to anything, and one
    in the future (a copy from a machine whose clock is ahead, or a touch
    ahead) must neither hide a change made during the import nor reload
    every new worker of a file that is not changing."""
    import time
    now = time.time_ns()
    out = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, None))
            continue
        seen = st.st_mtime_ns
        if imported_at - 20_000_000 < st.st_ctime_ns <= now:
            seen = -1
        out.append((path, seen))
    return out


def keep_freed_blocks():
    """Frees one block of 2 * BODY_MEMORY, so that glibc's malloc keeps
    the memory of a request's large blocks for the next request. It gives
    memory back to the system when more than twice its mmap threshold lies
    free at the top of its heap, and raises that threshold (from 128 KiB,
    unless set by hand) to the size of each larger block that was mapped
    and freed. A request with a 1 MiB body has two such blocks alive at
    once (the pieces received, and the bytes the app reads): without this,
    freeing them gave the memory back after every request and the next
    faulted it in again, 480 page faults and over 1 ms of CPU per 1 MiB
    POST. After it, the heap keeps up to 4 MiB free at its top."""
    block = bytes(2 * BODY_MEMORY)
    del block


def main(argv):
    opts = None
    if argv and argv[0] == "--fastcgi":
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
    if opts is not None:
        fds.append(5)
        if "slot" in opts:
            fds += [6, 7, 8]  # the lobby's two ends and the board
        if "fastpath" in opts:
            fds.append(int(opts["fastpath"]))
    for fd in fds:
        os.set_inheritable(fd, False)
    _signal.signal(_signal.SIGUSR1, on_stop)
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
        data = summary.encode("utf-8", "replace")
        out.write(HEADER.pack(IMPORT_FAILED, 0, 0, len(data)) + data)
        out.flush()
        return 3
    files = app_files(spec, pythonpath)
    if opts is not None and "reload-on-change" in opts:
        opts["files"] = watch_list(files, imported_at)
    data = "\n".join(files).encode("utf-8", "surrogateescape")
    out.write(HEADER.pack(READY, 0, 0, len(data)) + data)
    out.flush()
    if opts is not None:
        # _socket, not socket: socket imports enum, selectors and collections,
        # a MiB in every worker of an app that needs none of them.
        import _socket
        listener = _socket.socket(fileno=5)
        listener.setblocking(False)
        server = FastCGIServer(app, listener, out, opts)
        _signal.signal(_signal.SIGALRM, server.on_alarm)
        _signal.signal(_signal.SIGIO, server.on_io)
        return server.serve()
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

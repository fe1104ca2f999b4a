"""The WSGI semantics both protocols share (PEP 3333): start_response and
write(), the checks of the app's status, headers and body chunks, headers
held back until the first non-empty chunk, the error page, running the app
with its iterable closed on every path, and stopping a request inside the
app. How a response travels (frames to Go, or FastCGI records to the web
server) is left to the subclasses of Response in pipe and fastcgi.response.

Stopping: the bridge stops the request in progress (the client went away,
or it ran out of time) by a signal whose handler is on_stop: Stop is raised
inside the app, so its iterable is closed and the worker serves on. The
handler raises only while app code runs, never in the middle of writing,
and once per request: the bridge signals again while the request goes on,
as one that lands just before a blocking call is handled only when the
call returns.
"""

import sys

from wsgibridge.frames import (
    ABORTED, APP_ERROR, DATA, EXITING, FINISHED, FLUSH, HEAD, LOG, LOG_ERROR, LOG_WARN, MAX_FRAME,
    ProtocolError)

MAX_HEADER_BLOCK = 32 * 1024
REASONS = {400: "Bad Request", 504: "Gateway Timeout"}  # of the error pages made here

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

class BodyError(OSError):
    """Raised by wsgi.input where the request body broke off (the client
    went away, or sent a malformed body): the app never reads a cut body
    as a whole one. Unhandled, the client gets 400."""


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
    """Validates a status and header list and returns the CGI header block
    and the Content-Length. A 200 without a Location header has no Status
    line: it is CGI's default, and a web server that passes the CGI
    header on (Caddy) would show it to the client."""
    raw = check_status(status)
    if type(headers) is not list:
        raise AppError("response headers must be a list, not %s" % type(headers).__name__)
    lines = [b"Status: " + raw]
    length = None
    location = False
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
        if lower == "location":
            location = True  # never cached: a hit must not hide it
        elif len(value) <= 64 and len(checked_lines) < 1024:
            checked_lines[item] = (line, length if lower == "content-length" else None)
    if raw[:4] == b"200 " and not location and len(lines) > 1:
        del lines[0]
    lines.append(b"\r\n")
    block = b"\r\n".join(lines)
    if len(block) > MAX_HEADER_BLOCK:
        raise AppError("response headers are %d bytes, over the %d-byte limit"
                       % (len(block), MAX_HEADER_BLOCK))
    return block, length

def status_of(block):
    """The status code of a header block, 200 when it has no Status line."""
    return block[8:11] if block[:8] == b"Status: " else b"200"


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
    """start_response, write() and the lazy sending of headers for one
    request. A subclass sends: frame(kind, payload, flags) takes the
    response as frames (HEAD, DATA, LOG, FINISHED, ABORTED; see frames),
    flush() passes on what it holds."""

    # Whether the response ends before the app's close() runs (see the
    # subclasses).
    finish_first = False
    # The C fast path's header_block, which returns None where the Python
    # must judge (see fastcgi/fastpath.c).
    fast_head = None
    # The state of a response not yet begun (defaults, as on Conn).
    block = length = None
    sent = 0
    headers_sent = False
    # The client left (known under FastCGI only): the Stop that ends the
    # app then is no error of the app's.
    aborted = False
    # Whether the bridge, which stops requests over the pipe, logs a Stop
    # itself, knowing why it stopped (a timeout, or the client left): the
    # worker then only tells it where the app was. A FastCGI worker
    # stops its requests itself and reports them.
    bridge_stops = False

    def __init__(self, rid, omit_body):
        self.rid = rid
        self.omit_body = omit_body

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
        code = status_of(self.block)
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
        """Ends the request after an error: an error page if nothing was
        sent, else an abort; both carry the summary."""
        if self.headers_sent:
            self.frame(ABORTED, summary.encode("utf-8", "replace"), EXITING if exiting else 0)
        else:
            reason = REASONS.get(status, "Internal Server Error")
            body = reason.encode() + b"\n"
            self.frame(HEAD, b"Status: %d %s\r\n"
                       b"Content-Type: text/plain; charset=utf-8\r\n"
                       b"Content-Length: %d\r\n\r\n" % (status, reason.encode(), len(body)))
            if not self.omit_body:
                self.frame(DATA, body)
            self.frame(FINISHED, summary.encode("utf-8", "replace"),
                       (APP_ERROR if status == 500 else 0) | (EXITING if exiting else 0))
        self.flush()


def describe(environ):
    return "%s %s%s" % (environ.get("REQUEST_METHOD"), environ.get("SCRIPT_NAME", ""),
                        environ.get("PATH_INFO", ""))


def where(exc):
    """The frames where exc was raised, innermost last, without run_app's
    above them and the signal handler's below."""
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)[1:]
    if frames and frames[-1].name == on_stop.__name__:
        frames = frames[:-1]
    return "".join(traceback.format_list(frames)).rstrip()


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
    # Both protocols end the input where the body ends (E frame, the end
    # of STDIN) and never give more than CONTENT_LENGTH: an app may read
    # wsgi.input to its end whatever CONTENT_LENGTH says.
    "wsgi.input_terminated": True,
}


def run_app(app, environ, resp):
    """Calls the app and sends its response; returns True when the worker
    should exit after this request. A stop signalled before it begins is
    an earlier request's, or lost to the signal sent again (see the top)."""
    global app_running, stop_pending, stop_raised
    stop_pending = stop_raised = False
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
    except (ProtocolError, BrokenPipeError):
        raise
    except BaseException as exc:
        app_running = False
        if resp.aborted and isinstance(exc, Stop):
            return False  # the client left: nothing to send, nothing to report
        if resp.bridge_stops and isinstance(exc, Stop):
            resp.fail(where(exc), False, 504)
            return False
        if isinstance(exc, BodyError):
            # The client's fault, not the app's: a 400, no traceback; the
            # bridge logged the break when it saw it.
            resp.fail("the request body of %s broke off: %s" % (describe(environ), exc), False, 400)
            return False
        # Interpreter state is suspect after these; a fresh worker is cheap.
        exiting = isinstance(exc, (SystemExit, KeyboardInterrupt, MemoryError))
        resp.fail(report(resp, environ, exc), exiting, 504 if isinstance(exc, Stop) else 500)
        return exiting
    return False

"""Requests sent by Go over the frames (frames): the http and cgi modes,
where the Go side is the front and the worker runs one request at a time.
It covers wsgi.input over B frames, the response as H/D/F/X frames, and
the loop that serves request after request until Go closes fd 3. The WSGI
rules themselves are wsgi's.
"""

import marshal

from wsgibridge import wsgi
from wsgibridge.frames import (
    BODY, BODY_END, BROKEN, HEADER, REQUEST, RUN_ONCE, ProtocolError, read_exact, read_header)
from wsgibridge.wsgi import BASE_ENVIRON, BodyError, Response, run_app


class Input:
    """wsgi.input: the request body, read from B frames up to the E frame.
    A body that broke off (the E frame says why) is never read as whole:
    a read that reaches the break raises BodyError."""

    def __init__(self, rin, rid):
        self._rin = rin
        self._rid = rid
        self._buf = b""
        self._eof = False
        self._broken = None  # why the body broke off

    def _next(self):
        """The next piece of the body (b"" at its end). A stop that comes
        while a frame is read waits until it is read whole: raised in the
        middle, it would leave the rest of the frame to be read as the
        next one's header."""
        if self._eof:
            return b""
        running, wsgi.app_running = wsgi.app_running, False
        try:
            kind, flags, rid, n = read_header(self._rin)
            if rid != self._rid:
                raise ProtocolError("body frame for request %d during request %d" % (rid, self._rid))
            if kind not in (BODY, BODY_END):
                raise ProtocolError("frame %r inside a request body" % chr(kind))
            data = read_exact(self._rin, n)
        finally:
            wsgi.app_running = running
        if kind == BODY_END:
            self._eof = True
            if flags & BROKEN:
                self._broken = data.decode("utf-8", "replace")
            data = b""
        if running and wsgi.stop_pending:
            wsgi.stop_raised = True
            raise wsgi.stopped()
        return data

    def _short(self, got, wanted):
        """Raises BodyError when the body broke before it gave what a read
        wanted (-1: all)."""
        if self._eof and self._broken is not None and (wanted < 0 or got < wanted):
            raise BodyError(self._broken)

    def drain(self):
        while not self._eof:
            self._next()

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._buf]
            while not self._eof:
                parts.append(self._next())
            self._buf = b"".join(parts)
            self._short(0, -1)
            data, self._buf = self._buf, b""
            return data
        buf = self._buf
        if len(buf) < size and not self._eof:
            parts, have = [buf], len(buf)
            while have < size and not self._eof:
                chunk = self._next()
                parts.append(chunk)
                have += len(chunk)
            buf = b"".join(parts)
        self._buf = buf
        self._short(len(buf), size)
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
            if 0 <= size <= len(buf):
                end = len(buf)
                break
            if self._eof:
                self._buf = buf
                self._short(0, -1)  # a line that runs into the break
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


class PipeResponse(Response):
    """A Response sent to Go as frames on out. It does not end before the
    app's close() runs: the bridge would send the next request, and
    perhaps the signal that stops it, while this one's close() still runs."""

    bridge_stops = True

    def __init__(self, out, rid, omit_body):
        Response.__init__(self, rid, omit_body)
        self.out = out

    def frame(self, kind, payload=b"", flags=0):
        self.out.write(HEADER.pack(kind, flags, self.rid, len(payload)))
        self.out.write(payload)

    def flush(self):
        self.out.flush()


def handle(app, rin, out, flags, rid, payload):
    """Serves one request from the pipe; returns True when the worker should exit after it."""
    environ = marshal.loads(payload)
    environ.update(BASE_ENVIRON)
    environ["wsgi.run_once"] = bool(flags & RUN_ONCE)
    inp = environ["wsgi.input"] = Input(rin, rid)
    exiting = run_app(app, environ, PipeResponse(out, rid, environ["REQUEST_METHOD"] == "HEAD"))
    if not exiting:
        inp.drain()
    return exiting


def serve(app, rin, out):
    """Serves the requests Go sends until it closes fd 3 (rin), or a
    request says the worker must exit; returns the exit status."""
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

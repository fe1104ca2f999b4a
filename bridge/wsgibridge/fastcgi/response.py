"""A wsgi.Response sent to the web server as FCGI_STDOUT records: a short
response in one write with its END_REQUEST, a large one by reference,
record by record; a response cut short ends without END_REQUEST. The WSGI
rules are wsgi's; the records' layout is records'.
"""

from wsgibridge import wsgi
from wsgibridge.fastcgi.records import (
    FCGI_STDOUT, MAX_RECORD_CONTENT, PADDING, RECORD, ConnClosed, cut_records, end_records, stdout_records)
from wsgibridge.frames import ABORTED, DATA, FINISHED, HEAD, send
from wsgibridge.wsgi import Response


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

    def __init__(self, conn, rid, omit_body, ctl, fast_head):
        Response.__init__(self, rid, omit_body)
        self.fast_head = fast_head
        self.conn = conn
        self.ctl = ctl
        self.pending = []

    def frame(self, kind, payload=b"", flags=0):
        if kind == HEAD or kind == DATA:
            if kind == HEAD:
                # status_of, inline: this runs for every response.
                self.status = payload[8:11] if payload[:8] == b"Status: " else b"200"
                self.head_size = len(payload)
            self.pending.append(payload)
            self.size += len(payload)
        elif kind == FINISHED:
            self.finished = True
        elif kind == ABORTED:
            # No END_REQUEST: the response ends with cut_records and the
            # connection is closed, which is how the web server learns that
            # it is incomplete. A response that ended complete stays so, and
            # its connection is kept.
            self.cut_short = not self.aborted and not self.ended
            self.why = payload
        else:
            send(self.ctl, kind, payload, flags, self.rid)

    def body_sent(self):
        """The body bytes that went out: what the client got."""
        return max(self.sent_out - self.head_size, 0)

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
        parts, size = self.pending, self.size
        self.pending, self.size = [], 0
        if self.aborted:
            return
        tail = b""
        if not self.ended:
            if self.finished or self.complete():
                self.ended = True
                tail = end_records(self.rid)
            elif self.cut_short:
                self.ended = True
                tail = cut_records(self.rid, self.why)
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
            wsgi.stop_pending = True
            return
        self.sent_out += size

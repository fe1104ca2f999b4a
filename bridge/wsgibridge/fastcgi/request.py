"""A request on a FastCGI connection, from its BEGIN_REQUEST to its
END_REQUEST: reading its params and body off the connection (waiting
without the app while they come), refusing what is malformed, running the
app and logging what the client got. The loop that gives connections
their turn is server's; the watch over a running request is watch's.
"""

import io

from wsgibridge.spool import Body
from wsgibridge.fastcgi.board import RUNNING, SERVED
from wsgibridge.fastcgi.connection import Incomplete, Paused
from wsgibridge.fastcgi.environ import FASTCGI_ENVIRON, Refused, make_environ
from wsgibridge.fastcgi.records import (
    CANT_MPX_CONN, FCGI_ABORT, FCGI_BEGIN, FCGI_DATA, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_KEEP_CONN,
    FCGI_PARAMS, FCGI_RESPONDER, FCGI_STDIN, FCGI_UNKNOWN_TYPE, MAX_PARAMS, MAX_PARAMS_BYTES, RECORD,
    UNKNOWN_ROLE, ConnClosed, decode_pairs, end_request)
from wsgibridge.fastcgi.response import FastCGIResponse
from wsgibridge.fastcgi.statuspath import path_of
from wsgibridge.fastcgi.watch import STALL_AFTER
from wsgibridge.frames import ACCESS, EXITING, FINISHED, LOG_WARN, send
from wsgibridge.wsgi import run_app


class Pending:
    """A request whose params have come: its environ, and its body as it
    comes (refused: the status it gets instead of running the app)."""

    __slots__ = ("head", "line", "environ", "body", "refused", "answered")

    def __init__(self):
        self.body = self.refused = None
        self.answered = False  # run before its STDIN ended: the rest is drained


# What read_stdin found: the end of STDIN; a body whole before it (the app
# may run, and the rest of STDIN is drained after); an abort.
ENDED, WHOLE, ABORTED = 1, 2, 3


def check_begin(rid, content):
    """A BEGIN_REQUEST has an 8-byte body and a request id other than 0
    (which is the management records'); another is not FastCGI."""
    if len(content) != 8:
        raise ConnClosed("a BEGIN_REQUEST of %d bytes, not 8" % len(content))
    if rid == 0:
        raise ConnClosed("a BEGIN_REQUEST with request id 0")


class Requests:
    """The FastCGIServer's requests (a mixin: the state is the server's)."""

    def serve_conn(self, conn):
        """Reads what has come of the next request on conn, and serves the
        request once it is whole; True: keep the connection (a request
        still coming waits in it)."""
        try:
            req = conn.pending
            if req is not None and req.answered:
                self.read_stdin(conn, None, drain=True)
                conn.rid, conn.pending = 0, None
                if not conn.keep:
                    return False
                req = None
            got = ENDED
            if req is None:
                read = self.read_params(conn)
                if read is None:
                    return False
                params, made, ended = read
                req = conn.pending = self.prepare(params, made)
                if not ended:
                    got = self.read_stdin(conn, req.body)
            else:
                got = self.read_stdin(conn, req.body)
            rid = conn.rid
            if got == WHOLE:
                # Answered now; the rest of its STDIN is read and dropped
                # (the connection is closed at its end, not before, or an
                # unread rest would reset it under the response).
                req.answered = True
                self.run(conn, rid, req)
                if conn.cut_short:
                    return False
                return self.serve_conn(conn)
            conn.rid, conn.pending = 0, None
            if got == ENDED:
                self.check_body(req)
                self.run(conn, rid, req)
            elif req.body is not None:
                req.body.discard()
        except Paused:
            self.pause(conn)
            return True
        except Incomplete:
            if conn.pending is None and not conn.movable():
                self.headers_waiting = True  # see sweep
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
            if kind == FCGI_BEGIN:
                check_begin(r, content)
            if r == 0:
                self.management(conn, kind, content)
            elif kind == FCGI_BEGIN:
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

    def read_stdin(self, conn, body, drain=False):
        """Reads the request's STDIN to its end, into body (None: dropped)
        and returns ENDED; or WHOLE, when the rest has not come yet but body
        has all of its CONTENT_LENGTH (or no body is expected): the app need
        not wait for the web server to end what it will not read. ABORTED
        if the web server aborted the request. drain: the request was
        answered, its STDIN is only read to its end (an abort ends it too,
        unanswered: END_REQUEST went out with the response)."""
        rid = conn.rid
        while True:
            try:
                kind, r, content = conn.record()
            except Incomplete:
                if not drain and (body is None or 0 <= body.limit <= body.size):
                    return WHOLE
                raise
            if kind == FCGI_BEGIN:
                check_begin(r, content)
            if r == 0:
                self.management(conn, kind, content)
            elif r != rid:
                if kind == FCGI_BEGIN:
                    conn.send(end_request(r, CANT_MPX_CONN))
            elif kind == FCGI_STDIN:
                if not content:
                    return ENDED
                if body is not None:
                    if not self.draining and not body.fits(len(content)):
                        conn.unread()
                        raise Paused
                    body.add(content, self.clock())
            elif kind == FCGI_ABORT:
                if not drain:
                    conn.send(end_request(rid))
                return ABORTED
            elif kind != FCGI_DATA:
                raise ConnClosed("record type %d inside the request body" % kind)

    def check_body(self, req):
        """Refuses a request whose STDIN ended short of its CONTENT_LENGTH:
        the app never reads a cut body as a whole one."""
        body = req.body
        if body is not None and body.size < body.limit:
            self.log(LOG_WARN, "request refused: the web server ended the body of %s %s after %d of its "
                     "CONTENT_LENGTH %d bytes" % (req.environ.get("REQUEST_METHOD"), req.environ.get("REQUEST_URI", ""),
                                                  body.size, body.limit))
            body.discard()
            req.body, req.refused = None, 400

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
            req.environ, length, to_eof = made or make_environ(pairs, self.mount)
        except Refused as exc:
            self.log(LOG_WARN, "request refused: %s" % exc)
            req.refused = exc.status
            return req
        # The whole body is read before the app runs: a web server may stop
        # sending it once the response begins (nginx does).
        if length > 0 or to_eof:
            req.body = Body(length)
        return req

    def run(self, conn, rid, req):
        self.served += 1
        board = self.board
        if board is not None:
            board.words[SERVED] = self.served
        # started before anything: an alarm that fires before current is
        # set must not measure this request by the last one's start.
        self.started = self.clock()
        resp = FastCGIResponse(conn, rid, req.head, self.ctl, self.fast_head)
        try:
            if req.refused:
                resp.refuse(req.refused)
            else:
                app = self.app
                if self.paths is not None:
                    app = self.paths.get(path_of(req.environ), app)
                self.respond(conn, rid, req, resp, app)
        finally:
            if board is not None and board.stats:
                board.count(b"499" if resp.aborted else resp.status, self.clock() - self.started)
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
        send(self.ctl, ACCESS, entry)

    def respond(self, conn, rid, req, resp, app):
        environ = req.environ
        environ.update(FASTCGI_ENVIRON)
        body = req.body
        if body is not None and body.limit < 0:
            # A body sent without a length (chunked, or Caddy's
            # CONTENT_LENGTH -1) has come whole: the app gets its length,
            # which it can trust, as it gets nginx's for a chunked one.
            environ["CONTENT_LENGTH"] = str(body.size)
        environ["wsgi.input"] = body.reader() if body else io.BytesIO()
        board = self.board
        if board is not None:
            # What runs, for the supervisor: it kills a worker whose app
            # runs past the timeout and the Stop raised in it.
            board.words[RUNNING] = self.served
        timed = self.timeout or board is not None
        if timed:
            self.stalled = False
            self.current, self.current_resp, self.current_req = conn, resp, req
            alarm_at, started = self.alarm_at, self.started
            if alarm_at is None or alarm_at > started + STALL_AFTER:
                self.watch(started)
        try:
            exiting = run_app(app, environ, resp)
        except BrokenPipeError as exc:
            raise ConnClosed(str(exc)) from None
        finally:
            if board is not None:
                board.words[RUNNING] = 0
            if timed:
                if self.watching:
                    self.watch_abort(False)
                self.current = self.current_resp = self.current_req = None
        if resp.aborted and not resp.gone:
            conn.send(end_request(rid))
        # Closed at once: a response that failed, or a web server that is
        # gone (nobody listens).
        conn.cut_short = resp.cut_short or resp.gone
        if exiting:
            send(self.ctl, FINISHED, flags=EXITING)
            raise SystemExit(0)

"""The alarm that watches the request a FastCGI worker is running, as
PHP-FPM's request stages drive its timeouts: a request still running
after STALL_AFTER hands the worker's other connections to idle peers and
starts listening for its abort (FCGI_ABORT_REQUEST, or the connection
closed, heard by SIGIO); one past the timeout is stopped. The stop itself
(Stop raised inside the app) is wsgi's; the server loop and the requests
are server's and request's.
"""

import os
import time

# _signal, not signal: the signal module imports enum, 4 ms of a cold start.
import _signal

from wsgibridge import wsgi
from wsgibridge.fastcgi.records import FCGI_ABORT, RECORD
from wsgibridge.frames import LOG_ERROR

STALL_AFTER = 0.02  # seconds
STOP_AGAIN = 0.1  # seconds between the signals that stop a request


class Watch:
    """The FastCGIServer's watch over its running request (a mixin: the
    state is the server's: current, current_resp, current_req, started,
    stalled, watching, alarm_at, timeout, board, conns). A request still
    running after STALL_AFTER is told on the board too (board.running),
    for the status page and the slow log."""

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
        if self.current is None or wsgi.stop_raised:
            _signal.setitimer(_signal.ITIMER_REAL, 0)  # the timeout's repeats
            return
        elapsed = self.clock() - self.started
        if self.timeout and elapsed >= self.timeout:
            if wsgi.app_running:
                self.log(LOG_ERROR, "the app ran longer than the %gs timeout; stopping it" % self.timeout)
            return wsgi.on_stop(signum, frame)
        watch_stall = self.board is not None and not self.stalled
        if watch_stall and elapsed >= STALL_AFTER:
            if not wsgi.app_running:
                return self.arm(0.005)  # it is writing its response: look again soon
            self.stalled = True
            env = self.current_req.environ
            self.board.running(time.time_ns() - int(elapsed * 1e9), env.get("REQUEST_METHOD", ""),
                               env.get("REQUEST_URI") or env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""))
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
        """Looks for the abort of the request in progress. It may land while
        the worker writes (a streaming app writes all the time): then the
        Stop waits for the write to end (wsgi.on_stop), as no second signal
        would come."""
        resp = self.current_resp
        if resp is None or resp.aborted or resp.ended:
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
        wsgi.on_stop(signum, frame)

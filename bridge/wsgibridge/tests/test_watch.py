"""The alarm that watches a running FastCGI request (wsgibridge.fastcgi.watch)."""

import unittest

from wsgibridge.fastcgi import board, connection, watch
from wsgibridge.tests.support import Servers, request


class WatchTest(Servers, unittest.TestCase):
    """Every request of a FastCGI worker gets the look of the alarm at
    STALL_AFTER, whatever an earlier request left armed (its timeout)."""

    def setUp(self):
        self.calls = []
        real = watch._signal.setitimer
        watch._signal.setitimer = lambda which, delay, again=0: self.calls.append(delay)
        self.addCleanup(setattr, watch._signal, "setitimer", real)

    def test_a_request_after_a_slow_one_is_looked_at_in_time(self):
        import _socket
        import socket
        now = [100.0]
        seen = []

        def app(environ, start_response):
            path = environ["PATH_INFO"]
            if path == "/slow":
                now[0] += 2 * watch.STALL_AFTER
                srv.on_alarm(watch._signal.SIGALRM, None)  # the alarm fires: a stall
            else:
                seen.append(list(self.calls))
            now[0] += 0.001
            start_response("200 OK", [])
            return [b"x"]
        srv = self.server(app)
        srv.socket, srv.clock, srv.timeout = _socket, lambda: now[0], 60.0
        srv.board = board.Board(bytearray(board.SIZE), 0, False)
        for path in (b"/slow", b"/quick", b"/quick", b"/quick"):
            ours, theirs = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            theirs.sendall(request(path))
            self.assertTrue(srv.serve_conn(connection.Conn(ours)))
        self.assertEqual(self.calls[0], watch.STALL_AFTER, "the slow request is looked at")
        self.assertGreater(self.calls[1], 50, "then its timeout is armed")
        self.assertEqual(seen[0][-1], watch.STALL_AFTER, "the next request is looked at by STALL_AFTER, not at the timeout")
        self.assertEqual(seen[2], seen[0], "a run of quick requests arms the alarm once, not once each")

    def test_an_abort_heard_while_the_worker_writes_stops_the_app_after_the_write(self):
        """The abort's signal may land while the worker writes a chunk (a
        streaming app writes all the time): it is not lost, the app is
        stopped as the write returns, and the request ends with one
        END_REQUEST."""
        import _socket
        import socket
        from wsgibridge.fastcgi import records
        events = []

        def app(environ, start_response):
            start_response("200 OK", [])
            try:
                for i in range(50):
                    yield b"chunk %d\n" % i
                    events.append(i)
            finally:
                events.append("finally")
        srv = self.server(app)
        srv.socket = _socket
        srv.board = board.Board(bytearray(board.SIZE), 0, False)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        conn = connection.Conn(ours)
        real_send = conn.send
        sent = []

        def send(data):
            real_send(data)
            sent.append(data)
            if len(sent) == 2:
                # The web server's abort, and its signal, while the worker writes.
                theirs.sendall(records.RECORD.pack(1, records.FCGI_ABORT, 1, 0, 0))
                srv.watch_abort(True)
        conn.send = send
        theirs.sendall(request(b"/"))
        srv.serve_conn(conn)
        self.assertEqual(events, [0, "finally"], "stopped as the write it was heard in returned")
        out = b"".join(sent)
        self.assertEqual(out.count(records.end_request(1)), 1, "one END_REQUEST")
        self.assertTrue(out.endswith(records.end_request(1)))

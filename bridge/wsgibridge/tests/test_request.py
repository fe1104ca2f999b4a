"""A FastCGI request read off a connection and run (wsgibridge.fastcgi.request
and response)."""

import contextlib
import io
import unittest

from wsgibridge import spool
from wsgibridge.fastcgi import connection, records
from wsgibridge.tests.support import (
    Closing, END, FAST, Servers, Wire, begin, echo, pairs_of, parse, record, request)


class FastCGIServeTest(Servers, unittest.TestCase):
    """One request through FastCGIServer.serve_conn: what goes out, in
    which writes, and whether the connection is kept."""

    def serve(self, app, path=b"/"):
        ctl = io.BytesIO()
        srv = self.server(app, ctl)
        wire = self.wire = Wire(request(path))
        conn = connection.Conn(wire)
        with contextlib.redirect_stderr(io.StringIO()):  # the tracebacks of the apps that raise
            kept = srv.serve_conn(conn)
        return wire.sends, kept, parse(ctl.getvalue())

    def test_a_generator_ends_with_its_content_length(self):
        events = []

        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", "5")])

            def body():
                yield b"hello"
                events.append("resumed")
            return Closing(body(), events)
        sends, kept, _ = self.serve(app)
        self.assertEqual(len(sends), 1, "body and END_REQUEST in one write")
        self.assertIn(b"\r\n\r\nhello", sends[0])
        self.assertTrue(sends[0].endswith(records.end_records(1)))
        self.assertEqual(events, ["resumed", "closed"], "the iterable still runs to its end and is closed")
        self.assertTrue(kept)

    def test_a_response_that_iterates_a_list_goes_in_one_write_before_close(self):
        events = []
        test = self

        class Response:  # as Django's HttpResponse: no length, iterates its list
            def __iter__(self):
                return iter([b"hel", b"lo"])

            def close(self):
                events.append(len(test.wire.sends))

        def app(environ, start_response):
            start_response("200 OK", [])
            return Response()
        sends, kept, _ = self.serve(app)
        self.assertEqual(len(sends), 1)
        self.assertIn(b"\r\n\r\nhello", sends[0])
        self.assertTrue(sends[0].endswith(records.end_records(1)))
        self.assertEqual(events, [1], "the response was out when close() ran")
        self.assertTrue(kept)

    def test_a_generator_without_length_ends_after_it(self):
        def app(environ, start_response):
            start_response("200 OK", [])
            yield b"hello"
        sends, kept, _ = self.serve(app)
        self.assertEqual(len(sends), 2)
        self.assertEqual(sends[1], records.end_records(1))
        self.assertTrue(kept)

    @staticmethod
    def hello_then_raise(length):
        """An app that yields b"hello" under the given Content-Length, then raises."""
        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", str(length))])
            yield b"hello"
            raise RuntimeError("late")
        return app

    def test_an_error_after_the_whole_body_keeps_the_connection(self):
        sends, kept, log = self.serve(self.hello_then_raise(5))
        self.assertEqual(len(sends), 1)
        self.assertEqual(b"".join(sends).count(END), 1)
        self.assertTrue(kept, "the client has its whole response; the connection serves on")
        self.assertIn("late", b"".join(payload for kind, _, payload in log if kind == "L").decode())

    def test_an_error_before_the_whole_body_closes_the_connection(self):
        sends, kept, _ = self.serve(self.hello_then_raise(10))
        self.assertNotIn(END, b"".join(sends), "no END_REQUEST for a response cut short")
        self.assertFalse(kept, "closing is how the web server learns it")
        out = b"".join(sends)
        self.assertTrue(out.endswith(records.NOT_A_RECORD), "and bytes that are not a record, so that a web "
                        "server reading to the connection's end does not take the response for complete")
        stderr = out[out.rindex(b"wsgibridge: the response is cut short: "):-len(records.NOT_A_RECORD)]
        self.assertIn(b"RuntimeError: late", stderr, "a STDERR record says why, for the web server's log")

    def test_a_chunked_error_closes_with_the_same_ending(self):
        def app(environ, start_response):
            start_response("200 OK", [])
            yield b"partial"
            raise RuntimeError("late")
        sends, kept, _ = self.serve(app)
        out = b"".join(sends)
        self.assertNotIn(END, out)
        self.assertTrue(out.endswith(records.NOT_A_RECORD))
        self.assertFalse(kept)

    def test_a_begin_request_that_is_not_one_closes_the_connection(self):
        get = request(b"/")
        params = get[16:]  # what follows the BEGIN_REQUEST record
        for name, bad_begin in [
            ("3 bytes", record(records.FCGI_BEGIN, 1, bytes((0, records.FCGI_RESPONDER, 1)), 5)),
            ("7 bytes", record(records.FCGI_BEGIN, 1, bytes((0, records.FCGI_RESPONDER, 1, 0, 0, 0, 0)), 1)),
            ("16 bytes", record(records.FCGI_BEGIN, 1, bytes((0, records.FCGI_RESPONDER, 1)) + bytes(13), 0)),
            ("request id 0", record(records.FCGI_BEGIN, 0, bytes((0, records.FCGI_RESPONDER, 1, 0, 0, 0, 0, 0)))),
        ]:
            with self.subTest(name):
                ctl = io.BytesIO()
                srv = self.server(echo, ctl)
                wire = Wire(bad_begin + params)
                self.assertFalse(srv.serve_conn(connection.Conn(wire)), "the connection is closed")
                self.assertEqual(wire.sends, [], "nothing is served")
                logged = b"".join(p for kind, _, p in parse(ctl.getvalue()) if kind == "L")
                self.assertIn(b"BEGIN_REQUEST", logged)

    def test_a_body_of_unknown_length_comes_whole_with_its_length(self):
        seen = []

        def app(environ, start_response):
            seen.append((environ.get("CONTENT_LENGTH"), environ["wsgi.input"].read()))
            return echo(environ, start_response)
        for framing in ((b"CONTENT_LENGTH", b"-1"), (b"HTTP_TRANSFER_ENCODING", b"chunked")):
            params = pairs_of([(b"REQUEST_METHOD", b"POST"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                               (b"PATH_INFO", b"/"), framing])
            data = (begin(1) + record(records.FCGI_PARAMS, 1, params) + record(records.FCGI_PARAMS, 1, b"")
                    + record(records.FCGI_STDIN, 1, b"hello ") + record(records.FCGI_STDIN, 1, b"world")
                    + record(records.FCGI_STDIN, 1, b""))
            self.assertTrue(self.server(app).serve_conn(connection.Conn(Wire(data))))
        self.assertEqual(seen, [("11", b"hello world")] * 2)

    def test_every_request_may_read_its_input_to_the_end(self):
        seen = []

        def app(environ, start_response):
            seen.append(environ.get("wsgi.input_terminated"))
            return echo(environ, start_response)
        for data in (request(b"/"), request(b"/", body=(b"abc",))):
            srv = self.server(app)
            self.assertTrue(srv.serve_conn(connection.Conn(Wire(data))))
        self.assertEqual(seen, [True, True], "with CONTENT_LENGTH too: the input ends where STDIN does")

    def test_a_body_short_of_its_length_is_refused(self):
        ran = []

        def app(environ, start_response):
            ran.append(environ["wsgi.input"].read())
            return echo(environ, start_response)
        ctl = io.BytesIO()
        srv = self.server(app, ctl)
        data = request(b"/", body=(b"hello",)).replace(b"CONTENT_LENGTH5", b"CONTENT_LENGTH9")
        wire = Wire(data + request(b"/", body=(b"whole",)))
        conn = connection.Conn(wire)
        self.assertTrue(srv.serve_conn(conn))
        self.assertIn(b"Status: 400 Bad Request\r\n", wire.sends[0])
        self.assertTrue(wire.sends[0].endswith(END))
        self.assertEqual(ran, [], "the app never saw it")
        logged = [p for k, _, p in parse(ctl.getvalue()) if k == "L"]
        self.assertEqual(len(logged), 1)
        self.assertIn(b"after 5 of its CONTENT_LENGTH 9 bytes", logged[0])
        self.assertTrue(srv.serve_conn(conn))
        self.assertEqual(ran, [b"whole"], "the next request is served")

    def test_a_whole_body_runs_the_app_before_its_stdin_ends(self):
        for keep in (True, False):
            with self.subTest(keep=keep):
                data = request(b"/", keep=keep, body=(b"hello",))
                end = record(records.FCGI_STDIN, 1, b"")
                late = record(records.FCGI_STDIN, 1, b"more", 4) + end
                reads = []

                def app(environ, start_response):
                    inp = environ["wsgi.input"]
                    reads.extend((inp.read(5), inp.read(10), inp.read()))
                    start_response("200 OK", [("Content-Length", "2")])
                    return [b"ok"]
                srv = self.server(app)
                wire = Wire(data[:-len(end)])
                conn = connection.Conn(wire)
                self.assertTrue(srv.serve_conn(conn), "open until the web server has sent all it will")
                self.assertEqual(reads, [b"hello", b"", b""], "CONTENT_LENGTH bytes, then the end, at once")
                self.assertEqual(len(wire.sends), 1)
                self.assertTrue(wire.sends[0].endswith(END), "answered before STDIN ended")
                self.assertFalse(conn.movable(), "the rest of its STDIN is still to come")
                wire.data = late
                self.assertEqual(srv.serve_conn(conn), keep, "what came after is drained, then the connection goes on or closes")
                self.assertEqual(reads, [b"hello", b"", b""], "nothing of it reaches the app")
                self.assertEqual(len(wire.sends), 1, "and it gets no second answer")
                self.assertTrue(conn.movable())
                if keep:
                    wire.data = request(b"/")
                    self.assertTrue(srv.serve_conn(conn))
                    self.assertEqual(len(wire.sends), 2, "the next request is served")

    def test_a_request_in_two_pieces_waits_for_the_second_without_the_app(self):
        data = request(b"/", body=(b"hello", b" world"))
        whole = len(data) - len(record(records.FCGI_STDIN, 1, b""))  # the body all there, not its end
        for cut in range(1, len(data)):
            calls = []

            def app(environ, start_response):
                calls.append(1)
                return echo(environ, start_response)
            srv = self.server(app)
            wire = Wire(data[:cut])
            conn = connection.Conn(wire)
            self.assertTrue(srv.serve_conn(conn), cut)
            if cut < whole:
                self.assertEqual((calls, wire.sends), ([], []), "cut at %d: nothing runs before the rest" % cut)
            else:
                self.assertEqual(calls, [1], "cut at %d: the body is whole; the app need not wait for its end" % cut)
            self.assertFalse(conn.movable(), "cut at %d: part of a request is held here" % cut)
            wire.data = data[cut:]
            self.assertTrue(srv.serve_conn(conn), cut)
            self.assertEqual(calls, [1], cut)
            self.assertEqual(len(wire.sends), 1, cut)
            self.assertIn(b"\r\n\r\nhello world", wire.sends[0], cut)
            self.assertTrue(wire.sends[0].endswith(END), cut)
            self.assertTrue(conn.movable(), "cut at %d: the request is done" % cut)

    def test_an_abort_while_the_body_comes_drops_it(self):
        data = request(b"/", body=(b"x" * 1000, b"y" * 1000))
        rest = record(records.FCGI_STDIN, 1, b"y" * 1000) + record(records.FCGI_STDIN, 1, b"")
        srv = self.server(echo)
        wire = Wire(data[:-len(rest)])
        conn = connection.Conn(wire)
        self.assertTrue(srv.serve_conn(conn))
        self.assertEqual(spool.Body.held, 1000)
        wire.data = record(records.FCGI_ABORT, 1, b"")
        self.assertTrue(srv.serve_conn(conn))
        self.assertEqual(wire.sends, [END], "END_REQUEST alone: the app never ran")
        self.assertEqual(spool.Body.held, 0, "the body's memory is given back")
        self.assertTrue(conn.movable())


class Gone(Wire):
    """A connection whose web server went away after the first send."""

    def send(self, data, flags=0):
        if self.sends:
            raise BrokenPipeError(32, "Broken pipe")
        return Wire.send(self, data, flags)


class FastCGIGoneTest(Servers, unittest.TestCase):
    """A web server that goes away while the app streams: the app is
    stopped as by an abort, and the request is one access-log line with
    status 499 and the bytes that were sent, not an app error."""

    def test_the_app_is_stopped_and_the_request_logged_as_given_up(self):
        events = []

        def app(environ, start_response):
            start_response("200 OK", [])
            try:
                for _ in range(100):
                    yield b"chunk"
                    events.append("yielded")
            finally:
                events.append("finally")
        ctl = io.BytesIO()
        srv = self.server(app, ctl)
        srv.access_log = True
        wire = Gone(request(b"/stream"))
        conn = connection.Conn(wire)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            kept = srv.serve_conn(conn)
        self.assertFalse(kept, "the connection is closed")
        self.assertEqual(events, ["yielded", "finally"], "stopped at the write that failed")
        self.assertEqual(err.getvalue(), "", "no traceback")
        out = parse(ctl.getvalue())
        self.assertEqual([kind for kind, _, _ in out], ["A"], "one line: the access log's, no app error")
        method, uri, status, sent, _ = out[0][2].split(b"\0")
        self.assertEqual((method, status, sent), (b"GET", b"499", b"5"))

    def test_head_logs_no_body_bytes(self):
        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", "5")])
            return [b"hello"]
        ctl = io.BytesIO()
        srv = self.server(app, ctl)
        srv.access_log = True
        wire = Wire(request(b"/", method=b"HEAD"))
        self.assertTrue(srv.serve_conn(connection.Conn(wire)))
        self.assertNotIn(b"hello", b"".join(wire.sends))
        _, _, status, sent, _ = parse(ctl.getvalue())[0][2].split(b"\0")
        self.assertEqual((status, sent), (b"200", b"0"), "the access log counts what was sent")


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastCGIServeFastPathTest(FastCGIServeTest):
    fast = True

"""The WSGI semantics both protocols share (wsgibridge.wsgi), seen through
the frames a PipeResponse writes."""

import io
import marshal
import sys
import unittest

from wsgibridge import frames, pipe, wsgi
from wsgibridge.tests.support import parse


class StatusTest(unittest.TestCase):
    def test_valid(self):
        for status in ("200 OK", "404 Not Found", "599 ", "201 Caf\xe9"):
            self.assertEqual(wsgi.check_status(status), status.encode("latin-1"))

    def test_invalid(self):
        for status in ("200", "20 OK", "200\r\nX: y", "099 Low", "2OO OK", "200OK", "200 O\nK",
                       "200 \u20ac", b"200 OK", 200, None):
            with self.assertRaises(wsgi.AppError, msg=repr(status)):
                wsgi.check_status(status)


class HeaderBlockTest(unittest.TestCase):
    def test_block(self):
        block, length = wsgi.header_block("201 Created", [("Content-Type", "text/plain"), ("Content-Length", "5"),
                                                              ("X-Tab", "a\tb"), ("X-Latin", "caf\xe9")])
        self.assertEqual(block, b"Status: 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                                b"X-Tab: a\tb\r\nX-Latin: caf\xe9\r\n\r\n")
        self.assertEqual(length, 5)

    def test_a_200_has_no_status_line(self):
        # CGI's default: a web server that passes the header block on
        # (Caddy) would show "Status: 200 OK" to the client.
        for reason in ("OK", "Fine"):
            self.assertEqual(wsgi.header_block("200 " + reason, [("Content-Type", "text/plain")])[0],
                             b"Content-Type: text/plain\r\n\r\n")
        # With a Location, no Status would make it a redirect; with no
        # header at all, the block would be empty.
        for headers in ([("Location", "/x")], [("location", "/x")], []):
            block = wsgi.header_block("200 OK", headers)[0]
            self.assertTrue(block.startswith(b"Status: 200 OK\r\n"), block)
        self.assertEqual(wsgi.status_of(b"Content-Type: x\r\n\r\n"), b"200")
        self.assertEqual(wsgi.status_of(b"Status: 404 Not Found\r\n\r\n"), b"404")

    def test_no_headers(self):
        self.assertEqual(wsgi.header_block("204 No Content", []), (b"Status: 204 No Content\r\n\r\n", None))

    def test_invalid(self):
        cases = {
            "space in name": [("X Bad", "v")],
            "colon in name": [("X:Bad", "v")],
            "empty name": [("", "v")],
            "CR in value": [("X", "a\rb")],
            "LF in value": [("X", "a\nb")],
            "NUL in value": [("X", "a\x00b")],
            "DEL in value": [("X", "a\x7fb")],
            "not latin-1": [("X", "\u20ac")],
            "bytes value": [("X", b"v")],
            "not a tuple": [["X", "v"]],
            "hop-by-hop": [("Transfer-Encoding", "chunked")],
            "keep-alive": [("keep-alive", "5")],
            "status header": [("Status", "200 OK")],
            "bad length": [("Content-Length", "-1")],
            "too large": [("X-Big", "v" * 40000)],
        }
        for name, headers in cases.items():
            with self.assertRaises(wsgi.AppError, msg=name):
                wsgi.header_block("200 OK", headers)
        with self.assertRaises(wsgi.AppError):
            wsgi.header_block("200 OK", (("X", "v"),))


class ResponseTest(unittest.TestCase):
    def setUp(self):
        self.buf = io.BytesIO()
        self.resp = pipe.PipeResponse(self.buf, 1, False)

    def test_headers_wait_for_first_non_empty_chunk(self):
        write = self.resp.start_response("200 OK", [])
        write(b"")
        self.assertEqual(self.buf.getvalue(), b"")
        write(b"x")
        self.assertEqual([k for k, _, _ in parse(self.buf.getvalue())], ["H", "D"])

    def test_write_before_start_response(self):
        with self.assertRaises(wsgi.AppError):
            self.resp.write(b"x")

    def test_finish_without_start_response(self):
        with self.assertRaises(wsgi.AppError):
            self.resp.finish()

    def test_fail_before_headers_is_500(self):
        self.resp.start_response("200 OK", [])
        self.resp.fail("boom")
        got = parse(self.buf.getvalue())
        self.assertTrue(got[0][2].startswith(b"Status: 500 "))
        self.assertEqual(got[-1][:2], ("F", frames.APP_ERROR))

    def test_fail_after_headers_aborts(self):
        self.resp.start_response("200 OK", [])(b"partial")
        self.resp.fail("boom")
        self.assertEqual(parse(self.buf.getvalue())[-1], ("X", 0, b"boom"))

    def test_head_omits_body(self):
        resp = pipe.PipeResponse(self.buf, 1, True)
        resp.start_response("200 OK", [("Content-Length", "3")])(b"abc")
        resp.finish()
        self.assertEqual([k for k, _, _ in parse(self.buf.getvalue())], ["H", "F"])

    def test_304_omits_body(self):
        self.resp.start_response("304 Not Modified", [])(b"abc")
        self.resp.finish()
        self.assertEqual([k for k, _, _ in parse(self.buf.getvalue())], ["H", "F"])

    def test_excess_over_content_length_dropped(self):
        self.resp.start_response("200 OK", [("Content-Length", "2")])(b"abcd")
        self.resp.finish()
        got = parse(self.buf.getvalue())
        self.assertEqual([(k, p) for k, _, p in got if k == "D"], [("D", b"ab")])
        self.assertIn("L", [k for k, _, _ in got])

    def test_large_chunk_split_into_frames(self):
        self.resp.start_response("200 OK", [])(b"x" * (frames.MAX_FRAME + 1))
        sizes = [len(p) for k, _, p in parse(self.buf.getvalue()) if k == "D"]
        self.assertEqual(sizes, [frames.MAX_FRAME, 1])


class StopTest(unittest.TestCase):
    def tearDown(self):
        wsgi.app_running = wsgi.stop_pending = wsgi.stop_raised = False

    def test_stop_during_a_write_waits_for_its_end(self):
        buf = io.BytesIO()
        resp = pipe.PipeResponse(buf, 1, False)
        write = resp.start_response("200 OK", [])
        wsgi.app_running = True
        real = resp._write

        def write_then_signal(data, flags):
            real(data, flags)
            wsgi.on_stop(None, None)  # arrives while the frame is written

        resp._write = write_then_signal
        with self.assertRaises(wsgi.Stop):
            write(b"chunk")
        self.assertEqual([k for k, _, _ in parse(buf.getvalue())], ["H", "D"], "the frame is whole")

    def test_stop_outside_the_app_is_not_raised(self):
        wsgi.on_stop(None, None)
        self.assertTrue(wsgi.stop_pending)

    def test_stop_inside_the_app_raises(self):
        wsgi.app_running = True
        with self.assertRaises(wsgi.Stop):
            wsgi.on_stop(None, None)

    def test_stop_is_raised_once_per_request(self):
        wsgi.app_running = True
        with self.assertRaises(wsgi.Stop):
            wsgi.on_stop(None, None)
        wsgi.on_stop(None, None)  # sent again, while the app cleans up
        # The next request may be stopped again.
        body_end = io.BytesIO(frames.HEADER.pack(frames.BODY_END, 0, 1, 0))
        pipe.handle(lambda e, s: s("200 OK", []) and [], body_end, io.BytesIO(), 0, 1,
                      marshal.dumps({"REQUEST_METHOD": "GET"}))
        wsgi.app_running = True
        with self.assertRaises(wsgi.Stop):
            wsgi.on_stop(None, None)

    def test_stop_raised_from_a_write_is_not_raised_again(self):
        resp = pipe.PipeResponse(io.BytesIO(), 1, False)
        write = resp.start_response("200 OK", [])
        wsgi.on_stop(None, None)  # while the worker wrote
        wsgi.app_running = True
        with self.assertRaises(wsgi.Stop):
            write(b"chunk")
        wsgi.on_stop(None, None)


class RunAppEndingsTest(unittest.TestCase):
    """How run_app ends a request the bridge stopped, or whose body broke."""

    def setUp(self):
        self.buf = io.BytesIO()
        self.resp = pipe.PipeResponse(self.buf, 1, False)
        self.stderr = io.StringIO()
        self.saved, sys.stderr = sys.stderr, self.stderr

    def tearDown(self):
        sys.stderr = self.saved
        wsgi.app_running = wsgi.stop_pending = wsgi.stop_raised = False

    def run_app(self, app):
        return wsgi.run_app(app, {"REQUEST_METHOD": "POST", "PATH_INFO": "/p"}, self.resp)

    def test_a_stop_tells_the_bridge_where_the_app_was(self):
        def stuck_here(environ, start_response):
            wsgi.on_stop(None, None)

        self.assertFalse(self.run_app(stuck_here))
        got = parse(self.buf.getvalue())
        self.assertEqual([k for k, _, _ in got], ["H", "D", "F"])
        self.assertTrue(got[0][2].startswith(b"Status: 504 "))
        kind, flags, where = got[-1]
        self.assertEqual(flags, 0, "not an app error")
        self.assertIn(b"in stuck_here", where)
        self.assertNotIn(b"in on_stop", where)
        self.assertNotIn(b"in run_app", where)
        self.assertEqual(self.stderr.getvalue(), "", "the bridge logs it, knowing why it stopped")

    def test_a_broken_body_is_a_400(self):
        def reads(environ, start_response):
            raise wsgi.BodyError("the client sent 3 of its CONTENT_LENGTH 9 bytes and went away")

        self.assertFalse(self.run_app(reads))
        got = parse(self.buf.getvalue())
        self.assertEqual([k for k, _, _ in got], ["H", "D", "F"])
        self.assertTrue(got[0][2].startswith(b"Status: 400 Bad Request\r\n"))
        self.assertEqual(got[1][2], b"Bad Request\n")
        self.assertEqual(got[-1][1], 0, "not an app error")
        self.assertEqual(self.stderr.getvalue(), "", "no traceback: the client's fault")

    def test_a_broken_body_after_the_headers_aborts(self):
        def reads_late(environ, start_response):
            start_response("200 OK", [])
            yield b"partial"
            raise wsgi.BodyError("the client went away")

        self.run_app(reads_late)
        kind, _, why = parse(self.buf.getvalue())[-1]
        self.assertEqual(kind, "X")
        self.assertIn(b"broke off: the client went away", why)

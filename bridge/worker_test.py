"""Unit tests of the worker program, without the Go side: run with
`python3 -m unittest bridge/worker_test.py` (TestPythonWorker runs them)."""

import contextlib
import importlib.util
import io
import marshal
import os
import unittest

_spec = importlib.util.spec_from_file_location(
    "wsgibridge_worker", os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py"))
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def load_fastpath():
    """The C fast path when the Go test passes its shared object
    (WSGIBRIDGE_FASTPATH, a path), else None."""
    path = os.environ.get("WSGIBRIDGE_FASTPATH")
    if not path:
        return None

    def fail(level, message):
        raise AssertionError(message)
    return worker.load_fastpath(os.open(path, os.O_RDONLY), fail)


FAST = load_fastpath()


def frames(*items, rid=1):
    out = b""
    for kind, payload in items:
        out += worker.HEADER.pack(ord(kind), 0, rid, len(payload)) + payload
    return io.BufferedReader(io.BytesIO(out))


def parse(data):
    """Splits worker output into (kind, flags, payload) tuples."""
    out, pos = [], 0
    while pos < len(data):
        kind, flags, _, n = worker.HEADER.unpack_from(data, pos)
        pos += 8
        out.append((chr(kind), flags, data[pos:pos + n]))
        pos += n
    return out


def record(kind, rid, content, pad=0):
    """One FastCGI record as the web server sends it."""
    return worker.RECORD.pack(1, kind, rid, len(content), pad) + content + bytes(pad)


class StatusTest(unittest.TestCase):
    def test_valid(self):
        for status in ("200 OK", "404 Not Found", "599 ", "201 Caf\xe9"):
            self.assertEqual(worker.check_status(status), status.encode("latin-1"))

    def test_invalid(self):
        for status in ("200", "20 OK", "200\r\nX: y", "099 Low", "2OO OK", "200OK", "200 O\nK",
                       "200 \u20ac", b"200 OK", 200, None):
            with self.assertRaises(worker.AppError, msg=repr(status)):
                worker.check_status(status)


class HeaderBlockTest(unittest.TestCase):
    def test_block(self):
        block, length = worker.header_block("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"),
                                                         ("X-Tab", "a\tb"), ("X-Latin", "caf\xe9")])
        self.assertEqual(block, b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                                b"X-Tab: a\tb\r\nX-Latin: caf\xe9\r\n\r\n")
        self.assertEqual(length, 5)

    def test_no_headers(self):
        self.assertEqual(worker.header_block("204 No Content", []), (b"Status: 204 No Content\r\n\r\n", None))

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
            with self.assertRaises(worker.AppError, msg=name):
                worker.header_block("200 OK", headers)
        with self.assertRaises(worker.AppError):
            worker.header_block("200 OK", (("X", "v"),))


class InputTest(unittest.TestCase):
    def test_read_sizes(self):
        inp = worker.Input(frames(("B", b"hello "), ("B", b"world"), ("E", b"")), 1)
        self.assertEqual(inp.read(3), b"hel")
        self.assertEqual(inp.read(5), b"lo wo")
        self.assertEqual(inp.read(), b"rld")
        self.assertEqual(inp.read(), b"")
        self.assertEqual(inp.read(10), b"")

    def test_readline(self):
        inp = worker.Input(frames(("B", b"ab"), ("B", b"c\nde"), ("B", b"f\ng"), ("E", b"")), 1)
        self.assertEqual(inp.readline(), b"abc\n")
        self.assertEqual(inp.readline(2), b"de")
        self.assertEqual(inp.readline(), b"f\n")
        self.assertEqual(inp.readline(), b"g")
        self.assertEqual(inp.readline(), b"")

    def test_iteration_and_readlines(self):
        inp = worker.Input(frames(("B", b"1\n2\n"), ("B", b"3"), ("E", b"")), 1)
        self.assertEqual(list(inp), [b"1\n", b"2\n", b"3"])
        inp = worker.Input(frames(("B", b"1\n2\n3\n"), ("E", b"")), 1)
        self.assertEqual(inp.readlines(2), [b"1\n"])
        self.assertEqual(inp.readlines(), [b"2\n", b"3\n"])

    def test_drain_then_next_request(self):
        rin = frames(("B", b"unread"), ("E", b""), ("R", b"next"))
        worker.Input(rin, 1).drain()
        self.assertEqual(chr(worker.read_header(rin)[0]), "R")

    def test_stale_frame(self):
        inp = worker.Input(frames(("B", b"x"), rid=2), 1)
        with self.assertRaises(worker.ProtocolError):
            inp.read()

    def test_truncated_pipe(self):
        inp = worker.Input(io.BufferedReader(io.BytesIO(worker.HEADER.pack(ord("B"), 0, 1, 10) + b"abc")), 1)
        with self.assertRaises(worker.ProtocolError):
            inp.read()


class ResponseTest(unittest.TestCase):
    def setUp(self):
        self.buf = io.BytesIO()
        self.resp = worker.Response(self.buf, 1, False)

    def test_headers_wait_for_first_non_empty_chunk(self):
        write = self.resp.start_response("200 OK", [])
        write(b"")
        self.assertEqual(self.buf.getvalue(), b"")
        write(b"x")
        self.assertEqual([k for k, _, _ in parse(self.buf.getvalue())], ["H", "D"])

    def test_write_before_start_response(self):
        with self.assertRaises(worker.AppError):
            self.resp.write(b"x")

    def test_finish_without_start_response(self):
        with self.assertRaises(worker.AppError):
            self.resp.finish()

    def test_fail_before_headers_is_500(self):
        self.resp.start_response("200 OK", [])
        self.resp.fail("boom")
        got = parse(self.buf.getvalue())
        self.assertTrue(got[0][2].startswith(b"Status: 500 "))
        self.assertEqual(got[-1][:2], ("F", worker.APP_ERROR))

    def test_fail_after_headers_aborts(self):
        self.resp.start_response("200 OK", [])(b"partial")
        self.resp.fail("boom")
        self.assertEqual(parse(self.buf.getvalue())[-1], ("X", 0, b"boom"))

    def test_head_omits_body(self):
        resp = worker.Response(self.buf, 1, True)
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
        self.resp.start_response("200 OK", [])(b"x" * (worker.MAX_FRAME + 1))
        sizes = [len(p) for k, _, p in parse(self.buf.getvalue()) if k == "D"]
        self.assertEqual(sizes, [worker.MAX_FRAME, 1])


class StopTest(unittest.TestCase):
    def tearDown(self):
        worker.app_running = worker.stop_pending = worker.stop_raised = False

    def test_stop_during_a_write_waits_for_its_end(self):
        buf = io.BytesIO()
        resp = worker.Response(buf, 1, False)
        write = resp.start_response("200 OK", [])
        worker.app_running = True
        real = resp._write

        def write_then_signal(data, flags):
            real(data, flags)
            worker.on_stop(None, None)  # arrives while the frame is written

        resp._write = write_then_signal
        with self.assertRaises(worker.Stop):
            write(b"chunk")
        self.assertEqual([k for k, _, _ in parse(buf.getvalue())], ["H", "D"], "the frame is whole")

    def test_stop_outside_the_app_is_not_raised(self):
        worker.on_stop(None, None)
        self.assertTrue(worker.stop_pending)

    def test_stop_inside_the_app_raises(self):
        worker.app_running = True
        with self.assertRaises(worker.Stop):
            worker.on_stop(None, None)

    def test_stop_is_raised_once_per_request(self):
        worker.app_running = True
        with self.assertRaises(worker.Stop):
            worker.on_stop(None, None)
        worker.on_stop(None, None)  # sent again, while the app cleans up
        # The next request may be stopped again.
        body_end = io.BytesIO(worker.HEADER.pack(worker.BODY_END, 0, 1, 0))
        worker.handle(lambda e, s: s("200 OK", []) and [], body_end, io.BytesIO(), 0, 1,
                      marshal.dumps({"REQUEST_METHOD": "GET"}))
        worker.app_running = True
        with self.assertRaises(worker.Stop):
            worker.on_stop(None, None)

    def test_stop_raised_from_a_write_is_not_raised_again(self):
        resp = worker.Response(io.BytesIO(), 1, False)
        write = resp.start_response("200 OK", [])
        worker.on_stop(None, None)  # while the worker wrote
        worker.app_running = True
        with self.assertRaises(worker.Stop):
            write(b"chunk")
        worker.on_stop(None, None)


class LoadAppTest(unittest.TestCase):
    def test_not_callable(self):
        with self.assertRaises(TypeError):
            worker.load_app("os:sep")

    def test_module_and_attribute(self):
        self.assertIs(worker.load_app("os.path:join"), os.path.join)


class PairsTest(unittest.TestCase):
    def test_short_and_long_lengths(self):
        value = "v" * 200
        data = b"\x01\x02AXY" + b"\x04\x80\x00\x00\xc8PATH" + value.encode() + b"\x03\x02CAF\xc3\xa9"
        pairs = {}
        worker.decode_pairs(data, pairs, 10)
        self.assertEqual(pairs, {"A": "XY", "PATH": value, "CAF": "\xc3\xa9"})

    def test_malformed(self):
        for data in (b"\x05\x01a", b"\x80\x00", b"\x01", b"\x01\x01ab\x00"):
            with self.assertRaises(worker.ConnClosed, msg=data):
                worker.decode_pairs(data, {}, 10)

    def test_too_many(self):
        with self.assertRaisesRegex(worker.ConnClosed, "more than 2 params"):
            worker.decode_pairs(b"\x01\x00a\x01\x00b\x01\x00c", {}, 2)


class RecordsTest(unittest.TestCase):
    def test_stdout_split_and_padded(self):
        data = b"x" * (worker.MAX_RECORD_CONTENT + 3)
        parts = []
        worker.stdout_records(7, data, parts)
        out = b"".join(parts)
        first = worker.RECORD.unpack_from(out)
        self.assertEqual(first, (1, worker.FCGI_STDOUT, 7, worker.MAX_RECORD_CONTENT, 0))
        second = worker.RECORD.unpack_from(out, 8 + worker.MAX_RECORD_CONTENT)
        self.assertEqual(second, (1, worker.FCGI_STDOUT, 7, 3, 5))
        self.assertEqual(len(out), 8 + worker.MAX_RECORD_CONTENT + 8 + 3 + 5)

    def test_end_request(self):
        self.assertEqual(worker.end_request(2, worker.CANT_MPX_CONN),
                         bytes([1, 3, 0, 2, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))


class BodyTest(unittest.TestCase):
    def tearDown(self):
        self.assertEqual((worker.Body.held, worker.Body.collecting), (0, {}), "every body gave its memory back")

    def test_known_length(self):
        body = worker.Body(10)
        reused = bytearray(b"hijkl")
        for part in (b"abc", memoryview(b"defg"), reused):
            body.add(part)
        reused[:] = b"ZZZZZ"  # records are views of a buffer the next read reuses
        self.assertIsNone(body.file)
        self.assertEqual(body.reader().read(), b"abcdefghij", "cut to the length, and copied")
        short = worker.Body(10)
        short.add(b"abc")
        self.assertEqual(short.reader().read(), b"abc", "a body that ends early")

    def test_unknown_length_grows(self):
        body = worker.Body(-1)
        body.add(b"x" * 1000)
        body.add(memoryview(b"y" * 10))
        self.assertEqual(body.reader().read(), b"x" * 1000 + b"y" * 10)

    def test_memory_then_file_and_limit(self):
        body = worker.Body(worker.BODY_MEMORY + 10)
        body.add(b"a" * worker.BODY_MEMORY)
        self.assertIsNone(body.file)
        body.add(b"b" * 100)
        self.assertIsNotNone(body.file)
        with body.reader() as r:
            data = r.read()
        self.assertEqual(len(data), worker.BODY_MEMORY + 10, "cut to the limit")
        self.assertTrue(data.endswith(b"b" * 10))

    def test_bodies_being_collected_share_the_memory(self):
        half = worker.BODY_MEMORY // 2
        first, second, third = worker.Body(-1), worker.Body(-1), worker.Body(-1)
        first.add(b"a" * half)
        second.add(b"b" * half)
        self.assertFalse(second.fits(1), "past the shared memory another body waits")
        self.assertFalse(third.fits(1))
        self.assertTrue(first.fits(half), "the oldest may always grow")
        self.assertEqual(first.reader().read(), b"a" * half)
        self.assertTrue(second.fits(half), "the app took the oldest: the next is oldest now")
        self.assertTrue(third.fits(1), "and memory is free again")
        taken = worker.Body.taken
        second.spill()
        self.assertEqual(worker.Body.taken, taken + 1, "a spilled body frees its memory")
        self.assertEqual((worker.Body.held, worker.Body.collecting), (0, {}))
        second.add(b"c")
        with second.reader() as r:
            self.assertEqual(r.read(), b"b" * half + b"c")
        third.add(b"d")
        third.discard()
        self.assertEqual((worker.Body.held, worker.Body.collecting), (0, {}))

    def test_large_bodies_reuse_memory(self):
        """After keep_freed_blocks, 1 MiB bodies (received in 32 KiB
        records, then read whole) reuse the heap's pages. Without it glibc
        gives some back after each body here (224 page faults for these 20
        bodies), and under load all of them (480 per body, seen through
        nginx)."""
        import subprocess
        import sys
        code = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
worker.keep_freed_blocks()
piece = memoryview(b"x" * 32768)
def one():
    body = worker.Body(worker.BODY_MEMORY)
    for _ in range(worker.BODY_MEMORY // len(piece)):
        body.add(piece)
    assert len(body.reader().read()) == worker.BODY_MEMORY
one()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
        out = subprocess.run([sys.executable, "-c", code, worker.__file__],
                             capture_output=True, text=True, check=True).stdout
        self.assertLess(int(out), 20, "page faults for 20 bodies of 1 MiB")


class WatchListTest(unittest.TestCase):
    def test_changed_while_importing(self):
        import tempfile
        import time
        with tempfile.TemporaryDirectory() as d:
            old, future, new, new_future, gone = (
                os.path.join(d, n) for n in ("old.py", "future.py", "new.py", "new_future.py", "gone.py"))
            for path in (old, future):
                open(path, "w").close()
            now = time.time()
            os.utime(old, (now - 60, now - 60))
            os.utime(future, (now + 3600, now + 3600))
            # File times come from a clock that lags time_ns by a tick.
            time.sleep(0.05)
            imported_at = time.time_ns()
            for path in (new, new_future):
                open(path, "w").close()
            os.utime(new_future, (now + 2, now + 2))
            got = dict(worker.watch_list([old, future, new, new_future, gone], imported_at))
            self.assertEqual(got[old], os.stat(old).st_mtime_ns, "unchanged: its time is kept")
            self.assertEqual(got[future], os.stat(future).st_mtime_ns,
                             "a future time set before the import is kept, or every new worker would reload")
            self.assertEqual(got[new], -1, "changed during the import: counts as changed")
            self.assertEqual(got[new_future], -1,
                             "changed during the import and touched ahead: counts as changed")
        self.assertIsNone(got[gone])


class Wire:
    """A fake connection: the web server's bytes to read, and each send
    the worker makes, kept apart."""

    def __init__(self, data, fd=-1):
        self.data = data
        self.sends = []
        self.fd = fd

    def fileno(self):
        return self.fd

    def recv_into(self, buf, n=0, flags=0):
        if not self.data:
            raise BlockingIOError
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n

    def send(self, data, flags=0):
        self.sends.append(bytes(data))
        return len(data)

    def sendmsg(self, parts, ancdata=(), flags=0):
        return self.send(b"".join(parts))

    def close(self):
        pass


def request(path, keep=True, body=(), method=b"GET"):
    """A GET (or method) for path as nginx sends it, on a connection it
    keeps; a POST if body holds the pieces of a body, sent as STDIN records."""
    env = [(b"REQUEST_METHOD", method), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"PATH_INFO", path)]
    if body:
        env[0] = (b"REQUEST_METHOD", b"POST")
        env.append((b"CONTENT_LENGTH", b"%d" % sum(map(len, body))))
    pairs = b"".join(bytes((len(name), len(value))) + name + value for name, value in env)
    stdin = b"".join(record(worker.FCGI_STDIN, 1, piece, -len(piece) & 7) for piece in body)
    return (record(worker.FCGI_BEGIN, 1, bytes((0, worker.FCGI_RESPONDER, int(keep), 0, 0, 0, 0, 0)))
            + record(worker.FCGI_PARAMS, 1, pairs, -len(pairs) & 7) + record(worker.FCGI_PARAMS, 1, b"")
            + stdin + record(worker.FCGI_STDIN, 1, b""))


def stdout(data):
    """The content of the STDOUT records in data, joined."""
    out, pos = b"", 0
    while pos < len(data):
        _, kind, _, n, pad = worker.RECORD.unpack_from(data, pos)
        if kind == worker.FCGI_STDOUT:
            out += data[pos + 8:pos + 8 + n]
        pos += 8 + n + pad
    return out


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


END = worker.end_request(1)


class Servers:
    """Makes the FastCGIServer of a test; with fast, one that reads
    requests with the C fast path."""

    fast = False

    def server(self, app, ctl=None):
        srv = worker.FastCGIServer(app, None, io.BytesIO() if ctl is None else ctl, {})
        srv.use_fastpath(FAST if self.fast else None)
        return srv


class FastCGIServeTest(Servers, unittest.TestCase):
    """One request through FastCGIServer.serve_conn: what goes out, in
    which writes, and whether the connection is kept."""

    def serve(self, app, path=b"/"):
        ctl = io.BytesIO()
        srv = self.server(app, ctl)
        wire = self.wire = Wire(request(path))
        conn = worker.Conn(wire)
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
        self.assertTrue(sends[0].endswith(worker.end_records(1)))
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
        self.assertTrue(sends[0].endswith(worker.end_records(1)))
        self.assertEqual(events, [1], "the response was out when close() ran")
        self.assertTrue(kept)

    def test_a_generator_without_length_ends_after_it(self):
        def app(environ, start_response):
            start_response("200 OK", [])
            yield b"hello"
        sends, kept, _ = self.serve(app)
        self.assertEqual(len(sends), 2)
        self.assertEqual(sends[1], worker.end_records(1))
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

    def test_a_request_in_two_pieces_waits_for_the_second_without_the_app(self):
        data = request(b"/", body=(b"hello", b" world"))
        for cut in range(1, len(data)):
            calls = []

            def app(environ, start_response):
                calls.append(1)
                return echo(environ, start_response)
            srv = self.server(app)
            wire = Wire(data[:cut])
            conn = worker.Conn(wire)
            self.assertTrue(srv.serve_conn(conn), cut)
            self.assertEqual((calls, wire.sends), ([], []), "cut at %d: nothing runs before the rest" % cut)
            self.assertFalse(conn.movable(), "cut at %d: part of a request is held here" % cut)
            wire.data = data[cut:]
            self.assertTrue(srv.serve_conn(conn), cut)
            self.assertEqual(calls, [1], cut)
            self.assertEqual(len(wire.sends), 1, cut)
            self.assertIn(b"\r\n\r\nhello world", wire.sends[0], cut)
            self.assertTrue(wire.sends[0].endswith(END), cut)
            self.assertTrue(conn.movable(), "cut at %d: the request is done" % cut)

    def test_an_abort_while_the_body_comes_drops_it(self):
        data = request(b"/", body=(b"x" * 1000,))
        stdin_end = record(worker.FCGI_STDIN, 1, b"")
        srv = self.server(echo)
        wire = Wire(data[:-len(stdin_end)])
        conn = worker.Conn(wire)
        self.assertTrue(srv.serve_conn(conn))
        self.assertEqual(worker.Body.held, 1000)
        wire.data = record(worker.FCGI_ABORT, 1, b"")
        self.assertTrue(srv.serve_conn(conn))
        self.assertEqual(wire.sends, [END], "END_REQUEST alone: the app never ran")
        self.assertEqual(worker.Body.held, 0, "the body's memory is given back")
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
        conn = worker.Conn(wire)
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
        self.assertTrue(srv.serve_conn(worker.Conn(wire)))
        self.assertNotIn(b"hello", b"".join(wire.sends))
        _, _, status, sent, _ = parse(ctl.getvalue())[0][2].split(b"\0")
        self.assertEqual((status, sent), (b"200", b"0"), "the access log counts what was sent")


class WatchTest(Servers, unittest.TestCase):
    """Every request of a FastCGI worker gets the look of the alarm at
    STALL_AFTER, whatever an earlier request left armed (its timeout)."""

    def setUp(self):
        self.calls = []
        real = worker._signal.setitimer
        worker._signal.setitimer = lambda which, delay, again=0: self.calls.append(delay)
        self.addCleanup(setattr, worker._signal, "setitimer", real)

    def test_a_request_after_a_slow_one_is_looked_at_in_time(self):
        import _socket
        import socket
        now = [100.0]
        seen = []

        def app(environ, start_response):
            path = environ["PATH_INFO"]
            if path == "/slow":
                now[0] += 2 * worker.STALL_AFTER
                srv.on_alarm(worker._signal.SIGALRM, None)  # the alarm fires: a stall
            else:
                seen.append(list(self.calls))
            now[0] += 0.001
            start_response("200 OK", [])
            return [b"x"]
        srv = self.server(app)
        srv.socket, srv.clock, srv.timeout = _socket, lambda: now[0], 60.0
        srv.board, srv.slot = bytearray(4096), 0
        for path in (b"/slow", b"/quick", b"/quick", b"/quick"):
            ours, theirs = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            theirs.sendall(request(path))
            self.assertTrue(srv.serve_conn(worker.Conn(ours)))
        self.assertEqual(self.calls[0], worker.STALL_AFTER, "the slow request is looked at")
        self.assertGreater(self.calls[1], 50, "then its timeout is armed")
        self.assertEqual(seen[0][-1], worker.STALL_AFTER, "the next request is looked at by STALL_AFTER, not at the timeout")
        self.assertEqual(seen[2], seen[0], "a run of quick requests arms the alarm once, not once each")


class Epoll:
    """A fake epoll: the events each descriptor is watched for."""

    def __init__(self):
        self.watched = {}
        self.gone = []

    def register(self, fd, events):
        self.watched[fd] = events

    def modify(self, fd, events):
        self.watched[fd] = events

    def unregister(self, fd):
        del self.watched[fd]
        self.gone.append(fd)


class FastCGIConnsTest(Servers, unittest.TestCase):
    """The connections a worker keeps between its requests."""

    def setUp(self):
        self.ctl = io.BytesIO()
        self.srv = self.server(echo, self.ctl)
        self.srv.ep = Epoll()

    def tearDown(self):
        held, collecting = worker.Body.held, dict(worker.Body.collecting)
        worker.Body.held = 0
        worker.Body.collecting.clear()
        self.assertEqual((held, collecting), (0, {}), "every body gave its memory back")

    def keep(self, conn, since):
        self.srv.conns[conn.fd] = (conn, since)
        self.srv.ep.register(conn.fd, worker.EPOLLIN)

    def test_bodies_streamed_at_once_take_turns_in_memory(self):
        size = worker.BODY_MEMORY * 3 // 4
        pieces = [bytes([65 + i]) * 32768 for i in range(size // 32768)]
        data = request(b"/", body=pieces)
        wires = [Wire(data[:len(data) * 9 // 10], fd=10 + i) for i in range(2)]
        conns = [worker.Conn(w) for w in wires]
        for conn in conns:
            self.srv.admit(conn)
        self.assertLessEqual(worker.Body.held, worker.BODY_MEMORY)
        first, second = conns
        self.assertFalse(first.paused, "the oldest body grows")
        self.assertTrue(second.paused, "the other waits for memory")
        self.assertEqual(self.srv.ep.watched[second.fd], 0, "and its connection is not read meanwhile")
        wires[1].data += data[len(data) * 9 // 10:]
        wires[0].data = data[len(data) * 9 // 10:]
        self.srv.turn(first)
        self.assertEqual(len(wires[0].sends), 1, "the first request is served")
        self.assertTrue(second.paused)
        self.assertEqual(wires[1].sends, [], "the second waited for its turn")
        self.srv.resume()
        self.assertFalse(second.paused)
        self.assertEqual(self.srv.ep.watched[second.fd], worker.EPOLLIN)
        for wire in wires:
            self.assertEqual(len(wire.sends), 1)
            self.assertTrue(stdout(wire.sends[0]).endswith(b"\r\n\r\n" + b"".join(pieces)), "the body echoed whole")
            self.assertTrue(wire.sends[0].endswith(END))

    def test_a_stalled_body_goes_to_a_file_and_lets_the_others_on(self):
        size = worker.BODY_MEMORY * 3 // 4
        pieces = [b"s" * 32768] * (size // 32768)
        data = request(b"/", body=pieces)
        wires = [Wire(data[:len(data) * 9 // 10], fd=10 + i) for i in range(2)]
        stalled, waiting = [worker.Conn(w) for w in wires]
        self.srv.admit(stalled)
        self.srv.admit(waiting)
        self.assertTrue(waiting.paused)
        grew = worker.Body.collecting[stalled.pending.body]
        self.srv.unstall(grew + worker.BODY_STALL / 2)
        self.assertIsNone(stalled.pending.body.file, "a short pause is no stall")
        self.srv.unstall(grew + worker.BODY_STALL * 2)
        self.assertIsNotNone(stalled.pending.body.file)
        wires[1].data += data[len(data) * 9 // 10:]
        self.srv.resume()
        self.assertEqual(len(wires[1].sends), 1, "the waiting request went on and was served")
        wires[0].data = data[len(data) * 9 // 10:]
        self.srv.turn(stalled)
        self.assertTrue(stdout(wires[0].sends[0]).endswith(b"\r\n\r\n" + b"".join(pieces)), "the body echoed whole")

    def test_sweep_closes_idle_and_unfinished_connections_by_their_deadlines(self):
        import socket
        data = request(b"/", body=(b"hello",))
        conns = {}
        for name, since, part in (("idle, recent", 100, b""), ("idle, old", 100 - self.srv.IDLE_TIMEOUT - 1, b""),
                                  ("unfinished, recent", 100, data[:20]),
                                  ("unfinished, old", 100 - worker.Conn.TIMEOUT - 1, data[:20])):
            ours, theirs = socket.socketpair()
            self.addCleanup(theirs.close)
            self.addCleanup(ours.close)
            theirs.sendall(part)
            conn = conns[name] = worker.Conn(ours)
            self.assertTrue(self.srv.serve_conn(conn))
            self.keep(conn, since)
        self.srv.sweep(100)
        self.assertEqual(sorted(self.srv.ep.gone), sorted([conns["idle, old"].fd, conns["unfinished, old"].fd]))
        self.assertEqual({c for c, _ in self.srv.conns.values()}, {conns["idle, recent"], conns["unfinished, recent"]})
        logged = b"".join(payload for kind, _, payload in parse(self.ctl.getvalue()) if kind == "L").decode()
        self.assertIn("left a request unfinished for 60s", logged)

    def test_leaving_serves_a_request_still_coming(self):
        import socket
        import threading
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        data = request(b"/", body=(b"last ", b"words"))
        theirs.sendall(data[:60])
        conn = worker.Conn(ours)
        self.assertTrue(self.srv.serve_conn(conn))
        self.keep(conn, 0)
        rest = threading.Timer(0.05, theirs.sendall, (data[60:],))
        rest.start()
        self.srv.close_all()
        rest.join()
        theirs.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = theirs.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertIn(b"\r\n\r\nlast words", got)
        self.assertTrue(got.endswith(END))
        self.assertEqual(self.srv.ep.gone, [conn.fd])

    def test_a_kept_connection_passes_to_a_peer_through_the_lobby(self):
        import _socket
        import socket
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        lobby_out, lobby = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(lobby_out.close)
        self.addCleanup(lobby.close)
        self.srv.socket, self.srv.lobby_out = _socket, lobby_out
        conn = worker.Conn(ours)
        self.keep(conn, 0)
        self.assertTrue(self.srv.pass_conn(conn))
        self.assertEqual(self.srv.ep.gone, [conn.fd], "the connection left this worker")
        self.assertEqual(self.srv.conns, {})
        peer = self.server(echo)
        peer.socket = _socket
        fd = peer.receive_conn(lobby)
        self.assertIsNotNone(fd)
        self.assertIsNone(peer.receive_conn(lobby), "one connection was passed, once")
        passed = worker.Conn(_socket.socket(fileno=fd))
        self.addCleanup(passed.close)
        theirs.sendall(request(b"/", body=(b"still here",)))
        self.assertTrue(peer.serve_conn(passed))
        got = theirs.recv(65536)
        self.assertIn(b"\r\n\r\nstill here", got)
        self.assertTrue(got.endswith(END))


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastCGIServeFastPathTest(FastCGIServeTest):
    fast = True


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastCGIConnsFastPathTest(FastCGIConnsTest):
    fast = True


def pairs_of(items):
    """Params content for (name, value) bytes pairs, with 4-byte lengths
    where they are long."""
    out = b""
    for item in items:
        for part in item:
            out += bytes((len(part),)) if len(part) < 128 else (len(part) | 1 << 31).to_bytes(4, "big")
        out += b"".join(item)
    return out


def begin(rid, keep=True, role=worker.FCGI_RESPONDER):
    return record(worker.FCGI_BEGIN, rid, bytes((0, role, int(keep), 0, 0, 0, 0, 0)))


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastPathTest(unittest.TestCase):
    """The C fast path reads what read_params reads, or declines (None)."""

    PAIRS = pairs_of([(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                      (b"HTTP_COOKIE", b"c" * 300), (b"E", b"")])

    def generic(self, data, mount=None):
        """read_params and make_environ on data, and the record after it:
        (rid, keep, (environ, content length, to_eof), STDIN's end or not,
        where the unread bytes begin); environ None: refused."""
        srv = worker.FastCGIServer(echo, None, io.BytesIO(), {} if mount is None else {"mount": mount})
        conn = worker.Conn(Wire(data))
        pairs, made, ended = srv.read_params(conn)
        self.assertEqual((made, ended), (None, False))
        try:
            made = worker.make_environ(pairs, mount)
        except worker.Refused:
            made = None
        start, ended = conn.start, False
        try:
            ended = conn.record() == (worker.FCGI_STDIN, conn.rid, b"")
        except (worker.Incomplete, worker.ConnClosed):
            pass
        if not ended:
            conn.start = start
        return conn.rid, conn.keep, made, ended, conn.start

    def fast(self, data, mount=None):
        """The fast path on data placed inside other bytes, which it must
        not read, in generic's terms."""
        buf = bytearray(b"\1" * 24 + data + b"\1" * 24)
        got = FAST.request(buf, 24, 24 + len(data), worker.MAX_PARAMS_BYTES, worker.MAX_PARAMS,
                           None if mount is None else mount.encode("latin-1"))
        if got is None:
            return None
        end, rid, keep, ended, made = got
        return rid, keep, made, ended, end - 24

    def same(self, data, mount=None):
        """Asserts the fast path read data as read_params and make_environ
        do, in the same order; returns whether it read it at all."""
        fast = self.fast(data, mount)
        if fast is not None:
            generic = self.generic(data, mount)
            self.assertEqual(fast, generic, data)
            self.assertEqual(list(fast[2][0].items()), list(generic[2][0].items()), "the environ's order")
        return fast is not None

    def test_reads_the_usual_requests(self):
        params = record(worker.FCGI_PARAMS, 3, self.PAIRS, -len(self.PAIRS) & 7)
        end = record(worker.FCGI_PARAMS, 3, b"")
        stdin_end = record(worker.FCGI_STDIN, 3, b"")
        half = len(self.PAIRS) // 2
        split = (record(worker.FCGI_PARAMS, 3, self.PAIRS[:half], 3)
                 + record(worker.FCGI_PARAMS, 3, self.PAIRS[half:]))
        for name, data in [
            ("GET", begin(3) + params + end + stdin_end),
            ("not kept", begin(3, keep=False) + params + end + stdin_end),
            ("a body follows", begin(3) + params + end + record(worker.FCGI_STDIN, 3, b"abc")),
            ("STDIN not there yet", begin(3) + params + end),
            ("pairs split across records", begin(3) + split + end + stdin_end),
            ("the next request behind", begin(3) + params + end + stdin_end + begin(4)),
        ]:
            with self.subTest(name):
                self.assertTrue(self.same(data))
        _, _, (environ, length, to_eof), _, _ = self.fast(begin(3) + split + end)
        self.assertEqual(environ, {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_COOKIE": "c" * 300,
                                   "E": "", "SCRIPT_NAME": "", "PATH_INFO": "", "QUERY_STRING": "",
                                   "wsgi.url_scheme": "http", "SERVER_NAME": "localhost", "SERVER_PORT": "80"})
        self.assertEqual((length, to_eof), (-1, False))

    def test_declines_what_is_not_plain(self):
        params = record(worker.FCGI_PARAMS, 3, self.PAIRS, -len(self.PAIRS) & 7)
        end = record(worker.FCGI_PARAMS, 3, b"")
        whole = begin(3) + params + end
        for name, data in [
            ("a management record first", record(worker.FCGI_GET_VALUES, 0, b"") + whole),
            ("another role", begin(3, role=2) + params + end),
            ("another request's record inside", begin(3) + record(worker.FCGI_PARAMS, 4, b"") + params + end),
            ("an abort", begin(3) + params + record(worker.FCGI_ABORT, 3, b"")),
            ("a DATA record", begin(3) + record(worker.FCGI_DATA, 3, b"x") + params + end),
            ("version 2", whole[:8] + b"\2" + whole[9:]),
            ("malformed pairs", begin(3) + record(worker.FCGI_PARAMS, 3, b"\5\1ab") + end),
            ("request id 0", begin(0) + record(worker.FCGI_PARAMS, 0, b"")),
            ("short BEGIN_REQUEST", record(worker.FCGI_BEGIN, 3, b"\0\1") + params + end),
            ("too many pairs", begin(3) + record(worker.FCGI_PARAMS, 3, pairs_of(
                (b"N%d" % i, b"") for i in range(worker.MAX_PARAMS + 1))) + end),
            ("a NUL in a value", begin(3) + record(worker.FCGI_PARAMS, 3, self.PAIRS + b"\1\2ab\0") + end),
            ("no params, so no method", begin(3) + end),
        ] + [("cut at %d" % cut, whole[:cut]) for cut in range(len(whole))]:
            with self.subTest(name):
                self.assertIsNone(self.fast(data))

    def test_a_mount_beyond_latin1_leaves_only_the_environ_to_python(self):
        srv = worker.FastCGIServer(echo, None, io.BytesIO(), {"mount": "/\u20ac"})
        srv.use_fastpath(FAST)
        self.assertIsNone(srv.fast, "make_environ judges such a mount")
        self.assertIs(srv.fast_head, FAST.head)
        self.assertIs(srv.fast_accept, FAST.accept)

    def test_over_the_size_limit_it_declines(self):
        buf = bytearray(begin(3) + record(worker.FCGI_PARAMS, 3, self.PAIRS) + record(worker.FCGI_PARAMS, 3, b""))
        self.assertIsNotNone(FAST.request(buf, 0, len(buf), len(self.PAIRS), 10, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf), len(self.PAIRS) - 1, 10, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf), len(self.PAIRS), 3, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf) + 1, 1000, 10, None), "end past the buffer")
        self.assertIsNone(FAST.request(buf, 5, 4, 1000, 10, None), "start past end")

    def test_mangled_requests_are_read_alike_or_declined(self):
        import random
        rng = random.Random(5)
        params = record(worker.FCGI_PARAMS, 3, self.PAIRS)
        seeds = [begin(3) + params + record(worker.FCGI_PARAMS, 3, b"") + record(worker.FCGI_STDIN, 3, b""),
                 begin(1) + record(worker.FCGI_PARAMS, 1, pairs_of([
                     (b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.0"), (b"SCRIPT_NAME", b"/a/"),
                     (b"CONTENT_LENGTH", b"1"), (b"HTTP_HOST", b"h:1"), (b"HTTPS", b"on")]))
                 + record(worker.FCGI_PARAMS, 1, b"")]
        read = 0
        for _ in range(4000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(data))
                data[i] = rng.choice((0, 1, 3, 4, 5, 127, 128, 255, rng.randrange(256)))
            try:
                read += self.same(bytes(data))
            except (worker.ConnClosed, worker.Incomplete):
                self.fail("the fast path read what read_params refuses: %r" % bytes(data))
        self.assertGreater(read, 100, "some mangled requests are still plain")

    def environ(self, items, mount=None):
        """Asserts that the fast path makes the environ of a GET with these
        params as make_environ does, or declines where make_environ refuses;
        returns whether it made it."""
        data = (begin(1) + record(worker.FCGI_PARAMS, 1, pairs_of(items)) + record(worker.FCGI_PARAMS, 1, b"")
                + record(worker.FCGI_STDIN, 1, b""))
        made = self.same(data, mount)
        if not made:
            self.assertIsNone(self.generic(data, mount)[2], "declined, yet make_environ takes %r" % items)
        return made

    BASE = [(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]

    def test_environs_alike(self):
        for name, items, mount in [
            ("nginx's fastcgi_params", [
                (b"QUERY_STRING", b"a=1"), (b"REQUEST_METHOD", b"GET"), (b"CONTENT_TYPE", b""),
                (b"CONTENT_LENGTH", b""), (b"SCRIPT_NAME", b"/"), (b"REQUEST_URI", b"/?a=1"),
                (b"DOCUMENT_URI", b"/"), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"),
                (b"REMOTE_ADDR", b"127.0.0.1"), (b"SERVER_PORT", b"80"), (b"SERVER_NAME", b""),
                (b"HTTP_HOST", b"example.com:8080")], None),
            ("a body", self.BASE + [(b"CONTENT_LENGTH", b"012"), (b"CONTENT_TYPE", b"text/plain")], None),
            ("chunked", self.BASE + [(b"HTTP_TRANSFER_ENCODING", b"gzip, ChUnKeD")], None),
            ("chunked with a length", self.BASE + [(b"CONTENT_LENGTH", b"3"), (b"HTTP_TRANSFER_ENCODING", b"chunked")], None),
            ("script with slashes", self.BASE + [(b"SCRIPT_NAME", b"/app//"), (b"PATH_INFO", b"//x")], None),
            ("script with a slash, path without", self.BASE + [(b"SCRIPT_NAME", b"/app/"), (b"PATH_INFO", b"x")], None),
            ("script only", self.BASE + [(b"SCRIPT_NAME", b"/app")], None),
            ("path only", self.BASE + [(b"PATH_INFO", b"/caf\xc3\xa9")], None),
            ("mounted", self.BASE + [(b"SCRIPT_NAME", b"/"), (b"PATH_INFO", b"/blog/post")], "/blog"),
            ("mounted, the mount itself", self.BASE + [(b"DOCUMENT_URI", b"/blog")], "/blog"),
            ("mounted, a longer name", self.BASE + [(b"DOCUMENT_URI", b"/blogs/x")], "/blog"),
            ("mounted, from SCRIPT_NAME", self.BASE + [(b"SCRIPT_NAME", b"/blog/a")], "/blog"),
            ("mounted, nothing", self.BASE, "/blog"),
            ("mounted at a latin-1 name", self.BASE + [(b"PATH_INFO", b"/caf\xe9/x")], "/caf\xe9"),
            ("HTTPS on", self.BASE + [(b"HTTPS", b"ON"), (b"HTTP_HOST", b"h")], None),
            ("HTTPS 1", self.BASE + [(b"HTTPS", b"1")], None),
            ("HTTPS off, scheme https", self.BASE + [(b"HTTPS", b"off"), (b"REQUEST_SCHEME", b"HTTPS")], None),
            ("IPv6 host", self.BASE + [(b"HTTP_HOST", b"[::1]:8443")], None),
            ("IPv6 host, no port", self.BASE + [(b"HTTP_HOST", b"[::1]")], None),
            ("host, empty port", self.BASE + [(b"HTTP_HOST", b"h:"), (b"SERVER_NAME", b"n")], None),
            ("host, only a port", self.BASE + [(b"HTTP_HOST", b":81"), (b"SERVER_PORT", b"9")], None),
            ("dropped names", self.BASE + [(b"wsgi.input", b"x"), (b"A=B", b"x"), (b"HTTP_PROXY", b"evil"),
                                      (b"HTTP_CONTENT_LENGTH", b"9"), (b"HTTP_CONTENT_TYPE", b"x"),
                                      (b"HTTP_X-Y", b"x"), (b"HTTP_", b"x"), (b"HTTP_x", b"x"), (b"", b"x"),
                                      (b"HTTP_X_Y", b"kept"), (b"Lower", b"kept")], None),
            ("repeated names", self.BASE + [(b"CONTENT_LENGTH", b"x"), (b"HTTP_A", b"1"), (b"CONTENT_LENGTH", b"5"),
                                       (b"HTTP_A", b"2"), (b"SERVER_PORT", b"1"), (b"SERVER_PORT", b"")], None),
            ("another method and protocol", [(b"REQUEST_METHOD", b"PROPFIND"), (b"SERVER_PROTOCOL", b"HTTP/0.9")], None),
            ("latin-1 values", self.BASE + [(b"HTTP_X", b"\xff\xe9"), (b"HTTP_HOST", b"\xe9:1")], None),
        ]:
            with self.subTest(name):
                self.assertTrue(self.environ(items, mount))

    def test_refused_environs_are_declined(self):
        for name, items in [
            ("a bad length", self.BASE + [(b"CONTENT_LENGTH", b"-1")]),
            ("a long length", self.BASE + [(b"CONTENT_LENGTH", b"1" * 19)]),
            ("a non-ASCII digit", self.BASE + [(b"CONTENT_LENGTH", b"\xb2")]),
            ("no method", [(b"SERVER_PROTOCOL", b"HTTP/1.1")]),
            ("an empty method", [(b"REQUEST_METHOD", b""), (b"SERVER_PROTOCOL", b"HTTP/1.1")]),
            ("a method with a space", [(b"REQUEST_METHOD", b"G T"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]),
            ("no protocol", [(b"REQUEST_METHOD", b"GET")]),
            ("a bare protocol", [(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/")]),
            ("another protocol", [(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"SPDY/3")]),
            ("a NUL in a dropped name", self.BASE + [(b"wsgi.\0", b"")]),
        ]:
            with self.subTest(name):
                self.assertFalse(self.environ(items))

    def test_random_environs_alike(self):
        import random
        rng = random.Random(7)
        names = [b"REQUEST_METHOD", b"SERVER_PROTOCOL", b"CONTENT_LENGTH", b"SCRIPT_NAME", b"PATH_INFO",
                 b"DOCUMENT_URI", b"QUERY_STRING", b"HTTPS", b"REQUEST_SCHEME", b"SERVER_NAME", b"SERVER_PORT",
                 b"HTTP_HOST", b"HTTP_TRANSFER_ENCODING", b"HTTP_X_A", b"HTTP_x", b"wsgi.y", b"A=B", b"OTHER"]
        values = [b"", b"/", b"//", b"/blog", b"/blog/", b"/blogx", b"a/b", b"GET", b"HTTP/1.1", b"HTTP/2",
                  b"7", b"on", b"https", b"chunked", b"h:8", b"[::1]:9", b"[::1]", b"\xe9", b"x y"]
        made = 0
        for _ in range(3000):
            items = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 12))]
            if rng.random() < 0.8:
                items = self.BASE + items
            made += self.environ(items, rng.choice((None, None, "/blog", "/")))
        self.assertGreater(made, 1000, "most random environs are plain")


class AcceptTest(Servers, unittest.TestCase):
    """FastCGIServer's accept, and the fast path's (FastAcceptTest)."""

    def test_accept(self):
        import fcntl
        import socket
        import tempfile
        with tempfile.TemporaryDirectory() as tmp, socket.socket(socket.AF_UNIX) as listener:
            path = os.path.join(tmp, "s")
            listener.bind(path)
            listener.listen()
            listener.setblocking(False)
            srv = worker.FastCGIServer(echo, listener, io.BytesIO(), {})
            srv.use_fastpath(FAST if self.fast else None)
            accept = srv.fast_accept or srv.accept
            fd = listener.fileno()
            self.assertIsNone(accept(fd, False), "none waits")
            self.assertIsNone(accept(fd, True), "none waits, probed")
            for probe in (False, True):
                with socket.socket(socket.AF_UNIX) as client:
                    client.connect(path)
                    conn = accept(fd, probe)
                    self.assertIsInstance(conn, int)
                    try:
                        self.assertTrue(fcntl.fcntl(conn, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "close-on-exec")
                        client.sendall(b"ping")
                        self.assertEqual(os.read(conn, 4), b"ping", "the client's connection")
                    finally:
                        os.close(conn)
                    self.assertIsNone(accept(fd, probe), "only one waited")


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastAcceptTest(AcceptTest):
    fast = True

    def test_error(self):
        import socket
        with socket.socket(socket.AF_UNIX) as other, self.assertRaises(OSError):
            FAST.accept(other.fileno(), False)


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastHeadTest(unittest.TestCase):
    """The C fast path's head makes header_block's block, or declines
    (None) exactly where header_block raises."""

    def same(self, status, headers):
        fast = FAST.head(status, headers)
        try:
            want = worker.header_block(status, headers)
        except worker.AppError:
            want = None
        self.assertEqual(fast, want, (status, headers))
        return fast is not None

    def test_headers_alike(self):
        for status, headers in [
            ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Tab", "a\tb"),
                        ("X-Latin", "caf\xe9")]),
            ("204 No Content", []),
            ("404 ", [("Content-Length", "0"), ("Content-Length", "12"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b")]),
            ("599 \xff", [("X", "")]),
            ("200 OK", [("!#$%&'*+-.^_`|~", "v")]),
            ("200 OK", [("X-Big", "v" * 32700)]),
        ]:
            with self.subTest(status=status, headers=headers):
                self.assertTrue(self.same(status, headers))

    def test_broken_headers_declined(self):
        for status, headers in [
            ("200", []), ("20 OK", []), ("099 Low", []), ("2OO OK", []), ("200OK", []), ("200 O\nK", []),
            ("200 \u20ac", []), (b"200 OK", []), (200, []), (None, []), ("200 OK", (("X", "v"),)),
        ] + [("200 OK", [header]) for header in [
            ("X Bad", "v"), ("X:Bad", "v"), ("", "v"), ("X", "a\rb"), ("X", "a\nb"), ("X", "a\x00b"),
            ("X", "a\x7fb"), ("X", "\u20ac"), ("\u20ac", "v"), ("X", b"v"), ["X", "v"], ("X", "v", "w"), ("X",),
            ("Transfer-Encoding", "chunked"), ("keep-alive", "5"), ("STATUS", "200 OK"),
            ("Content-Length", "-1"), ("Content-Length", "1" * 19), ("Content-Length", "\xb2"), ("X-Big", "v" * 40000),
        ]]:
            with self.subTest(status=status, headers=headers):
                self.assertFalse(self.same(status, headers))

    def test_str_subclasses_declined(self):
        class Str(str):
            pass
        self.assertFalse(self.same(Str("200 OK"), []))
        self.assertFalse(self.same("200 OK", [(Str("X"), "v")]))
        self.assertFalse(self.same("200 OK", [("X", Str("v"))]))

    def test_mangled_headers_alike(self):
        import random
        rng = random.Random(9)
        alphabet = "aZ09 -:\t\r\n\x00\x7f\xe9\u20ac!;"
        made = 0
        for _ in range(3000):
            status = "200 OK" if rng.random() < 0.7 else "".join(rng.choice("20 OKx\n") for _ in range(rng.randint(0, 7)))
            headers = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) if rng.random() < 0.3
                        else rng.choice(("X-A", "Content-Length", "Connection", "Content-Type")),
                        "".join(rng.choice(alphabet if rng.random() < 0.2 else "0123456789")
                                for _ in range(rng.randint(0, 5))))
                       for _ in range(rng.randint(0, 4))]
            made += self.same(status, headers)
        self.assertGreater(made, 300, "some mangled headers are still plain")


class Closing:
    """Iterates chunks; notes in events when closed."""

    def __init__(self, chunks, events):
        self.chunks, self.events = chunks, events

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.events.append("closed")


class ConnTest(unittest.TestCase):
    def setUp(self):
        import socket
        self.ours, self.server = socket.socketpair()
        self.conn = worker.Conn(self.ours)
        self.conn.TIMEOUT = 0.05
        self.addCleanup(self.ours.close)
        self.addCleanup(self.server.close)

    def test_fill_takes_what_came_and_never_waits(self):
        self.server.send(b"abc")
        self.conn.fill()
        self.assertEqual(self.conn.buffered(), 3)
        self.assertEqual(bytes(self.conn.view[self.conn.start:self.conn.end]), b"abc")
        with self.assertRaises(worker.Incomplete):
            self.conn.fill()
        self.assertEqual(self.conn.buffered(), 3, "what came is kept")

    def record(self):
        """The next record, waiting for it as the worker's epoll would."""
        while True:
            try:
                return self.conn.record()
            except worker.Incomplete:
                self.conn.wait(1)

    def test_records_split_and_across_the_buffer_end(self):
        import threading
        # Records of every size up to the largest, sent in pieces that cut
        # headers and contents, so the buffer fills, moves what is unread
        # to its front, and serves each record whole.
        sizes = [0, 1, 7, 8, 65535, 3, 40000, 65535, 65535, 12]
        stream = b"".join(record(worker.FCGI_STDIN, i + 1, bytes([i]) * n, -n & 7) for i, n in enumerate(sizes))

        def write():
            for i in range(0, len(stream), 9973):
                self.server.sendall(stream[i:i + 9973])
        writer = threading.Thread(target=write)
        writer.start()
        for i, n in enumerate(sizes):
            kind, rid, content = self.record()
            self.assertEqual((kind, rid, bytes(content)), (worker.FCGI_STDIN, i + 1, bytes([i]) * n))
        writer.join()
        self.assertEqual(self.conn.buffered(), 0)
        self.conn.release()
        self.assertIsNone(self.conn.mem, "a connection with nothing unread holds no buffer")

    def test_fill_sees_the_close(self):
        self.server.close()
        with self.assertRaisesRegex(worker.ConnClosed, "closed the connection"):
            self.conn.fill()

    def test_send_waits_for_a_slow_reader_then_gives_up(self):
        import threading
        data = b"x" * (4 * worker.SEND_BUFFER)  # past the grown buffer too
        got = []
        reader = threading.Thread(target=lambda: got.append(self.server.recv(1 << 16)))
        reader.start()
        with self.assertRaisesRegex(worker.ConnClosed, "went silent"):
            self.conn.send(data)  # the reader takes 64 KiB, then nothing
        reader.join()
        self.assertTrue(got[0])

    def read_while(self, send, n):
        """Calls send while a thread reads n bytes on the server's side; returns them."""
        import threading
        got = bytearray()

        def read():
            while len(got) < n:
                got.extend(self.server.recv(1 << 14))
        reader = threading.Thread(target=read)
        reader.start()
        send()
        reader.join()
        return bytes(got)

    def test_sendv_keeps_the_order(self):
        parts = [b"head", memoryview(bytes(range(256)) * 4096)[3:], b"", b"x" * 100000, b"tail"]
        want = b"".join(parts)
        self.assertEqual(self.read_while(lambda: self.conn.sendv(list(parts)), len(want)), want)

    def test_a_response_past_the_buffer_grows_it(self):
        import socket

        def size():
            return self.ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        before = size()
        self.conn.send(b"x" * 1000)
        self.assertEqual(size(), before, "a response the buffer holds leaves it as it is")
        data = bytes(range(256)) * 8192  # 2 MiB
        self.assertEqual(self.read_while(lambda: self.conn.send(data), 1000 + len(data))[1000:], data)
        self.assertGreater(size(), before)

    def test_send_whole(self):
        data = bytes(range(256)) * 8192  # 2 MiB: more than the socket holds
        self.assertEqual(self.read_while(lambda: self.conn.send(data), len(data)), data)


if __name__ == "__main__":
    unittest.main()

"""The C fast path (wsgibridge/fastcgi/fastpath.c) against the Python it
stands in for."""

import io
import unittest

from wsgibridge import wsgi
from wsgibridge.fastcgi import connection, environ, records, server
from wsgibridge.tests.support import FAST, Wire, begin, echo, pairs_of, record


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastPathTest(unittest.TestCase):
    """The C fast path reads what read_params reads, or declines (None)."""

    PAIRS = pairs_of([(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                      (b"HTTP_COOKIE", b"c" * 300), (b"E", b"")])

    def generic(self, data, mount=None):
        """read_params and make_environ on data, and the record after it:
        (rid, keep, (environ, content length, to_eof), STDIN's end or not,
        where the unread bytes begin); environ None: refused."""
        srv = server.FastCGIServer(echo, None, io.BytesIO(), {} if mount is None else {"mount": mount})
        conn = connection.Conn(Wire(data))
        pairs, made, ended = srv.read_params(conn)
        self.assertEqual((made, ended), (None, False))
        try:
            made = environ.make_environ(pairs, mount)
        except environ.Refused:
            made = None
        start, ended = conn.start, False
        try:
            ended = conn.record() == (records.FCGI_STDIN, conn.rid, b"")
        except (connection.Incomplete, records.ConnClosed):
            pass
        if not ended:
            conn.start = start
        return conn.rid, conn.keep, made, ended, conn.start

    def fast(self, data, mount=None):
        """The fast path on data placed inside other bytes, which it must
        not read, in generic's terms."""
        buf = bytearray(b"\1" * 24 + data + b"\1" * 24)
        got = FAST.request(buf, 24, 24 + len(data), records.MAX_PARAMS_BYTES, records.MAX_PARAMS,
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
        params = record(records.FCGI_PARAMS, 3, self.PAIRS, -len(self.PAIRS) & 7)
        end = record(records.FCGI_PARAMS, 3, b"")
        stdin_end = record(records.FCGI_STDIN, 3, b"")
        half = len(self.PAIRS) // 2
        split = (record(records.FCGI_PARAMS, 3, self.PAIRS[:half], 3)
                 + record(records.FCGI_PARAMS, 3, self.PAIRS[half:]))
        for name, data in [
            ("GET", begin(3) + params + end + stdin_end),
            ("not kept", begin(3, keep=False) + params + end + stdin_end),
            ("a body follows", begin(3) + params + end + record(records.FCGI_STDIN, 3, b"abc")),
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
        params = record(records.FCGI_PARAMS, 3, self.PAIRS, -len(self.PAIRS) & 7)
        end = record(records.FCGI_PARAMS, 3, b"")
        whole = begin(3) + params + end
        for name, data in [
            ("a management record first", record(records.FCGI_GET_VALUES, 0, b"") + whole),
            ("another role", begin(3, role=2) + params + end),
            ("another request's record inside", begin(3) + record(records.FCGI_PARAMS, 4, b"") + params + end),
            ("an abort", begin(3) + params + record(records.FCGI_ABORT, 3, b"")),
            ("a DATA record", begin(3) + record(records.FCGI_DATA, 3, b"x") + params + end),
            ("version 2", whole[:8] + b"\2" + whole[9:]),
            ("malformed pairs", begin(3) + record(records.FCGI_PARAMS, 3, b"\5\1ab") + end),
            ("request id 0", begin(0) + record(records.FCGI_PARAMS, 0, b"")),
            ("short BEGIN_REQUEST", record(records.FCGI_BEGIN, 3, b"\0\1") + params + end),
            ("too many pairs", begin(3) + record(records.FCGI_PARAMS, 3, pairs_of(
                (b"N%d" % i, b"") for i in range(records.MAX_PARAMS + 1))) + end),
            ("a NUL in a value", begin(3) + record(records.FCGI_PARAMS, 3, self.PAIRS + b"\1\2ab\0") + end),
            ("no params, so no method", begin(3) + end),
        ] + [("cut at %d" % cut, whole[:cut]) for cut in range(len(whole))]:
            with self.subTest(name):
                self.assertIsNone(self.fast(data))

    def test_a_mount_beyond_latin1_leaves_only_the_environ_to_python(self):
        srv = server.FastCGIServer(echo, None, io.BytesIO(), {"mount": "/\u20ac"})
        srv.use_fastpath(FAST)
        self.assertIsNone(srv.fast, "make_environ judges such a mount")
        self.assertIs(srv.fast_head, FAST.head)
        self.assertIs(srv.fast_accept, FAST.accept)

    def test_over_the_size_limit_it_declines(self):
        buf = bytearray(begin(3) + record(records.FCGI_PARAMS, 3, self.PAIRS) + record(records.FCGI_PARAMS, 3, b""))
        self.assertIsNotNone(FAST.request(buf, 0, len(buf), len(self.PAIRS), 10, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf), len(self.PAIRS) - 1, 10, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf), len(self.PAIRS), 3, None))
        self.assertIsNone(FAST.request(buf, 0, len(buf) + 1, 1000, 10, None), "end past the buffer")
        self.assertIsNone(FAST.request(buf, 5, 4, 1000, 10, None), "start past end")

    def test_mangled_requests_are_read_alike_or_declined(self):
        import random
        rng = random.Random(5)
        params = record(records.FCGI_PARAMS, 3, self.PAIRS)
        seeds = [begin(3) + params + record(records.FCGI_PARAMS, 3, b"") + record(records.FCGI_STDIN, 3, b""),
                 begin(1) + record(records.FCGI_PARAMS, 1, pairs_of([
                     (b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.0"), (b"SCRIPT_NAME", b"/a/"),
                     (b"CONTENT_LENGTH", b"1"), (b"HTTP_HOST", b"h:1"), (b"HTTPS", b"on")]))
                 + record(records.FCGI_PARAMS, 1, b"")]
        read = 0
        for _ in range(4000):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(data))
                data[i] = rng.choice((0, 1, 3, 4, 5, 127, 128, 255, rng.randrange(256)))
            try:
                read += self.same(bytes(data))
            except (records.ConnClosed, connection.Incomplete):
                self.fail("the fast path read what read_params refuses: %r" % bytes(data))
        self.assertGreater(read, 100, "some mangled requests are still plain")

    def environ(self, items, mount=None, strict=True):
        """Asserts that the fast path makes the environ of a GET with these
        params as make_environ does, or declines; strict: only where
        make_environ refuses. Returns whether it made it."""
        data = (begin(1) + record(records.FCGI_PARAMS, 1, pairs_of(items)) + record(records.FCGI_PARAMS, 1, b"")
                + record(records.FCGI_STDIN, 1, b""))
        made = self.same(data, mount)
        if not made and strict:
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
            ("script with slashes, kept", self.BASE + [(b"SCRIPT_NAME", b"/app//"), (b"PATH_INFO", b"//x")], "keep"),
            ("script with a slash, path without, kept", self.BASE + [(b"SCRIPT_NAME", b"/app/"), (b"PATH_INFO", b"x")],
             "keep"),
            ("script only", self.BASE + [(b"SCRIPT_NAME", b"/app")], None),
            ("script only, kept", self.BASE + [(b"SCRIPT_NAME", b"/app")], "keep"),
            ("path only", self.BASE + [(b"PATH_INFO", b"/caf\xc3\xa9")], None),
            ("a split the web server made", self.BASE + [(b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/some/path"),
                                                    (b"REQUEST_URI", b"/app/some/path?x=1")], None),
            ("nginx's whole path", self.BASE + [(b"SCRIPT_NAME", b"/app/some/path"), (b"DOCUMENT_URI", b"/app/some/path"),
                                           (b"REQUEST_URI", b"/app/some/path?x=1")], None),
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
            ("another method and protocol", [(b"REQUEST_METHOD", b"PROPFIND"), (b"SERVER_PROTOCOL", b"HTTP/0.9")], None),
            ("latin-1 values", self.BASE + [(b"HTTP_X", b"\xff\xe9"), (b"HTTP_HOST", b"\xe9:1")], None),
        ]:
            with self.subTest(name):
                self.assertTrue(self.environ(items, mount))

    def test_rare_environs_are_left_to_python(self):
        for name, items, mount in [
            ("repeated names", self.BASE + [(b"CONTENT_LENGTH", b"x"), (b"HTTP_A", b"1"), (b"CONTENT_LENGTH", b"5"),
                                       (b"HTTP_A", b"2"), (b"SERVER_PORT", b"1"), (b"SERVER_PORT", b"")], None),
            ("a prefix the web server stripped", self.BASE + [(b"PATH_INFO", b"/some/path"),
                                                         (b"REQUEST_URI", b"/app/some/path")], None),
            ("an encoded request URI", self.BASE + [(b"SCRIPT_NAME", b"/caf\xc3\xa9"), (b"REQUEST_URI", b"/caf%C3%A9")],
             None),
            ("a split with a slash, by the default rule", self.BASE + [(b"SCRIPT_NAME", b"/app/"), (b"PATH_INFO", b"x")],
             None),
            ("a split under a mount point", self.BASE + [(b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/x")], "/app"),
            ("a length not known", self.BASE + [(b"CONTENT_LENGTH", b"-1")], None),
        ]:
            with self.subTest(name):
                self.assertFalse(self.environ(items, mount, strict=False))
                data = (begin(1) + record(records.FCGI_PARAMS, 1, pairs_of(items)) + record(records.FCGI_PARAMS, 1, b"")
                        + record(records.FCGI_STDIN, 1, b""))
                self.assertIsNotNone(self.generic(data, mount)[2], "make_environ takes it")

    def test_refused_environs_are_declined(self):
        for name, items in [
            ("a bad length", self.BASE + [(b"CONTENT_LENGTH", b"-2")]),
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
            made += self.environ(items, rng.choice((None, None, "keep", "/blog", "/")), strict=False)
        self.assertGreater(made, 500, "many random environs are plain")


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastHeadTest(unittest.TestCase):
    """The C fast path's head makes header_block's block, or declines
    (None) exactly where header_block raises."""

    def same(self, status, headers):
        fast = FAST.head(status, headers)
        try:
            want = wsgi.header_block(status, headers)
        except wsgi.AppError:
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
            ("200 OK", []),
            ("200 OK", [("Location", "/x")]),
            ("200 Fine", [("X", "1"), ("LOCATION", "/x")]),
            ("201 Created", [("Location", "/x")]),
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

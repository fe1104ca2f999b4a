"""The environ made of a FastCGI request's params (wsgibridge.fastcgi.environ)."""

import unittest

from wsgibridge.fastcgi import environ, records
from wsgibridge.tests.support import pairs_of

GET = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}


def make(mount=None, **params):
    return environ.make_environ({**GET, **params}, mount)


class SplitPathTest(unittest.TestCase):
    """What the app sees for GET /app/some/path?x=1 behind each web server,
    configured as its guide shows (the README's table)."""

    URI = "/app/some/path?x=1"

    def test_fronts(self):
        for front, sent, want in [
            ("nginx location /, stock fastcgi_params",
             {"SCRIPT_NAME": "/app/some/path", "DOCUMENT_URI": "/app/some/path"}, ("", "/app/some/path")),
            ("Apache mod_fcgid, Alias /app /srv/site/app.wsgi",
             {"SCRIPT_NAME": "/app", "PATH_INFO": "/some/path"}, ("/app", "/some/path")),
            ("lighttpd fastcgi.server = (\"/app\" => ...)",
             {"SCRIPT_NAME": "/app", "PATH_INFO": "/some/path"}, ("/app", "/some/path")),
            ("lighttpd (\"/\" => ...) with fix-root-scriptname",
             {"SCRIPT_NAME": "", "PATH_INFO": "/app/some/path"}, ("", "/app/some/path")),
            ("Caddy handle /app/* with split /app",
             {"SCRIPT_NAME": "/app", "PATH_INFO": "/some/path"}, ("/app", "/some/path")),
            ("Caddy handle_path /app/* (strips the prefix)",
             {"SCRIPT_NAME": "", "PATH_INFO": "/some/path"}, ("/app", "/some/path")),
            ("H2O paths \"/app\": fastcgi.connect",
             {"SCRIPT_NAME": "", "PATH_INFO": "/app/some/path"}, ("", "/app/some/path")),
            ("Apache mod_proxy_fcgi, ProxyPass /app/",
             {"SCRIPT_NAME": "/app", "PATH_INFO": "/some/path"}, ("/app", "/some/path")),
        ]:
            with self.subTest(front):
                env, _, _ = make(REQUEST_URI=self.URI, **sent)
                self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), want)

    def test_a_stripped_prefix_is_decoded_and_normalised(self):
        for uri, path, want in [
            ("/caf%C3%A9/x", "/x", "/caf\xc3\xa9"),     # decoded, as the path the front gave
            ("/app//x", "/x", "/app"),                   # slashes merged
            ("/app/./b/../x", "/x", "/app"),             # dot segments resolved
            ("/appx", "/x", ""),                         # not at a segment boundary
            ("/app/x/", "/x", ""),                       # not a suffix
            ("/other", "/x", ""),
            ("http://h/app/x", "/x", ""),                # an absolute target: no prefix
        ]:
            with self.subTest(uri):
                env, _, _ = make(REQUEST_URI=uri, PATH_INFO=path)
                self.assertEqual(env["SCRIPT_NAME"], want)
                self.assertEqual(env["PATH_INFO"], path)

    def test_mount_takes_the_whole_path_whatever_the_split(self):
        for sent, want in [
            ({"SCRIPT_NAME": "/app/some", "PATH_INFO": "/path"}, "/some/path"),   # lighttpd "/app/"
            ({"SCRIPT_NAME": "/app", "PATH_INFO": "/some/path"}, "/some/path"),
            ({"SCRIPT_NAME": "/app/some/path"}, "/some/path"),                    # nginx stock
            ({"SCRIPT_NAME": "/", "PATH_INFO": "/app/some/path"}, "/some/path"),
            ({"DOCUMENT_URI": "/app"}, ""),
            ({"SCRIPT_NAME": "/apps/x"}, "/apps/x"),                              # not under the mount
        ]:
            with self.subTest(sent):
                env, _, _ = make("/app", REQUEST_URI=self.URI, **sent)
                self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("/app", want))

    def test_keep(self):
        env, _, _ = make(environ.KEEP, SCRIPT_NAME="/app/", PATH_INFO="x", REQUEST_URI="/zz/app/x")
        self.assertEqual((env["SCRIPT_NAME"], env["PATH_INFO"]), ("/app", "/x"), "no prefix is added back")


class ContentLengthTest(unittest.TestCase):
    def test_unknown_length_reads_to_the_end(self):
        env, length, to_eof = make(CONTENT_LENGTH="-1", REQUEST_METHOD="POST")
        self.assertEqual((length, to_eof), (-1, True))
        self.assertNotIn("CONTENT_LENGTH", env, "set once the body has come")

    def test_malformed_lengths_are_refused(self):
        for cl in ("abc", "+5", "1e3", "-2", "-1 ", " 5", "1" * 19):
            with self.subTest(cl):
                with self.assertRaises(environ.Refused) as caught:
                    make(CONTENT_LENGTH=cl)
                self.assertEqual(caught.exception.status, 400)


class RepeatedNamesTest(unittest.TestCase):
    def pairs(self, *items):
        data = pairs_of(items)
        got = {}
        records.decode_pairs(data, got, records.MAX_PARAMS)
        return got

    def test_a_repeated_header_is_joined_in_order(self):
        got = self.pairs((b"HTTP_X_DUP", b"one"), (b"REQUEST_METHOD", b"GET"), (b"HTTP_X_DUP", b"two"),
                         (b"HTTP_COOKIE", b"a=1"), (b"HTTP_COOKIE", b"b=2"))
        self.assertEqual(got["HTTP_X_DUP"], "one, two")
        self.assertEqual(got["HTTP_COOKIE"], "a=1; b=2")

    def test_a_header_spelled_twice_is_not_the_clients_alone(self):
        # X-Real-User from the proxy, X_Real_User from the client: the
        # same name once in CGI; the app sees both, never the client's alone.
        got = self.pairs((b"HTTP_X_REAL_USER", b"alice"), (b"HTTP_X_REAL_USER", b"mallory"))
        self.assertEqual(got["HTTP_X_REAL_USER"], "alice, mallory")

    def test_other_names_keep_the_last(self):
        got = self.pairs((b"SCRIPT_NAME", b"/a"), (b"SCRIPT_NAME", b"/b"), (b"HTTP_A", b"x" * 200), (b"HTTP_A", b"y"))
        self.assertEqual(got["SCRIPT_NAME"], "/b", "a config that repeats a param to override it")
        self.assertEqual(got["HTTP_A"], "x" * 200 + ", y", "long lengths too")

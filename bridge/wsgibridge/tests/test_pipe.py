"""wsgi.input over the frames from Go (wsgibridge.pipe)."""

import io
import unittest

from wsgibridge import frames, pipe
from wsgibridge.tests.support import frame_stream


class InputTest(unittest.TestCase):
    def test_read_sizes(self):
        inp = pipe.Input(frame_stream(("B", b"hello "), ("B", b"world"), ("E", b"")), 1)
        self.assertEqual(inp.read(3), b"hel")
        self.assertEqual(inp.read(5), b"lo wo")
        self.assertEqual(inp.read(), b"rld")
        self.assertEqual(inp.read(), b"")
        self.assertEqual(inp.read(10), b"")

    def test_readline(self):
        inp = pipe.Input(frame_stream(("B", b"ab"), ("B", b"c\nde"), ("B", b"f\ng"), ("E", b"")), 1)
        self.assertEqual(inp.readline(), b"abc\n")
        self.assertEqual(inp.readline(2), b"de")
        self.assertEqual(inp.readline(), b"f\n")
        self.assertEqual(inp.readline(), b"g")
        self.assertEqual(inp.readline(), b"")

    def test_iteration_and_readlines(self):
        inp = pipe.Input(frame_stream(("B", b"1\n2\n"), ("B", b"3"), ("E", b"")), 1)
        self.assertEqual(list(inp), [b"1\n", b"2\n", b"3"])
        inp = pipe.Input(frame_stream(("B", b"1\n2\n3\n"), ("E", b"")), 1)
        self.assertEqual(inp.readlines(2), [b"1\n"])
        self.assertEqual(inp.readlines(), [b"2\n", b"3\n"])

    def test_drain_then_next_request(self):
        rin = frame_stream(("B", b"unread"), ("E", b""), ("R", b"next"))
        pipe.Input(rin, 1).drain()
        self.assertEqual(chr(frames.read_header(rin)[0]), "R")

    def test_stale_frame(self):
        inp = pipe.Input(frame_stream(("B", b"x"), rid=2), 1)
        with self.assertRaises(frames.ProtocolError):
            inp.read()

    def test_truncated_pipe(self):
        inp = pipe.Input(io.BufferedReader(io.BytesIO(frames.HEADER.pack(ord("B"), 0, 1, 10) + b"abc")), 1)
        with self.assertRaises(frames.ProtocolError):
            inp.read()

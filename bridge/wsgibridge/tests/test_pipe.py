"""wsgi.input over the frames from Go (wsgibridge.pipe)."""

import io
import unittest

from wsgibridge import frames, pipe, wsgi
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


WHY = b"the client sent 6 of its CONTENT_LENGTH 100 bytes and went away"


def broken(*pieces):
    """A body of pieces that broke off, then the next request's frame."""
    return frame_stream(*[("B", p) for p in pieces], ("E", WHY, frames.BROKEN), ("R", b"next"))


class BrokenInputTest(unittest.TestCase):
    """A body that broke off is never read as a whole one."""

    def test_read_all_raises(self):
        with self.assertRaises(wsgi.BodyError) as caught:
            pipe.Input(broken(b"abc", b"def"), 1).read()
        self.assertIsInstance(caught.exception, OSError)
        self.assertEqual(str(caught.exception), WHY.decode())

    def test_reads_before_the_break_are_whole(self):
        inp = pipe.Input(broken(b"abc", b"def"), 1)
        self.assertEqual(inp.read(4), b"abcd")
        self.assertEqual(inp.read(2), b"ef")
        with self.assertRaises(wsgi.BodyError):
            inp.read(1)

    def test_read_past_the_break_raises(self):
        with self.assertRaises(wsgi.BodyError):
            pipe.Input(broken(b"abc"), 1).read(4)

    def test_readline(self):
        inp = pipe.Input(broken(b"ab\ncd"), 1)
        self.assertEqual(inp.readline(), b"ab\n")
        self.assertEqual(inp.readline(2), b"cd")
        with self.assertRaises(wsgi.BodyError):
            inp.readline()
        with self.assertRaises(wsgi.BodyError):
            list(pipe.Input(broken(b"1\n2"), 1))

    def test_drain_stays_in_step(self):
        rin = broken(b"unread")
        pipe.Input(rin, 1).drain()
        self.assertEqual(chr(frames.read_header(rin)[0]), "R")

    def test_whole_body_is_not_broken(self):
        inp = pipe.Input(frame_stream(("B", b"abc"), ("E", b"")), 1)
        self.assertEqual(inp.read(10), b"abc")
        self.assertEqual(inp.read(), b"")


class StopInsideAFrameTest(unittest.TestCase):
    """A stop that comes while a body frame is read is raised once the
    frame is read whole: raised in the middle, it would leave the rest of
    the frame to be read as the next frame's header."""

    class Stopping(io.RawIOBase):
        """Gives its data a byte at a time and signals a stop after the
        first byte, as SIGUSR1 would while the app waits for the body."""

        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def readinto(self, b):
            if self.pos == 1:
                wsgi.on_stop(None, None)
            if self.pos >= len(self.data):
                return 0
            b[0] = self.data[self.pos]
            self.pos += 1
            return 1

    def setUp(self):
        wsgi.app_running, wsgi.stop_pending, wsgi.stop_raised = True, False, False

    def tearDown(self):
        wsgi.app_running, wsgi.stop_pending, wsgi.stop_raised = False, False, False

    def test_stop_waits_for_the_frame(self):
        stream = frame_stream(("B", b"hello"), ("B", b"world"), ("E", b""), ("R", b"next"))
        rin = io.BufferedReader(self.Stopping(stream.read()), buffer_size=1)
        inp = pipe.Input(rin, 1)
        with self.assertRaises(wsgi.Stop):
            inp.read()
        wsgi.app_running = False
        inp.drain()
        self.assertEqual(chr(frames.read_header(rin)[0]), "R")

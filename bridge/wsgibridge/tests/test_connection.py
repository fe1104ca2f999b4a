"""One FastCGI connection (wsgibridge.fastcgi.connection)."""

import unittest

from wsgibridge.fastcgi import connection, records
from wsgibridge.tests.support import record


class ConnTest(unittest.TestCase):
    def setUp(self):
        import socket
        self.ours, self.server = socket.socketpair()
        self.conn = connection.Conn(self.ours)
        self.conn.TIMEOUT = 0.05
        self.addCleanup(self.ours.close)
        self.addCleanup(self.server.close)

    def test_fill_takes_what_came_and_never_waits(self):
        self.server.send(b"abc")
        self.conn.fill()
        self.assertEqual(self.conn.buffered(), 3)
        self.assertEqual(bytes(self.conn.view[self.conn.start:self.conn.end]), b"abc")
        with self.assertRaises(connection.Incomplete):
            self.conn.fill()
        self.assertEqual(self.conn.buffered(), 3, "what came is kept")

    def record(self):
        """The next record, waiting for it as the worker's epoll would."""
        while True:
            try:
                return self.conn.record()
            except connection.Incomplete:
                self.conn.wait(1)

    def test_records_split_and_across_the_buffer_end(self):
        import threading
        # Records of every size up to the largest, sent in pieces that cut
        # headers and contents, so the buffer fills, moves what is unread
        # to its front, and serves each record whole.
        sizes = [0, 1, 7, 8, 65535, 3, 40000, 65535, 65535, 12]
        stream = b"".join(record(records.FCGI_STDIN, i + 1, bytes([i]) * n, -n & 7) for i, n in enumerate(sizes))

        def write():
            for i in range(0, len(stream), 9973):
                self.server.sendall(stream[i:i + 9973])
        writer = threading.Thread(target=write)
        writer.start()
        for i, n in enumerate(sizes):
            kind, rid, content = self.record()
            self.assertEqual((kind, rid, bytes(content)), (records.FCGI_STDIN, i + 1, bytes([i]) * n))
        writer.join()
        self.assertEqual(self.conn.buffered(), 0)
        self.conn.release()
        self.assertIsNone(self.conn.mem, "a connection with nothing unread holds no buffer")

    def test_fill_sees_the_close(self):
        self.server.close()
        with self.assertRaisesRegex(records.ConnClosed, "closed the connection"):
            self.conn.fill()

    def test_send_waits_for_a_slow_reader_then_gives_up(self):
        import threading
        data = b"x" * (4 * connection.SEND_BUFFER)  # past the grown buffer too
        got = []
        reader = threading.Thread(target=lambda: got.append(self.server.recv(1 << 16)))
        reader.start()
        with self.assertRaisesRegex(records.ConnClosed, "went silent"):
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

    def test_the_buffer_grows_as_far_as_asked(self):
        import socket
        self.addCleanup(setattr, connection, "SEND_BUFFER", connection.SEND_BUFFER)
        connection.SEND_BUFFER = 256 << 10  # --send-buffer 256
        data = bytes(range(256)) * 8192  # 2 MiB
        self.assertEqual(self.read_while(lambda: self.conn.send(data), len(data)), data)
        self.assertLessEqual(self.ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), 2 * (256 << 10),
                             "a MiB response never lies whole in the kernel")

    def test_send_whole(self):
        data = bytes(range(256)) * 8192  # 2 MiB: more than the socket holds
        self.assertEqual(self.read_while(lambda: self.conn.send(data), len(data)), data)

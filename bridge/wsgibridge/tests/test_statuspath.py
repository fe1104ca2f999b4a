"""The paths a FastCGI worker answers itself (wsgibridge.fastcgi.statuspath)."""

import socket
import threading
import unittest

from wsgibridge.fastcgi import board, statuspath


def call(app, environ):
    got = []
    body = b"".join(app(environ, lambda status, headers: got.append((status, dict(headers)))))
    return got[0][0], got[0][1], body


class StatusPathTest(unittest.TestCase):
    def test_paths_from_the_options(self):
        self.assertIsNone(statuspath.paths({}, None))
        self.assertEqual(list(statuspath.paths({"ping-path": "/ping"}, None)), ["/ping"])
        self.assertIsNone(statuspath.paths({"status-path": "/status"}, None), "no status without the supervisor's socket")

    def test_path_of_is_the_client_path_whatever_the_mount(self):
        self.assertEqual(statuspath.path_of({"REQUEST_URI": "/s?full", "SCRIPT_NAME": "/app", "PATH_INFO": "/x"}), "/s")
        self.assertEqual(statuspath.path_of({"SCRIPT_NAME": "/app", "PATH_INFO": "/s"}), "/app/s")

    def test_ping(self):
        self.assertEqual(call(statuspath.Ping(None), {})[::2], ("200 OK", b"pong\n"))
        page = bytearray(board.SIZE)
        ping = statuspath.Ping(page)
        self.assertEqual(call(ping, {})[::2], ("200 OK", b"pong\n"))
        page[board.DEGRADED] = 1
        status, _, body = call(ping, {})
        self.assertEqual(status, "503 Service Unavailable")
        self.assertIn(b"degraded", body)

    def test_status_asks_the_supervisor(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(theirs.close)
        asked = []

        def supervisor():
            while len(asked) < 2:
                ask = theirs.recv(16)
                asked.append(ask)
                theirs.send(b'{"full": %s}' % (b"true" if ask == b"full" else b"false"))
        t = threading.Thread(target=supervisor)
        t.start()
        app = statuspath.Status(ours.detach())
        status, headers, body = call(app, {"QUERY_STRING": "full"})
        self.assertEqual((status, headers["Content-Type"], body), ("200 OK", "application/json", b'{"full": true}'))
        self.assertEqual(call(app, {"QUERY_STRING": ""})[2], b'{"full": false}')
        t.join()
        self.assertEqual(asked, [b"full", b"short"])

    def test_status_without_an_answer_is_503(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.close()  # the supervisor is gone
        app = statuspath.Status(ours.detach())
        self.assertEqual(call(app, {})[0], "503 Service Unavailable")

"""The FastCGI worker's connections between requests, and its accept
(wsgibridge.fastcgi.server)."""

import io
import os
import unittest

from wsgibridge import spool
from wsgibridge.fastcgi import connection, server
from wsgibridge.tests.support import END, Epoll, FAST, Servers, Wire, echo, parse, request, stdout


class FastCGIConnsTest(Servers, unittest.TestCase):
    """The connections a worker keeps between its requests."""

    def setUp(self):
        self.ctl = io.BytesIO()
        self.srv = self.server(echo, self.ctl)
        self.srv.ep = Epoll()

    def tearDown(self):
        held, collecting = spool.Body.held, dict(spool.Body.collecting)
        spool.Body.held = 0
        spool.Body.collecting.clear()
        self.assertEqual((held, collecting), (0, {}), "every body gave its memory back")

    def keep(self, conn, since):
        self.srv.conns[conn.fd] = (conn, since)
        self.srv.ep.register(conn.fd, connection.EPOLLIN)

    def test_bodies_streamed_at_once_take_turns_in_memory(self):
        size = spool.BODY_MEMORY * 3 // 4
        pieces = [bytes([65 + i]) * 32768 for i in range(size // 32768)]
        data = request(b"/", body=pieces)
        wires = [Wire(data[:len(data) * 9 // 10], fd=10 + i) for i in range(2)]
        conns = [connection.Conn(w) for w in wires]
        for conn in conns:
            self.srv.admit(conn)
        self.assertLessEqual(spool.Body.held, spool.BODY_MEMORY)
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
        self.assertEqual(self.srv.ep.watched[second.fd], connection.EPOLLIN)
        for wire in wires:
            self.assertEqual(len(wire.sends), 1)
            self.assertTrue(stdout(wire.sends[0]).endswith(b"\r\n\r\n" + b"".join(pieces)), "the body echoed whole")
            self.assertTrue(wire.sends[0].endswith(END))

    def test_a_stalled_body_goes_to_a_file_and_lets_the_others_on(self):
        size = spool.BODY_MEMORY * 3 // 4
        pieces = [b"s" * 32768] * (size // 32768)
        data = request(b"/", body=pieces)
        wires = [Wire(data[:len(data) * 9 // 10], fd=10 + i) for i in range(2)]
        stalled, waiting = [connection.Conn(w) for w in wires]
        self.srv.admit(stalled)
        self.srv.admit(waiting)
        self.assertTrue(waiting.paused)
        grew = spool.Body.collecting[stalled.pending.body]
        self.srv.unstall(grew + spool.BODY_STALL / 2)
        self.assertIsNone(stalled.pending.body.file, "a short pause is no stall")
        self.srv.unstall(grew + spool.BODY_STALL * 2)
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
        params = data[:-24]  # up to the end of the params: the body is to come
        conns = {}
        for name, since, part in (("idle, recent", 100, b""), ("idle, old", 100 - self.srv.IDLE_TIMEOUT - 1, b""),
                                  ("header unfinished, recent", 100 - self.srv.header_timeout + 1, data[:20]),
                                  ("header unfinished, old", 100 - self.srv.header_timeout - 1, data[:20]),
                                  ("unfinished, recent", 100 - self.srv.header_timeout - 1, params),
                                  ("unfinished, old", 100 - connection.Conn.TIMEOUT - 1, params)):
            ours, theirs = socket.socketpair()
            self.addCleanup(theirs.close)
            self.addCleanup(ours.close)
            theirs.sendall(part)
            conn = conns[name] = connection.Conn(ours)
            self.assertTrue(self.srv.serve_conn(conn))
            self.keep(conn, since)
        self.assertTrue(self.srv.headers_waiting, "a header is unfinished: the loop wakes to sweep")
        self.srv.sweep(100)
        self.assertEqual(sorted(self.srv.ep.gone), sorted(
            [conns["idle, old"].fd, conns["header unfinished, old"].fd, conns["unfinished, old"].fd]))
        self.assertEqual({c for c, _ in self.srv.conns.values()},
                         {conns["idle, recent"], conns["header unfinished, recent"], conns["unfinished, recent"]})
        logged = b"".join(payload for kind, _, payload in parse(self.ctl.getvalue()) if kind == "L").decode()
        self.assertIn("left a request unfinished for 60s", logged)
        self.assertIn("left a request's header unfinished for 10s", logged)
        self.assertTrue(self.srv.headers_waiting, "one is still unfinished")

    def test_leaving_serves_a_request_still_coming(self):
        import socket
        import threading
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        data = request(b"/", body=(b"last ", b"words"))
        theirs.sendall(data[:60])
        conn = connection.Conn(ours)
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

    def test_send_buffer_is_set(self):
        self.addCleanup(setattr, connection, "SEND_BUFFER", connection.SEND_BUFFER)
        server.FastCGIServer(echo, None, io.BytesIO(), {"send-buffer": "262144"})
        self.assertEqual(connection.SEND_BUFFER, 262144)

    def test_a_kept_connection_passes_to_a_peer_through_the_lobby(self):
        import _socket
        import socket
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        lobby_out, lobby = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(lobby_out.close)
        self.addCleanup(lobby.close)
        self.srv.socket, self.srv.lobby_out = _socket, lobby_out
        conn = connection.Conn(ours)
        self.keep(conn, 0)
        self.assertTrue(self.srv.pass_conn(conn))
        self.assertEqual(self.srv.ep.gone, [conn.fd], "the connection left this worker")
        self.assertEqual(self.srv.conns, {})
        peer = self.server(echo)
        peer.socket = _socket
        fd, kind = peer.receive_conn(lobby)
        self.assertIsNotNone(fd)
        self.assertEqual(kind, b"c", "no copy of it is kept")
        self.assertEqual(peer.receive_conn(lobby), (None, None), "one connection was passed, once")
        passed = connection.Conn(_socket.socket(fileno=fd))
        self.addCleanup(passed.close)
        theirs.sendall(request(b"/", body=(b"still here",)))
        self.assertTrue(peer.serve_conn(passed))
        got = theirs.recv(65536)
        self.assertIn(b"\r\n\r\nstill here", got)
        self.assertTrue(got.endswith(END))


@unittest.skipIf(FAST is None, "no WSGIBRIDGE_FASTPATH")
class FastCGIConnsFastPathTest(FastCGIConnsTest):
    fast = True


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
            srv = server.FastCGIServer(echo, listener, io.BytesIO(), {})
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

"""The connections a worker keeps, and the supervisor's copies of them
(wsgibridge.fastcgi.keep, and the server's use of it)."""

import os
import socket
import sys
import unittest

from wsgibridge.fastcgi import connection
from wsgibridge.fastcgi.keep import KEPT, Keeper
from wsgibridge.tests.support import END, Epoll, Servers, request


def received(sock):
    """The descriptor a message on sock carried, and the message."""
    msg, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_LEN(4), socket.MSG_DONTWAIT)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            return int.from_bytes(data[:4], sys.byteorder), msg
    return None, msg


class KeeperTest(unittest.TestCase):
    def setUp(self):
        self.theirs, self.supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(self.supervisor.close)
        self.table = memoryview(bytearray(4 * 8)).cast("Q")
        self.keeper = Keeper(self.theirs.detach(), self.table)
        self.addCleanup(self.keeper.sock.close)

    def pair(self):
        ours, web = socket.socketpair()
        self.addCleanup(web.close)
        self.addCleanup(ours.close)
        return connection.Conn(ours), web

    def test_a_registered_connection_is_sent_and_listed(self):
        conn, _ = self.pair()
        self.keeper.register(conn)
        fd, msg = received(self.supervisor)
        self.addCleanup(os.close, fd)
        self.assertEqual(msg, KEPT)
        ino = os.fstat(conn.fd).st_ino
        self.assertEqual(os.fstat(fd).st_ino, ino, "the supervisor got the same socket")
        self.assertTrue(conn.kept)
        self.assertEqual(self.table[conn.cell], ino << 1, "listed, no request under way")

    def test_a_full_table_lists_no_more(self):
        conns = [self.pair()[0] for _ in range(5)]
        for conn in conns:
            self.keeper.adopt(conn)
        self.assertEqual(sorted(c.cell for c in conns[:4]), [0, 1, 2, 3])
        self.assertIsNone(conns[4].cell)
        self.keeper.forget(conns[1])
        self.assertEqual(self.table[1], 0)
        self.keeper.enter(conns[4])
        self.assertEqual(conns[4].cell, 1, "a freed place is taken again")
        more, _ = self.pair()
        self.keeper.register(more)
        self.assertFalse(more.kept, "no copy is sent that the table cannot list")
        with self.assertRaises(BlockingIOError):
            received(self.supervisor)

    def test_an_ended_connection_ends_for_the_web_server_despite_the_copy(self):
        conn, web = self.pair()
        self.keeper.register(conn)
        fd, _ = received(self.supervisor)
        self.addCleanup(os.close, fd)
        self.keeper.end(conn)
        conn.close()
        web.settimeout(5)
        self.assertEqual(web.recv(10), b"", "the web server sees the connection end")
        self.assertEqual(list(self.table), [0, 0, 0, 0])

    def test_a_full_socket_leaves_it_unkept(self):
        self.supervisor.close()
        conn, _ = self.pair()
        self.keeper.register(conn)
        self.assertFalse(conn.kept)
        self.assertIsNone(conn.cell)


class KeptByServerTest(Servers, unittest.TestCase):
    """The server marks a kept connection while its request runs, sends the
    keeper a connection that turns out kept, and passes a kept one on as
    kept."""

    def setUp(self):
        theirs, self.supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(self.supervisor.close)
        self.table = memoryview(bytearray(8 * 8)).cast("Q")
        self.seen = []

        def app(environ, start_response):
            self.seen.append([w & 1 for w in self.table if w])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        self.srv = self.server(app)
        self.srv.ep = Epoll()
        self.srv.keeper = Keeper(theirs.detach(), self.table)
        self.addCleanup(self.srv.keeper.sock.close)

    def test_marked_while_its_request_runs(self):
        ours, web = socket.socketpair()
        self.addCleanup(web.close)
        conn = connection.Conn(ours)
        self.addCleanup(conn.close)
        web.sendall(request(b"/", keep=True))
        self.srv.admit(conn)
        self.assertTrue(web.recv(65536).endswith(END))
        self.assertEqual(self.seen, [[]], "not kept until its first request ended")
        fd, _ = received(self.supervisor)
        self.addCleanup(os.close, fd)
        self.assertEqual(self.table[conn.cell], os.fstat(conn.fd).st_ino << 1)
        web.sendall(request(b"/", keep=True))
        self.srv.turn(conn)
        self.assertTrue(web.recv(65536).endswith(END))
        self.assertEqual(self.seen[1], [1], "marked while the app ran")
        self.assertEqual(self.table[conn.cell] & 1, 0, "unmarked after")
        with self.assertRaises(BlockingIOError):
            received(self.supervisor)  # sent once

    def test_a_connection_not_kept_is_not_sent(self):
        ours, web = socket.socketpair()
        self.addCleanup(web.close)
        web.sendall(request(b"/", keep=False))
        self.srv.admit(connection.Conn(ours))
        with self.assertRaises(BlockingIOError):
            received(self.supervisor)

    def test_passed_on_as_kept(self):
        import _socket
        lobby_out, lobby = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(lobby_out.close)
        self.addCleanup(lobby.close)
        self.srv.socket, self.srv.lobby_out = _socket, lobby_out
        ours, web = socket.socketpair()
        self.addCleanup(web.close)
        conn = connection.Conn(ours)
        web.sendall(request(b"/", keep=True))
        self.srv.admit(conn)
        web.recv(65536)
        copy, _ = received(self.supervisor)
        self.addCleanup(os.close, copy)
        self.assertTrue(self.srv.pass_conn(conn))
        self.assertEqual([w for w in self.table if w], [], "out of this worker's table")
        fd, what = received(lobby)
        self.assertEqual(what, KEPT)
        theirs, supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(supervisor.close)
        peer = self.server(lambda e, s: [])
        peer.keeper = Keeper(theirs.detach(), memoryview(bytearray(8 * 8)).cast("Q"))
        self.addCleanup(peer.keeper.sock.close)
        passed = connection.Conn(socket.socket(fileno=fd))
        self.addCleanup(passed.close)
        peer.keeper.adopt(passed)
        self.assertEqual(peer.keeper.table[passed.cell], os.fstat(copy).st_ino << 1, "in the peer's table")


if __name__ == "__main__":
    unittest.main()

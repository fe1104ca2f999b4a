"""What outlives a worker: the connections it keeps for the web server
between requests. A request nginx sends on one of them waits there,
unread, while the worker is busy; if the worker died, its copy of the
connection would close with it and the request be lost. So the worker
sends the supervisor a copy of each connection that turns out kept, and
lists what it keeps in its table on the board, marked while a request of
the connection is read or runs. When the worker dies, the supervisor
(bridge/keeper.go) hands the unmarked ones to the other workers and
closes the marked ones: only the request the worker was running fails.

A kept connection is shut down before it is closed, so the web server
sees it end though the supervisor still holds a copy.
"""

import os
import sys

KEPT = b"k"  # what the lobby carries beside a connection the supervisor has a copy of


class Keeper:
    """A worker's side of the keeper: the socket it sends its kept
    connections on (fd), and its table on the board (words)."""

    def __init__(self, fd, words):
        import _socket
        self.socket = _socket
        self.sock = _socket.socket(fileno=fd)
        self.table = words
        self.free = list(range(len(words) - 1, -1, -1))

    def register(self, conn):
        """Sends the supervisor a copy of conn, kept from now on. Not while
        the table is full (a copy the table does not list would outlive a
        dead worker unseen, its request hanging), nor when the supervisor's
        socket is: then conn is lost with the worker, as before."""
        if not self.free:
            return
        s = self.socket
        try:
            self.sock.sendmsg([KEPT], [(s.SOL_SOCKET, s.SCM_RIGHTS, conn.fd.to_bytes(4, sys.byteorder))], s.MSG_DONTWAIT)
        except OSError:
            return
        self.adopt(conn)

    def adopt(self, conn):
        """Lists conn, of which the supervisor has a copy, in the table."""
        conn.kept = True
        conn.mark = os.fstat(conn.fd).st_ino << 1
        self.enter(conn)

    def enter(self, conn):
        if self.free:
            conn.cell = self.free.pop()
            self.table[conn.cell] = conn.mark

    def forget(self, conn):
        """Takes conn out of the table: it leaves this worker."""
        cell = conn.cell
        if cell is not None:
            self.table[cell] = 0
            self.free.append(cell)
            conn.cell = None

    def end(self, conn):
        """Shuts a kept connection down before it is closed (see above)."""
        self.forget(conn)
        try:
            conn.sock.shutdown(self.socket.SHUT_RDWR)
        except OSError:
            pass

"""The FastCGI worker's event loop: it accepts connections from the
listening socket (a run of them per wake-up), keeps the web server's
connections between requests and closes idle ones, gives each its turn,
passes ready connections to idle peers through the lobby, pauses bodies
that wait for memory, and leaves when the supervisor retires it. What
happens to a request is request's; the watch over it is watch's.
"""

import os
import sys

from wsgibridge.app import mtime
from wsgibridge.spool import BODY_STALL, Body
from wsgibridge.fastcgi.board import ACCEPTED, SLOTS, open_board
from wsgibridge.fastcgi import connection
from wsgibridge.fastcgi.connection import EPOLLIN, Conn
from wsgibridge.fastcgi.fastpath import load_fastpath
from wsgibridge.fastcgi.keep import KEPT, Keeper
from wsgibridge.fastcgi.request import Requests
from wsgibridge.fastcgi.statuspath import paths
from wsgibridge.fastcgi.watch import Watch
from wsgibridge.frames import CHANGED, EXITING, FINISHED, LOG, LOG_WARN, send

ACCEPT_RUN = 16
# Seconds a web server may leave a request's header (its BEGIN_REQUEST and
# PARAMS, which web servers write at once) unfinished.
HEADER_TIMEOUT = 10.0
MSG_CMSG_CLOEXEC = 0x40000000  # Linux; not in the socket module


class FastCGIServer(Requests, Watch):
    """Serves FastCGI connections taken from the listening socket until
    fd 3 closes (the bridge retires this worker) or max_requests are done."""

    IDLE_TIMEOUT = 75.0  # a kept connection with no request is closed after it

    def __init__(self, app, listener, ctl, opts):
        self.app = app
        self.listener = listener
        self.ctl = ctl
        self.mount = opts.get("mount")
        self.timeout = float(opts.get("timeout", 0))
        self.header_timeout = float(opts.get("header-timeout", HEADER_TIMEOUT))
        self.headers_waiting = False  # a request's header is unfinished: sweep every second
        self.max_requests = int(opts.get("max-requests", 0))
        if "send-buffer" in opts:
            connection.SEND_BUFFER = int(opts["send-buffer"])
        self.max_conns = opts.get("workers", "1")
        self.access_log = "access-log" in opts
        self.served = 0
        self.accepted = 0  # on the board, for the supervisor's count of the waiting
        self.conns = {}
        self.paused = []  # connections whose body waits for memory
        self.taken = Body.taken
        self.draining = False
        self.next_sweep = 0.0
        self.board = self.current = self.current_resp = self.current_req = None
        self.alarm_at = None  # when the alarm fires next, by self.clock; None: not armed
        self.stalled = self.watching = False
        self.started = 0.0
        import time
        self.clock = time.monotonic
        self.allowed = frozenset(opts["allow"].split(",")) if "allow" in opts else None
        self.watched = opts.get("files")
        if "slot" in opts:
            self.board = open_board(8, int(opts["slot"]), "stats" in opts)
        self.paths = paths(opts, self.board)  # those answered here, not by the app
        self.keeper = None
        if "keep" in opts and self.board is not None:
            self.keeper = Keeper(int(opts["keep"]), self.board.kept)
        self.fast = self.fast_head = self.fast_accept = None
        if "fastpath" in opts:
            self.use_fastpath(load_fastpath(int(opts["fastpath"]), self.log))

    def use_fastpath(self, module):
        """Accepts connections, reads the usual request and checks the usual
        headers with the C fast path (module; None: all in Python)."""
        self.fast = self.fast_head = self.fast_accept = None
        if module is not None:
            self.fast_accept, self.fast_head = module.accept, module.head
            try:
                self.fast_mount = None if self.mount is None else self.mount.encode("latin-1")
            except UnicodeEncodeError:
                return  # the environ's str cannot hold it either: make_environ judges
            self.fast = module.request

    def serve(self):
        import _socket
        import select
        import time
        ep = select.epoll()
        lfd = self.listener.fileno()
        # Exclusive: a new connection, or a connection passed on by a busy
        # peer, wakes one idle worker, not all.
        ep.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        ep.register(3, select.EPOLLIN)
        lobby = None
        if self.board is not None:
            lobby = _socket.socket(fileno=7)
            ep.register(7, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self.lobby_out = _socket.socket(fileno=6)
        self.ep, self.socket = ep, _socket
        clock = time.monotonic
        # The board's page: its idle flags, a byte per slot.
        board = self.board.page if self.board is not None else None
        slot = self.board.slot if self.board is not None else 0
        words = self.board.words if self.board is not None else None
        accept, new_socket = self.fast_accept or self.accept, _socket.socket
        family, stype = self.listener.family, self.listener.type
        hangup = select.EPOLLHUP | select.EPOLLERR
        while True:
            if self.paused:
                timeout = BODY_STALL
            elif self.headers_waiting:
                timeout = 1.0
            else:
                timeout = Conn.TIMEOUT if self.conns else -1
            if board is not None:
                board[slot] = 1
            events = ep.poll(timeout)
            if board is not None:
                board[slot] = 0
            # Events become objects before anything is closed, so a number
            # reused by an accept below cannot be mistaken for another.
            items = []
            for fd, _ in events:
                if fd == 3:
                    return self.close_all()
                items.append(self.conns[fd][0] if fd in self.conns else fd)
            # Only a paused connection is watched for its hang-up alone.
            hung = {fd for fd, ev in events if ev & hangup} if self.paused else ()
            if len(items) > 1 and board is not None and 1 in board[:SLOTS]:
                # Another worker waits idle: it takes the other ready
                # connections, so no request waits behind ours.
                for conn in [x for x in items if type(x) is Conn and x.movable()][1:]:
                    self.pass_conn(conn)
            if self.watched is not None and self.code_changed() and self.retired():
                return self.close_all()
            for item in items:
                if type(item) is Conn:
                    conn = item
                    if conn.passed:
                        continue
                    if conn.paused:
                        # Not read while paused; closed by the web server
                        # (its client went away), it is done.
                        if conn.fd in hung:
                            self.drop(conn)
                        continue
                    self.turn(conn)
                    continue
                if item == lfd:
                    # Accepts on while connections wait: under load a worker
                    # serves a run of them per wake-up, not one.
                    for run in range(ACCEPT_RUN):
                        fd = accept(lfd, run)
                        if fd is None:
                            break
                        if words is not None:
                            self.accepted += 1
                            words[ACCEPTED] = self.accepted
                        sock = new_socket(family, stype, 0, fd)
                        if self.allowed is not None and not self.allowed_peer(sock):
                            sock.close()
                            continue
                        self.admit(Conn(sock))
                        if self.conns or (self.max_requests and self.served >= self.max_requests):
                            break
                elif item == 7:
                    fd, kind = self.receive_conn(lobby)
                    if fd is not None:
                        conn = Conn(new_socket(fileno=fd))
                        if kind == KEPT and self.keeper is not None:
                            self.keeper.adopt(conn)
                        self.admit(conn)
            if self.max_requests and self.served >= self.max_requests:
                send(self.ctl, FINISHED, flags=EXITING)
                return self.close_all()
            if self.paused:
                self.unstall(clock())
                if Body.taken != self.taken:
                    self.resume()
            if self.conns:
                now = clock()
                # The deadlines are a minute long: a look each second is
                # enough, not a walk over every kept connection per wake-up.
                if now >= self.next_sweep:
                    self.next_sweep = now + 1.0
                    self.sweep(now)

    def accept(self, fd, probe):
        """The next connection on the listener (fd), or None when none
        waits. The fast path's accept does the same in C, without the
        exception, and probes first (see fastpath.c)."""
        try:
            return self.listener._accept()[0]
        except (BlockingIOError, InterruptedError):
            return None

    def admit(self, conn):
        """Serves a new connection now if its request is there: one may
        come without it yet (an idle one passed on, a web server slow to
        write), and must not hold up the others; it waits in the epoll."""
        if not self.serve_marked(conn):
            self.end(conn)
            return
        self.conns[conn.fd] = (conn, self.clock())
        self.ep.register(conn.fd, 0 if conn.paused else EPOLLIN)

    def turn(self, conn):
        """Serves what came on a kept connection."""
        if self.serve_marked(conn):
            self.conns[conn.fd] = (conn, self.clock())
        else:
            self.drop(conn)

    def serve_marked(self, conn):
        """serve_conn, with conn marked in the keeper's table while a
        request of its is read or runs; a connection that turns out kept
        is sent to the keeper (see keep.py). One not kept carries one
        request, which its worker serves as soon as it has come, and costs
        the keeper nothing: with nginx's stock block, every request."""
        cell = conn.cell
        if cell is None:
            keep = self.serve_conn(conn)
            if keep and conn.keep and not conn.kept and self.keeper is not None and conn.movable():
                self.keeper.register(conn)
            return keep
        table = self.keeper.table
        table[cell] = conn.mark | 1
        keep = self.serve_conn(conn)
        if keep and conn.cell is not None and conn.movable():
            table[cell] = conn.mark
        return keep

    def pause(self, conn):
        conn.paused = True
        self.paused.append(conn)
        if conn.fd in self.conns:
            self.ep.modify(conn.fd, 0)

    def resume(self):
        """Gives the paused connections their turn again, once a body left
        memory free (they pause again if it is not enough)."""
        while self.paused and Body.taken != self.taken:
            self.taken = Body.taken
            paused, self.paused = self.paused, []
            for conn in paused:
                conn.paused = False
                if self.conns.get(conn.fd, (None,))[0] is conn:
                    self.ep.modify(conn.fd, EPOLLIN)
                    # Its next record waits in its buffer: no event would come for it.
                    self.turn(conn)

    def unstall(self, now):
        """Sends the oldest body to a file when it stalls the paused ones:
        a client that stops uploading must not hold the others up."""
        for body, grew in Body.collecting.items():
            if now - grew > BODY_STALL:
                body.spill()
            return

    def sweep(self, now):
        """Closes the kept connections idle past IDLE_TIMEOUT, those whose
        request's header has not come whole after header_timeout without
        news, and those whose body has not after Conn.TIMEOUT (a slow
        upload may pause that long)."""
        waiting = False
        for conn, since in list(self.conns.values()):
            if conn.paused:
                continue  # it waits for the worker, not for the web server
            if conn.movable():
                if now - since > self.IDLE_TIMEOUT:
                    self.drop(conn)
            elif conn.pending is None:
                if now - since > self.header_timeout:
                    self.log(LOG_WARN, "fastcgi: closing a connection: the web server left a request's "
                             "header unfinished for %gs" % self.header_timeout)
                    self.drop(conn)
                else:
                    waiting = True
            elif now - since > conn.TIMEOUT:
                self.log(LOG_WARN, "fastcgi: closing a connection: the web server left "
                         "a request unfinished for %gs" % conn.TIMEOUT)
                self.drop(conn)
        self.headers_waiting = waiting

    def drop(self, conn):
        if self.conns.pop(conn.fd, (None,))[0] is conn:
            self.ep.unregister(conn.fd)
        self.end(conn)

    def end(self, conn):
        """Closes conn: it ends here, or (passed) goes on elsewhere."""
        if conn.kept and not conn.passed:
            self.keeper.end(conn)
        conn.close()

    def pass_conn(self, conn):
        """Gives conn to another worker through the lobby; False if it cannot."""
        if conn.kept:
            # Out of the table first: should this worker die before the
            # send, the supervisor must not pass it a second time.
            self.keeper.forget(conn)
        try:
            self.lobby_out.sendmsg([KEPT if conn.kept else b"c"], [(self.socket.SOL_SOCKET, self.socket.SCM_RIGHTS,
                                                                  conn.fd.to_bytes(4, sys.byteorder))])
        except OSError:
            if conn.kept:
                self.keeper.enter(conn)
            return False
        conn.passed = True
        self.drop(conn)
        return True

    def allowed_peer(self, sock):
        """FCGI_WEB_SERVER_ADDRS: a TCP peer must be one of the allowed
        addresses; unix sockets are guarded by their file mode instead."""
        if sock.family not in (self.socket.AF_INET, self.socket.AF_INET6):
            return True
        addr = sock.getpeername()[0]
        if addr.startswith("::ffff:") and "." in addr:
            addr = addr[7:]
        if addr in self.allowed:
            return True
        self.log(LOG_WARN, "fastcgi: refused a connection from %s, not in FCGI_WEB_SERVER_ADDRS" % addr)
        return False

    def code_changed(self):
        """With --reload-on-change: True (and the bridge told) when one of
        the app's files changed since this worker imported it."""
        for path, seen in self.watched:
            if mtime(path) != seen:
                data = path.encode("utf-8", "surrogateescape")
                send(self.ctl, CHANGED, data)
                return True
        return False

    def retired(self):
        """Serves nothing more with old code: waits until the bridge, having
        started workers with the new code, retires this one (True; its
        connections, and the requests waiting on them, go to the new ones),
        or says the new code failed to start (a byte on fd 3; False: this
        worker serves on with the code it has)."""
        if not os.read(3, 1):
            return True
        self.watched = [(path, mtime(path)) for path, _ in self.watched]
        return False

    def receive_conn(self, lobby):
        """Takes a connection another worker (or the supervisor) passed on,
        and what it is (KEPT: the supervisor has a copy); None if another
        idle worker took it first. (socket.recv_fds would block: the
        Python versions we run on ignore its flags.)"""
        socket = self.socket
        try:
            what, ancdata, _, _ = lobby.recvmsg(1, socket.CMSG_LEN(4), socket.MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None, None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4:
                return int.from_bytes(data[:4], sys.byteorder), what
        return None, None

    def close_all(self):
        """Leaves: requests still coming are served first; then the kept
        connections go to the other workers (a reload's new ones, or the
        peers of a worker that served its max requests), so nginx never
        finds one closed under a request."""
        self.draining = True  # bodies no longer wait for memory, but in turn
        for conn, _ in list(self.conns.values()):
            if not self.finish(conn) or self.board is None or not self.pass_conn(conn):
                self.drop(conn)
        return 0

    def log(self, level, message):
        send(self.ctl, LOG, message.encode("utf-8", "replace"), level)

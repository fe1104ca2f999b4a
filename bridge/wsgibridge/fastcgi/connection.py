"""One connection from the web server: its read buffer, records read off
it without ever waiting, and writes that wait for a slow web server at
most Conn.TIMEOUT. What the records mean is request's.
"""

from wsgibridge.fastcgi.records import RECORD, ConnClosed


class Incomplete(Exception):
    """The rest of a request has not come yet. What came is kept with its
    connection, which waits in the epoll while the worker serves others:
    a web server that streams a slow upload (nginx with
    fastcgi_request_buffering off, Apache's mod_proxy_fcgi) or stalls
    costs the worker nothing until more arrives."""


class Paused(Incomplete):
    """A request body must wait for memory (Body.fits); its connection is
    not read until another body leaves it some."""


MSG_DONTWAIT = 0x40  # Linux
EPOLLIN = 1  # select.EPOLLIN; select is imported only by the fastcgi mode
SEND_BUFFER = 1 << 20  # bytes a connection may ask of the kernel (it doubles them); see Conn.grow


class Conn:
    """One connection from the web server, with its read buffer and what
    has come of its request. Reads never wait: when the web server has
    sent nothing more, they raise Incomplete. Writes try first without
    waiting; only when the web server is not ready do they wait, and then
    at most TIMEOUT seconds (a poll costs a call only then, where socket
    timeouts would cost two per connection).

    Reads go straight into a buffer the connection borrows from a small
    pool while it has unread bytes, and records are views of it: a request
    body is copied once, into the Body, not at every step."""

    TIMEOUT = 60  # seconds the web server may leave a request stalled
    BUFFER = 80 * 1024  # holds the largest record, 8 + 65535 + 255 bytes
    free = []  # buffers (bytearray, memoryview) to borrow

    # A new connection's state, until it changes: defaults here cost a new
    # connection nothing, where setting each costs it (one per request
    # with nginx's usual block).
    mem = view = None
    start = end = 0  # the unread bytes are mem[start:end]
    keep = cut_short = passed = grown = False
    # The supervisor has a copy of it (keep.py); its place in the table,
    # and what the table holds for it.
    kept = False
    cell = None
    mark = 0
    paused = False  # its body waits for memory: not read meanwhile
    last = 0
    rid = 0  # the request begun, from BEGIN_REQUEST to its end
    params = ()  # its PARAMS records so far
    params_size = 0
    pending = None  # its Pending, once the params are whole

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()

    def buffered(self):
        return self.end - self.start

    def movable(self):
        """True when nothing of a request is held here, so the connection
        can go to another worker."""
        return self.start == self.end and not self.rid

    def wait(self, event):
        import select
        p = select.poll()
        p.register(self.fd, event)
        if not p.poll(self.TIMEOUT * 1000):
            raise ConnClosed("the web server went silent for %ds" % self.TIMEOUT)

    def room(self):
        """Makes room after the unread bytes; borrows a buffer if needed."""
        if self.mem is None:
            if self.free:
                self.mem, self.view = self.free.pop()
            else:
                self.mem = bytearray(self.BUFFER)
                self.view = memoryview(self.mem)
        elif self.start:
            n = self.end - self.start
            # Through a copy: the unread bytes may overlap where they go.
            self.mem[:n] = bytes(self.view[self.start:self.end])
            self.start, self.end = 0, n

    def release(self):
        """Gives the buffer back when no unread bytes are left in it."""
        if self.mem is not None and self.start == self.end:
            if len(self.free) < 4:
                self.free.append((self.mem, self.view))
            self.mem = self.view = None
            self.start = self.end = 0

    def fill(self):
        if self.mem is None or self.end == len(self.mem):
            self.room()
        try:
            n = self.sock.recv_into(self.view[self.end:], 0, MSG_DONTWAIT)
        except BlockingIOError:
            raise Incomplete from None
        except OSError as exc:
            raise ConnClosed(str(exc)) from None
        if not n:
            raise ConnClosed("the web server closed the connection")
        self.end += n

    def need(self, n):
        """Reads until n unread bytes are buffered, or raises Incomplete."""
        if self.mem is None or len(self.mem) - self.start < n:
            self.room()
        while self.end - self.start < n:
            self.fill()

    def record(self):
        """Returns the next record's (type, request id, content); content is
        a view of the buffer, good until the next call."""
        if self.end - self.start < 8:
            self.need(8)
        version, kind, rid, n, pad = RECORD.unpack_from(self.mem, self.start)
        if version != 1:
            raise ConnClosed("not FastCGI (version byte %d)" % version)
        start = self.start
        if self.end - start < 8 + n + pad:
            self.need(8 + n + pad)
            start = self.start
        self.last = start
        self.start = start + 8 + n + pad
        return kind, rid, self.view[start + 8:start + 8 + n]

    def unread(self):
        """Puts the record record() returned last back, to be read again."""
        self.start = self.last

    def send(self, data):
        try:
            sent = self.sock.send(data, MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ConnClosed(str(exc)) from None
        if sent < len(data):
            self.sendv([memoryview(data)[sent:]])

    def sendv(self, parts):
        """Sends the buffers in parts, in order, as one stream: a large
        response goes out as it came from the app, never copied whole."""
        while parts:
            try:
                sent = self.sock.sendmsg(parts[:512], (), MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ConnClosed(str(exc)) from None
            i = 0
            while i < len(parts) and sent >= len(parts[i]):
                sent -= len(parts[i])
                i += 1
            parts = parts[i:]
            if not parts:
                return
            if sent:
                parts[0] = memoryview(parts[0])[sent:]
            if not self.grown and self.grow():
                continue
            self.wait(4)  # POLLOUT: the socket is full

    def grow(self):
        """Raises the socket's send buffer, once, when a response fills it.
        A response larger than the buffer otherwise waits for the web
        server to drain it, a poll and two context switches each time (five
        times per MiB with Linux's default buffer). The kernel caps the size
        at net.core.wmem_max. SEND_BUFFER is --send-buffer: where nginx
        has buffers for a whole response (fastcgi_buffers 64 32k), a MiB
        response lying whole in the kernel is read whole before nginx
        writes any, and its heap grows and shrinks by a MiB per response,
        which doubles its CPU per response; with 256 KiB it reads and
        writes in turn, recycling its buffers. With nginx's default
        buffers the whole MiB at once is the faster: nginx then relays it
        to its client in one run, where waiting for the worker midway lets
        the client fall asleep, and waking it again costs nginx more."""
        import _socket
        self.grown = True
        try:
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            return False
        return True

    def close(self):
        if self.pending is not None and self.pending.body is not None:
            self.pending.body.discard()
        self.pending = None
        self.start = self.end
        self.release()
        self.sock.close()

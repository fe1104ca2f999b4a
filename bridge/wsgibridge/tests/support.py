"""What the worker's tests share: fake connections and frames, requests
as nginx sends them, and the C fast path when the Go test passes it
(WSGIBRIDGE_FASTPATH)."""

import io
import os

from wsgibridge import frames
from wsgibridge.fastcgi import fastpath, records, server


def load_fastpath():
    """The C fast path when the Go test passes its shared object
    (WSGIBRIDGE_FASTPATH, a path), else None."""
    path = os.environ.get("WSGIBRIDGE_FASTPATH")
    if not path:
        return None

    def fail(level, message):
        raise AssertionError(message)
    return fastpath.load_fastpath(os.open(path, os.O_RDONLY), fail)


FAST = load_fastpath()


def frame_stream(*items, rid=1):
    """Frames from Go, each item (kind, payload) or (kind, payload, flags)."""
    out = b""
    for kind, payload, *flags in items:
        out += frames.HEADER.pack(ord(kind), flags[0] if flags else 0, rid, len(payload)) + payload
    return io.BufferedReader(io.BytesIO(out))


def parse(data):
    """Splits worker output into (kind, flags, payload) tuples."""
    out, pos = [], 0
    while pos < len(data):
        kind, flags, _, n = frames.HEADER.unpack_from(data, pos)
        pos += 8
        out.append((chr(kind), flags, data[pos:pos + n]))
        pos += n
    return out


def record(kind, rid, content, pad=0):
    """One FastCGI record as the web server sends it."""
    return records.RECORD.pack(1, kind, rid, len(content), pad) + content + bytes(pad)


class Wire:
    """A fake connection: the web server's bytes to read, and each send
    the worker makes, kept apart."""

    def __init__(self, data, fd=-1):
        self.data = data
        self.sends = []
        self.fd = fd

    def fileno(self):
        return self.fd

    def recv_into(self, buf, n=0, flags=0):
        if not self.data:
            raise BlockingIOError
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n

    def send(self, data, flags=0):
        self.sends.append(bytes(data))
        return len(data)

    def sendmsg(self, parts, ancdata=(), flags=0):
        return self.send(b"".join(parts))

    def close(self):
        pass


def request(path, keep=True, body=(), method=b"GET"):
    """A GET (or method) for path as nginx sends it, on a connection it
    keeps; a POST if body holds the pieces of a body, sent as STDIN records."""
    env = [(b"REQUEST_METHOD", method), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"PATH_INFO", path)]
    if body:
        env[0] = (b"REQUEST_METHOD", b"POST")
        env.append((b"CONTENT_LENGTH", b"%d" % sum(map(len, body))))
    pairs = b"".join(bytes((len(name), len(value))) + name + value for name, value in env)
    stdin = b"".join(record(records.FCGI_STDIN, 1, piece, -len(piece) & 7) for piece in body)
    return (record(records.FCGI_BEGIN, 1, bytes((0, records.FCGI_RESPONDER, int(keep), 0, 0, 0, 0, 0)))
            + record(records.FCGI_PARAMS, 1, pairs, -len(pairs) & 7) + record(records.FCGI_PARAMS, 1, b"")
            + stdin + record(records.FCGI_STDIN, 1, b""))


def stdout(data):
    """The content of the STDOUT records in data, joined."""
    out, pos = b"", 0
    while pos < len(data):
        _, kind, _, n, pad = records.RECORD.unpack_from(data, pos)
        if kind == records.FCGI_STDOUT:
            out += data[pos + 8:pos + 8 + n]
        pos += 8 + n + pad
    return out


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


END = records.end_request(1)


class Servers:
    """Makes the FastCGIServer of a test; with fast, one that reads
    requests with the C fast path."""

    fast = False

    def server(self, app, ctl=None):
        srv = server.FastCGIServer(app, None, io.BytesIO() if ctl is None else ctl, {})
        srv.use_fastpath(FAST if self.fast else None)
        return srv


class Epoll:
    """A fake epoll: the events each descriptor is watched for."""

    def __init__(self):
        self.watched = {}
        self.gone = []

    def register(self, fd, events):
        self.watched[fd] = events

    def modify(self, fd, events):
        self.watched[fd] = events

    def unregister(self, fd):
        del self.watched[fd]
        self.gone.append(fd)


def pairs_of(items):
    """Params content for (name, value) bytes pairs, with 4-byte lengths
    where they are long."""
    out = b""
    for item in items:
        for part in item:
            out += bytes((len(part),)) if len(part) < 128 else (len(part) | 1 << 31).to_bytes(4, "big")
        out += b"".join(item)
    return out


def begin(rid, keep=True, role=records.FCGI_RESPONDER):
    return record(records.FCGI_BEGIN, rid, bytes((0, role, int(keep), 0, 0, 0, 0, 0)))


class Closing:
    """Iterates chunks; notes in events when closed."""

    def __init__(self, chunks, events):
        self.chunks, self.events = chunks, events

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.events.append("closed")

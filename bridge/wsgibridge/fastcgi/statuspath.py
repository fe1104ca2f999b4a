"""The paths a FastCGI worker answers itself, as PHP-FPM's pm.status_path
and ping.path do, so that an operator (or a load balancer) reaches them
through the web server: the ping path answers "pong" (or that the pool
is degraded, when the supervisor says so on the board), the status path the
status document, which the worker asks of the supervisor
(bridge/fastcgiworker.go) on a socket of its own. They are small WSGI
apps, run as the app is.
"""

from wsgibridge.fastcgi.board import DEGRADED

JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
TEXT = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
WAIT = 2.0  # seconds the supervisor may take to answer


class Ping:
    """The ping path's app: "pong", or 503 while the supervisor marks the
    pool degraded on the board (page; None: no board)."""

    def __init__(self, page):
        self.page = page

    def __call__(self, environ, start_response):
        if self.page is not None and self.page[DEGRADED]:
            body = b"degraded: workers keep dying young\n"
            start_response("503 Service Unavailable", TEXT + [("Content-Length", str(len(body)))])
            return [body]
        start_response("200 OK", TEXT + [("Content-Length", "5")])
        return [b"pong\n"]


class Status:
    """The status path's app: the document the supervisor gives on the
    socket fd."""

    def __init__(self, fd):
        import _socket
        self.sock = _socket.socket(fileno=fd)

    def __call__(self, environ, start_response):
        import select
        full = "full" in environ.get("QUERY_STRING", "").split("&")
        try:
            self.sock.send(b"full" if full else b"short")
            p = select.poll()
            p.register(self.sock.fileno(), select.POLLIN)
            doc = self.sock.recv(1 << 20) if p.poll(WAIT * 1000) else b""
        except OSError:
            doc = b""
        if not doc:
            body = b"the supervisor did not give the status\n"
            start_response("503 Service Unavailable", TEXT + [("Content-Length", str(len(body)))])
            return [body]
        start_response("200 OK", JSON + [("Content-Length", str(len(doc)))])
        return [doc]


def paths(opts, board):
    """The paths answered here, from the worker's options, and their apps;
    None when there are none. board: the worker's, or None."""
    found = {}
    if "ping-path" in opts:
        found[opts["ping-path"]] = Ping(board.page if board is not None else None)
    if "status-path" in opts and "status" in opts:
        found[opts["status-path"]] = Status(int(opts["status"]))
    return found or None


def path_of(environ):
    """The path the client asked for, whatever mount the app has."""
    uri = environ.get("REQUEST_URI")
    if uri is not None:
        return uri.partition("?")[0]
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")

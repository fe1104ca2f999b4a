"""A WSGI app that does one thing per path, right or wrong, for the tests.

`application` is the app; `validated` is the same app wrapped in
wsgiref.validate.validator, so the standard library checks our side of the
contract too (the paths that break the contract on purpose are not run
under it).
"""

import os
import signal
import sys
import time
from wsgiref.validate import validator

TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def ok(start_response, body, extra=()):
    start_response("200 OK", TEXT + [("Content-Length", str(len(body)))] + list(extra))
    return [body]


class Closing:
    """An iterable that reports when close() is called, after taking
    close_takes seconds in it."""

    def __init__(self, chunks, raise_at=None, close_takes=0):
        self.chunks = chunks
        self.raise_at = raise_at
        self.close_takes = close_takes

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.raise_at:
                raise RuntimeError("iteration failed on purpose")
            yield chunk

    def close(self):
        if self.close_takes:
            time.sleep(self.close_takes)
        sys.stderr.write("probe: close() called\n")
        sys.stderr.flush()


def hello(environ, start_response):
    return ok(start_response, b"Hello, world!")


def environ_dump(environ, start_response):
    """Each CGI key and its value as latin-1 bytes, plus types of wsgi.* keys."""
    lines = []
    for key in sorted(environ):
        value = environ[key]
        if type(value) is str:
            lines.append(key.encode("latin-1") + b"=" + value.encode("latin-1"))
        else:
            lines.append(key.encode("latin-1") + b":" + type(value).__name__.encode())
    return ok(start_response, b"\n".join(lines))


def os_environ(environ, start_response):
    body = "\n".join("%s=%s" % kv for kv in sorted(os.environ.items())).encode("utf-8", "replace")
    return ok(start_response, body)


def echo(environ, start_response):
    """Echoes the body in 64 KiB reads, streaming it back."""
    inp = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    start_response("200 OK", TEXT + ([("Content-Length", length)] if length else []))

    def chunks():
        while True:
            data = inp.read(65536)
            if not data:
                return
            yield data
    return chunks()


def count(environ, start_response):
    """Reads the body in 64 KiB pieces and tells how many bytes came."""
    inp, total = environ["wsgi.input"], 0
    while True:
        data = inp.read(65536)
        if not data:
            return ok(start_response, b"%d" % total)
        total += len(data)


def read_all(environ, start_response):
    """Reads the body with read() and tells how much came, then reads again."""
    inp = environ["wsgi.input"]
    first = inp.read()
    again = inp.read(10)
    return ok(start_response, b"%d %d" % (len(first), len(again)))


def read_or_error(environ, start_response):
    """Reads the body in 64 KiB pieces; a read that raises OSError is
    caught and named in a 200 answer, with the bytes read before it."""
    inp, total = environ["wsgi.input"], 0
    try:
        while True:
            data = inp.read(65536)
            if not data:
                return ok(start_response, b"whole %d" % total)
            total += len(data)
    except OSError as exc:
        return ok(start_response, b"raised %s after %d: %s" % (
            type(exc).__name__.encode(), total, str(exc).encode()))


def digest(environ, start_response):
    """Reads the body in QUERY_STRING-sized pieces (0: by lines) and
    answers with its length and SHA-256, or with the OSError a read
    raised and the bytes read before it."""
    import hashlib
    inp, size, got = environ["wsgi.input"], int(environ.get("QUERY_STRING") or "0"), hashlib.sha256()
    total = 0
    try:
        while True:
            data = inp.readline() if size == 0 else inp.read(size)
            if not data:
                return ok(start_response, b"whole %d %s" % (total, got.hexdigest().encode()))
            got.update(data)
            total += len(data)
    except OSError as exc:
        return ok(start_response, b"raised %s after %d" % (type(exc).__name__.encode(), total))


def read_more(environ, start_response):
    """Asks for more than CONTENT_LENGTH in one read(n)."""
    data = environ["wsgi.input"].read(1 << 20)
    return ok(start_response, b"%d" % len(data))


def readlines(environ, start_response):
    inp = environ["wsgi.input"]
    first = inp.readline()
    limited = inp.readline(3)
    rest = list(inp)
    body = b"|".join([first, limited] + rest)
    return ok(start_response, body)


def stream(environ, start_response):
    """Yields a first chunk, then waits for the file named in the query to exist."""
    start_response("200 OK", TEXT)
    yield b"first chunk\n"
    gate = environ.get("QUERY_STRING", "")
    deadline = time.time() + 20
    while gate and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.01)
    yield b"second chunk\n"


def prints(environ, start_response):
    print("probe: printed to stdout by", environ.get("SCRIPT_NAME") or "/")
    sys.stdout.write("Status: 666 Evil\r\n\r\nnot the response\n")
    return ok(start_response, b"printed")


def raise_before(environ, start_response):
    raise RuntimeError("raised before start_response on purpose")


def raise_after(environ, start_response):
    start_response("200 OK", TEXT)
    yield b"partial "
    raise RuntimeError("raised after headers on purpose")


def whole_then_raise(environ, start_response):
    """Yields all of its Content-Length, then raises: the client has its response."""
    start_response("200 OK", TEXT + [("Content-Length", "5")])
    yield b"whole"
    raise RuntimeError("raised after the whole body on purpose")


def empty_then_raise(environ, start_response):
    start_response("200 OK", TEXT)
    yield b""
    yield b""
    raise RuntimeError("raised after empty chunks")


def empty_body(environ, start_response):
    start_response("200 OK", TEXT + [("X-Empty", "yes")])
    return []


def write_before_start(environ, start_response):
    # The only way to reach write() without start_response() is the
    # server's own object behind the bound method.
    start_response.__self__.write(b"too early")
    return []


def start_twice(environ, start_response):
    start_response("200 OK", TEXT)
    start_response("201 Created", TEXT)
    return [b"x"]


def exc_info_before(environ, start_response):
    start_response("200 OK", TEXT)
    try:
        raise ValueError("handled")
    except ValueError:
        start_response("503 Service Unavailable", TEXT, sys.exc_info())
    return [b"replaced"]


def exc_info_after(environ, start_response):
    start_response("200 OK", TEXT)
    yield b"sent "
    try:
        raise ValueError("late failure")
    except ValueError:
        start_response("500 Internal Server Error", TEXT, sys.exc_info())
    yield b"never"


def write_callable(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"written ")
    return [b"returned"]


def close_on_raise(environ, start_response):
    start_response("200 OK", TEXT)
    return Closing([b"a", b"b"], raise_at=1)


def close_normal(environ, start_response):
    start_response("200 OK", TEXT)
    return Closing([b"a", b"b"])


def slow_close(environ, start_response):
    """A body flushed as it is yielded, as Flask's is, whose close() takes
    QUERY_STRING seconds."""
    body = b"whole"
    start_response("200 OK", TEXT + [("Content-Length", str(len(body)))])
    return Closing([body], close_takes=float(environ.get("QUERY_STRING") or "0.3"))


def file_wrapper(environ, start_response):
    path = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 8192)


def str_body(environ, start_response):
    start_response("200 OK", TEXT)
    return ["a str, not bytes"]


def int_status(environ, start_response):
    start_response(200, TEXT)
    return [b"x"]


def crlf_header(environ, start_response):
    start_response("200 OK", TEXT + [("X-Bad", "a\r\nSet-Cookie: evil=1")])
    return [b"x"]


def hop_header(environ, start_response):
    start_response("200 OK", TEXT + [("Connection", "close")])
    return [b"x"]


def short_length(environ, start_response):
    start_response("200 OK", TEXT + [("Content-Length", "100")])
    return [b"only ten.."]


def exit_worker(environ, start_response):
    os._exit(7)


def orphan(environ, start_response):
    """Leaves a process behind: a child that exits at once, and its own
    child, which exits QUERY_STRING seconds later with no parent to wait
    for it; answers the latter's pid."""
    secs = float(environ.get("QUERY_STRING") or "0.2")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(secs)
            os._exit(0)
        os.write(w, b"%d" % grandchild)
        os._exit(0)
    os.close(w)
    pid = os.read(r, 32)
    os.close(r)
    os.waitpid(child, 0)
    return ok(start_response, pid)


def kill_worker(environ, start_response):
    os.kill(os.getpid(), signal.SIGKILL)


def sys_exit(environ, start_response):
    sys.exit(1)


def sleep(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or "30"))
    return ok(start_response, b"slept")


def sleep_pid(environ, start_response):
    """Sleeps QUERY_STRING seconds, then tells which worker served it."""
    time.sleep(float(environ.get("QUERY_STRING") or "0"))
    return ok(start_response, str(os.getpid()).encode())


def drip(environ, start_response):
    """Yields a line every 0.1 s for QUERY_STRING seconds; reports close()."""
    start_response("200 OK", TEXT)

    def chunks():
        for _ in range(int(float(environ.get("QUERY_STRING") or "10") * 10)):
            yield b"drip\n"
            time.sleep(0.1)
    return Closing(chunks())


def drip_write(environ, start_response):
    """As drip, through the write() callable; reports when its loop ends."""
    write = start_response("200 OK", TEXT)
    try:
        for _ in range(int(float(environ.get("QUERY_STRING") or "10") * 10)):
            write(b"drip\n")
            time.sleep(0.1)
    finally:
        sys.stderr.write("probe: write loop ended\n")
        sys.stderr.flush()
    return []


def spin(environ, start_response):
    """Runs Python for QUERY_STRING seconds, in no call that waits."""
    end = time.time() + float(environ.get("QUERY_STRING") or "1")
    n = 0
    while time.time() < end:
        n += 1
    return ok(start_response, b"spun")


def wait_on_lock(lock):
    lock.acquire()


def lock_wait(environ, start_response):
    """Holds a lock for QUERY_STRING seconds while a second thread waits on it."""
    import threading
    lock = threading.Lock()
    lock.acquire()
    waiter = threading.Thread(target=wait_on_lock, args=(lock,))
    waiter.start()
    time.sleep(float(environ.get("QUERY_STRING") or "1"))
    lock.release()
    waiter.join()
    return ok(start_response, b"unlocked")


def gate(environ, start_response):
    """Waits for the file named in QUERY_STRING (its part before &) to exist."""
    path = environ.get("QUERY_STRING", "").partition("&")[0]
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
    return ok(start_response, b"passed")


def input_terminated(environ, start_response):
    return ok(start_response, repr(environ.get("wsgi.input_terminated")).encode())


def slow_stream(environ, start_response):
    """Yields a first chunk, then takes a minute for the next; reports close()."""
    start_response("200 OK", TEXT)

    def chunks():
        yield b"first\n"
        time.sleep(60)
        yield b"never\n"
    return Closing(chunks())


def masked_sleep(environ, start_response):
    """Sleeps where the bridge's stop signals cannot reach."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM})
    time.sleep(60)
    return ok(start_response, b"slept")


def lose_first(signum):
    """An app that the first stop signal does not reach, as CPython lets one
    land just before a blocking call and handles it only when the call
    returns: it sleeps 0.2 s (the timeout's alarm is armed then), takes the
    next signum itself, then sleeps a minute."""
    def app(environ, start_response):
        time.sleep(0.2)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        signal.sigwaitinfo({signum})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        time.sleep(60)
        return ok(start_response, b"slept")
    return app


def loop(environ, start_response):
    while True:
        pass


def pid(environ, start_response):
    return ok(start_response, str(os.getpid()).encode())


def respond(environ, start_response):
    """Answers with the status QUERY_STRING names (a code), and a body
    unless the status has none."""
    code = environ.get("QUERY_STRING") or "200"
    reasons = {"200": "OK", "201": "Created", "204": "No Content", "304": "Not Modified", "302": "Found"}
    headers = [("X-Code", code)]
    if code == "302":
        headers.append(("Location", "/hello"))
    start_response("%s %s" % (code, reasons.get(code, "Other")), headers)
    return [b"" if code in ("204", "304") else b"code " + code.encode()]


def cookies(environ, start_response):
    """Sets three cookies."""
    start_response("200 OK", TEXT + [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly"),
                                     ("Set-Cookie", "c=3")])
    return [b"three cookies"]


HELD = []


def hold(environ, start_response):
    """Keeps QUERY_STRING MiB more of memory for good, as a leak would,
    and tells the worker's pid."""
    HELD.append(b"\x01" * (int(environ.get("QUERY_STRING") or "1") << 20))
    return ok(start_response, str(os.getpid()).encode())


def big(environ, start_response):
    """Yields QUERY_STRING MiB of a repeating pattern."""
    mib = int(environ.get("QUERY_STRING") or "1")
    block = bytes(range(256)) * 4096
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(mib * len(block)))])
    return (block for _ in range(mib))


def inheritable(environ, start_response):
    """The worker's fds beyond stdio that a subprocess of the app would inherit."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and os.get_inheritable(int(name)):
                fds.append(name)
        except OSError:
            pass  # listdir's own fd, closed by now
    return ok(start_response, " ".join(fds).encode())


ROUTES = {
    "/": hello, "/hello": hello, "/environ": environ_dump, "/os-environ": os_environ,
    "/echo": echo, "/count": count, "/read-all": read_all, "/read-or-error": read_or_error, "/digest": digest, "/read-more": read_more, "/readlines": readlines,
    "/stream": stream, "/print": prints, "/raise-before": raise_before,
    "/raise-after": raise_after, "/whole-then-raise": whole_then_raise, "/empty-then-raise": empty_then_raise,
    "/empty-body": empty_body, "/write-before-start": write_before_start,
    "/start-twice": start_twice, "/exc-info-before": exc_info_before,
    "/exc-info-after": exc_info_after, "/write": write_callable,
    "/close-on-raise": close_on_raise, "/close": close_normal, "/file-wrapper": file_wrapper,
    "/str-body": str_body, "/int-status": int_status, "/crlf-header": crlf_header,
    "/hop-header": hop_header, "/short-length": short_length, "/exit": exit_worker,
    "/kill": kill_worker, "/orphan": orphan, "/sys-exit": sys_exit, "/sleep": sleep, "/sleep-pid": sleep_pid, "/drip": drip, "/spin": spin, "/lock-wait": lock_wait, "/gate": gate, "/drip-write": drip_write, "/input-terminated": input_terminated, "/slow-close": slow_close,
    "/slow-stream": slow_stream, "/masked-sleep": masked_sleep, "/loop": loop, "/pid": pid, "/hold": hold, "/respond": respond, "/cookies": cookies, "/big": big,
    "/inheritable": inheritable, "/lose-first-stop": lose_first(signal.SIGUSR1),
    "/lose-first-alarm": lose_first(signal.SIGALRM),
}


def echo_path(environ, start_response):
    """Tells PATH_INFO as ascii(), so the bytes the app got are visible."""
    return ok(start_response, ascii(environ["PATH_INFO"]).encode())


def environ_and_body(environ, start_response):
    """The CGI keys as environ_dump gives them, then "body=" and the body."""
    lines = [k.encode("latin-1") + b"=" + v.encode("latin-1")
             for k, v in sorted(environ.items()) if type(v) is str]
    return ok(start_response, b"\n".join(lines) + b"\nbody=" + environ["wsgi.input"].read())


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith("/echo-path/"):
        return echo_path(environ, start_response)
    path = environ.get("PATH_INFO") or "/"
    route = ROUTES.get(path)
    if route is None and path.endswith("/environ"):
        route = environ_dump  # the environ at any path, for the mount rules
    if route is None:
        body = ("no route %r" % environ.get("PATH_INFO")).encode("latin-1")
        start_response("404 Not Found", TEXT + [("Content-Length", str(len(body)))])
        return [body]
    return route(environ, start_response)


validated = validator(application)

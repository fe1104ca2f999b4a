#!/usr/bin/python3
"""How long the first request to an on-demand pool takes.

Starts `wsgibridge fastcgi --workers 0:2` (no Python runs until a request
comes) on a unix socket, sends one FastCGI GET, and times it from the
moment the request is sent to the end of the response: the worker's start
and the app's import included. Then a second request, to the worker now
warm. A fresh daemon each round; medians over the rounds.

Usage: bench/first-request.py [--rounds 5] [--apps hello,django] [BIN]
(from the repository root, after make build; Django from Debian's
python3-django, run by /usr/bin/python3).
"""

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = {"hello": "hello", "flask": "flaskapp", "django": "djangoapp"}


def record(kind, body):
    return struct.pack("!BBHHBB", 1, kind, 1, len(body), 0, 0) + body


def pairs(items):
    out = b""
    for k, v in items:
        out += bytes((len(k), len(v))) + k + v
    return out


REQUEST = (record(1, struct.pack("!HB5x", 1, 0))
           + record(4, pairs([(b"REQUEST_METHOD", b"GET"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                              (b"SERVER_NAME", b"localhost"), (b"SERVER_PORT", b"80"),
                              (b"SCRIPT_NAME", b""), (b"PATH_INFO", b"/"), (b"REQUEST_URI", b"/")]))
           + record(4, b"") + record(5, b""))


def ask(sock):
    """Sends the GET; returns the seconds until the connection closes after
    the response, and the response."""
    c = socket.socket(socket.AF_UNIX)
    start = time.monotonic()
    c.connect(sock)
    c.sendall(REQUEST)
    got = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += b
    c.close()
    return time.monotonic() - start, got


def round_(binary, app, workdir):
    sock = os.path.join(workdir, "s.sock")
    log = open(os.path.join(workdir, "log"), "w")
    p = subprocess.Popen([binary, "fastcgi", "--bind", "unix:" + sock, "--workers", "0:2", "--python", "/usr/bin/python3",
                          "--chdir", os.path.join(ROOT, "testdata", "apps"), APPS[app]], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("first-request: the daemon did not start (see %s)" % log.name)
            time.sleep(0.01)
        time.sleep(0.2)  # the daemon settled: nothing of it is in the measure
        first, got = ask(sock)
        if b"Status: 200" not in got:
            raise SystemExit("first-request: %r" % got[:200])
        second, _ = ask(sock)
        return first, second
    finally:
        p.terminate()
        p.wait(30)
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--apps", default="hello,django")
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, "bin", "wsgibridge"))
    a = ap.parse_args()
    for app in a.apps.split(","):
        firsts, seconds = [], []
        for _ in range(a.rounds):
            with tempfile.TemporaryDirectory() as d:
                f, s = round_(a.binary, app, d)
            firsts.append(f)
            seconds.append(s)
        print("%-8s first request %6.1f ms (%.1f-%.1f), the next %5.2f ms; median of %d rounds, --workers 0:2" % (
            app, statistics.median(firsts) * 1e3, min(firsts) * 1e3, max(firsts) * 1e3,
            statistics.median(seconds) * 1e3, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

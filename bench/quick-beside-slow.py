#!/usr/bin/python3
"""How long quick requests take while a slow one runs on the same pool.

Starts nginx with the README's recommended block (keepalive upstream,
fastcgi_keep_conn on) in front of `wsgibridge fastcgi --workers 2` serving
testdata/apps/probe.py, lets every worker serve slow requests first (each
then has run a request past the 20 ms after which it hands its other
connections on), then in each round sends one 2 s request and, 0.3 s
later, 8 concurrent 7 ms requests. Prints, per round, the slowest of the
8; a quick request that waited behind the slow one takes about 1.7 s.

Usage: bench/quick-beside-slow.py [--rounds 5] [--timeout 60s] [BINARY...]
       (from the repository root; BINARY defaults to bin/wsgibridge, and
       several are measured in turn, round by round)
"""

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request

from harness import Procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS_DIR = os.path.join(ROOT, "testdata", "apps")


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def concurrent(url, n):
    """Sends n GETs of url at once; returns each one's seconds."""
    took = [0.0] * n

    def one(i):
        start = time.monotonic()
        get(url)
        took[i] = time.monotonic() - start
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took


class Setup:
    """nginx and one daemon per binary, each on its own port."""

    def __init__(self, binaries, timeout):
        self.dir = tempfile.mkdtemp(prefix="wsgibridge-quick-")
        self.procs = Procs(self.dir)
        self.ports = []
        servers = []
        for i, binary in enumerate(binaries):
            sock = os.path.join(self.dir, "d%d.sock" % i)
            self.procs.start([binary, "fastcgi", "--bind", "unix:" + sock, "--socket-mode", "0666", "--workers", "2",
                              "--timeout", timeout, "--chdir", APPS_DIR, "probe"], "d%d.log" % i)
            port = 18400 + i
            self.ports.append(port)
            servers.append("upstream d%d { server unix:%s; keepalive 16; }\n"
                           "server { listen 127.0.0.1:%d; location / { include /etc/nginx/fastcgi_params;"
                           " fastcgi_pass d%d; fastcgi_keep_conn on; fastcgi_request_buffering off; } }"
                           % (i, sock, port, i))
        self.procs.start_nginx(servers)
        for port in self.ports:
            self.wait(port)

    def wait(self, port):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                get("http://127.0.0.1:%d/hello" % port, timeout=2)
                return
            except Exception:
                time.sleep(0.1)
        raise SystemExit("quick-beside-slow: nothing answers on port %d" % port)

    def stop(self):
        self.procs.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout", default="60s", help="the daemons' --timeout")
    ap.add_argument("binaries", nargs="*", default=[os.path.join(ROOT, "bin", "wsgibridge")])
    args = ap.parse_args()
    s = Setup([os.path.abspath(b) for b in args.binaries], args.timeout)
    worst = {b: [] for b in args.binaries}
    try:
        for port in s.ports:
            seen = set()
            for _ in range(50):
                seen.update(concurrent_pids("http://127.0.0.1:%d/sleep-pid?0.05" % port, 4))
                if len(seen) == 2:
                    break
        for rnd in range(1, args.rounds + 1):
            for binary, port in zip(args.binaries, s.ports):
                base = "http://127.0.0.1:%d" % port
                slow = threading.Thread(target=get, args=(base + "/sleep?2",))
                slow.start()
                time.sleep(0.3)
                took = concurrent(base + "/sleep-pid?0.007", 8)
                slow.join()
                worst[binary].append(max(took))
                print("round %d %s: slowest of 8 quick requests %.0f ms" % (rnd, binary, max(took) * 1000),
                      file=sys.stderr)
    finally:
        s.stop()
    for binary, values in worst.items():
        print("%s --timeout %s: slowest quick request per round (ms): %s; median %.0f" % (
            binary, args.timeout, " ".join("%.0f" % (v * 1000) for v in values),
            sorted(values)[len(values) // 2] * 1000))


def concurrent_pids(url, n):
    """The pids that served n concurrent GETs of url (a /sleep-pid path)."""
    pids = [b""] * n

    def one(i):
        pids[i] = get(url)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pids


if __name__ == "__main__":
    main()

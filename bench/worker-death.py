#!/usr/bin/python3
"""How many POSTs fail for each worker that dies under load.

nginx never sends a failed POST again, so every POST lost with a dying
worker reaches the client as a 502. Starts nginx with kept connections
(a keepalive upstream, fastcgi_keep_conn on; nginx buffers the bodies, as
uWSGI fails POSTs without that even when no worker dies) in front of each
server, all with 2 workers serving testdata/apps/djangoapp.py, and in
each round, for each server in turn, posts 64 KiB bodies to its echo
view (`wrk -t2 -c16 --timeout 30s`) for the same time twice: once while
a random worker is killed with SIGKILL every second, once with none
killed. Prints per server, summed over the rounds, the POSTs answered,
those that failed (non-2xx, read errors and timeouts, as wrk counts
them) with kills and without, the kills, and the POSTs failed per kill
beyond those that fail without any.

Servers: bin/wsgibridge fastcgi; with --baseline BIN another wsgibridge
binary (a build of an earlier commit); and uWSGI (`--fastcgi-socket
--master --processes 2`).

Usage: bench/worker-death.py [--rounds 3] [--seconds 20] [--every 1]
       [--baseline BIN]
       (from the repository root, after make build; needs Debian's nginx,
       wrk, uwsgi, uwsgi-plugin-python3 and python3-django)
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from harness import FASTCGI_PARAMS, Procs, descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS_DIR = os.path.join(ROOT, "testdata", "apps")
PY = "/usr/bin/python3"
SPEC = "djangoapp:application"
POST_LUA = """wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


class Setup:
    """nginx and the servers, each behind its own port."""

    def __init__(self, servers):
        self.dir = tempfile.mkdtemp(prefix="wsgibridge-death-")
        self.procs = Procs(self.dir)
        with open(os.path.join(self.dir, "post.lua"), "w") as f:
            f.write(POST_LUA)
        self.ports, self.pids = {}, {}
        blocks = []
        for i, (name, cmd) in enumerate(servers):
            sock = os.path.join(self.dir, "s%d.sock" % i)
            self.pids[name] = self.procs.start([a.replace("{sock}", sock) for a in cmd], name + ".log", cwd=APPS_DIR)
            self.ports[name] = 18500 + i
            blocks.append("upstream s%d { server unix:%s; keepalive 16; }\n"
                          "server { listen 127.0.0.1:%d; location / { %s"
                          " fastcgi_pass s%d; fastcgi_keep_conn on; } }"
                          % (i, sock, self.ports[name], FASTCGI_PARAMS, i))
        self.procs.start_nginx(blocks, "client_max_body_size 8m;")
        for name, port in self.ports.items():
            self.wait(name, port)

    def wait(self, name, port):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                req = urllib.request.Request("http://127.0.0.1:%d/echo" % port, data=b"x", method="POST")
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.read() == b"x":
                        return
            except Exception:
                pass
            time.sleep(0.1)
        raise SystemExit("worker-death: %s does not answer on port %d" % (name, port))

    def stop(self):
        self.procs.stop()

    def round(self, name, seconds, every):
        """Posts for seconds while killing a worker of name every every
        seconds (0: none); returns (answered, failed, kills)."""
        stop = threading.Event()
        kills = [0]

        def killer():
            while every and not stop.wait(every):
                pids = descendants(self.pids[name])[1:]
                if pids:
                    try:
                        os.kill(random.choice(pids), signal.SIGKILL)
                        kills[0] += 1
                    except ProcessLookupError:
                        pass
        t = threading.Thread(target=killer)
        t.start()
        # wrk's timeout is 30 s, not its 2 s: a POST that waits while the
        # pool backs off from a crash storm is slow, not lost.
        out = subprocess.run(["wrk", "-t2", "-c16", "-d%ds" % seconds, "--timeout", "30s", "-s", os.path.join(self.dir, "post.lua"),
                              "http://127.0.0.1:%d/echo" % self.ports[name]], capture_output=True, text=True).stdout
        stop.set()
        t.join()
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        failed = int(non2xx.group(1)) if non2xx else 0
        if errors:
            failed += sum(int(x) for x in errors.groups()[1:])
        time.sleep(2)  # the pool whole again before the next
        return total, failed, kills[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--baseline", default="", help="another wsgibridge binary to measure beside this one")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between kills")
    args = ap.parse_args()
    daemon = ["fastcgi", "--bind", "unix:{sock}", "--socket-mode", "0666", "--workers", "2", "--python", PY,
              "--chdir", APPS_DIR, SPEC]
    servers = [("wsgibridge", [os.path.join(ROOT, "bin", "wsgibridge")] + daemon)]
    if args.baseline:
        servers.append(("baseline", [os.path.abspath(args.baseline)] + daemon))
    servers.append(("uwsgi-fcgi", ["uwsgi", "--plugin", "python3", "--fastcgi-socket", "{sock}", "--chmod-socket=666",
                                   "--master", "--processes", "2", "--disable-logging", "--chdir", APPS_DIR,
                                   "--module", SPEC]))
    s = Setup(servers)
    sums = {name: [0, 0, 0, 0] for name, _ in servers}
    try:
        for rnd in range(1, args.rounds + 1):
            for name, _ in servers:
                total, failed, kills = s.round(name, args.seconds, args.every)
                print("round %d %-10s %6d POSTs, %4d failed, %2d workers killed" % (rnd, name, total, failed, kills),
                      file=sys.stderr)
                quiet_total, quiet_failed, _ = s.round(name, args.seconds, 0)
                print("round %d %-10s %6d POSTs, %4d failed, none killed" % (rnd, name, quiet_total, quiet_failed),
                      file=sys.stderr)
                for i, v in enumerate((total, failed, kills, quiet_failed)):
                    sums[name][i] += v
    finally:
        s.stop()
    print("| server | POSTs | failed | workers killed | failed with none killed | failed per kill, beyond those |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (total, failed, kills, quiet) in sums.items():
        print("| %s | %d | %d | %d | %d | %.1f |" % (name, total, failed, kills, quiet,
                                                    (failed - quiet) / kills if kills else 0))


if __name__ == "__main__":
    main()

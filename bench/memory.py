#!/usr/bin/python3
"""The memory a server's processes take serving Django, and how soon a
worker killed under load is replaced.

Memory: for each worker count asked (--workers 4,8), starts each server
with that many workers serving testdata/apps/djangoapp.py behind one nginx
(1 worker process, access_log off): wsgibridge fastcgi, the same with
--preload, uWSGI (`--fastcgi-socket --master --processes N`, which imports
the app in the master and forks the workers from it), and gunicorn
(`--preload`, sync workers, behind proxy_pass). In each round, for each
server in turn, loads it (`wrk -t2 -c16`, its pages in turn: / and
/page/N), then reads the RSS and PSS of all its processes
(/proc/PID/smaps_rollup). Prints per server the median over rounds, and
PSS as a ratio to uWSGI's in the same round (median of the per-round
ratios).

Replacement (--kills K): each server with 1 worker, a client sending GETs
one after another; K times, 2 s apart, the worker is killed with SIGKILL,
and the time from the kill until the first request sent after it is
answered is taken (nginx's connection waits in the listening socket's
queue until the replacement takes it). Prints the median and the
largest.

Usage: bench/memory.py [--rounds 3] [--seconds 10] [--workers 4,8]
       [--kills 10]
       (from the repository root, after make build; needs Debian's nginx,
       wrk, uwsgi, uwsgi-plugin-python3, gunicorn and python3-django)
"""

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from harness import FASTCGI_PARAMS, Procs, descendants, memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS_DIR = os.path.join(ROOT, "testdata", "apps")
PY = "/usr/bin/python3"
SPEC = "djangoapp:application"
# wrk walks the app's pages, so that each worker runs more of Django than
# one view.
PAGES_LUA = """local n = 0
request = function()
    n = n + 1
    if n % 2 == 0 then return wrk.format("GET", "/") end
    return wrk.format("GET", "/page/" .. (n % 50))
end
"""


def servers(workers):
    """The servers measured, each as (name, command, protocol)."""
    own = os.path.join(ROOT, "bin", "wsgibridge")
    daemon = ["fastcgi", "--bind", "unix:{sock}", "--socket-mode", "0666", "--workers", str(workers),
              "--python", PY, "--chdir", APPS_DIR]
    return [
        ("wsgibridge", [own] + daemon + [SPEC], "fastcgi"),
        ("wsgibridge --preload", [own] + daemon + ["--preload", SPEC], "fastcgi"),
        ("uwsgi-fcgi", ["uwsgi", "--plugin", "python3", "--fastcgi-socket", "{sock}", "--chmod-socket=666", "--master",
                        "--processes", str(workers), "--disable-logging", "--chdir", APPS_DIR, "--module", SPEC], "fastcgi"),
        ("gunicorn --preload", ["gunicorn", "--preload", "--workers", str(workers), "--worker-class", "sync",
                                "--bind", "unix:{sock}", "--chdir", APPS_DIR, "--log-level", "warning", SPEC], "http"),
    ]


class Setup:
    """nginx and the servers, each behind its own port."""

    def __init__(self, specs, first_port):
        self.dir = tempfile.mkdtemp(prefix="wsgibridge-memory-")
        self.procs = Procs(self.dir)
        with open(os.path.join(self.dir, "pages.lua"), "w") as f:
            f.write(PAGES_LUA)
        self.ports, self.pids = {}, {}
        blocks = []
        for i, (name, cmd, protocol) in enumerate(specs):
            sock = os.path.join(self.dir, "s%d.sock" % i)
            self.pids[name] = self.procs.start([a.replace("{sock}", sock) for a in cmd], "s%d.log" % i, cwd=APPS_DIR)
            self.ports[name] = first_port + i
            if protocol == "http":
                where = "proxy_pass http://unix:%s;" % sock
            else:
                where = "%s fastcgi_pass unix:%s;" % (FASTCGI_PARAMS, sock)
            blocks.append("server { listen 127.0.0.1:%d; location / { %s } }" % (self.ports[name], where))
        self.procs.start_nginx(blocks)
        for name, port in self.ports.items():
            self.wait(name, port)

    def wait(self, name, port):
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if get(port, "/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("memory: %s does not answer on port %d" % (name, port))

    def load(self, name, seconds):
        out = subprocess.run(["wrk", "-t2", "-c16", "-d%ds" % seconds, "-s", os.path.join(self.dir, "pages.lua"),
                              "http://127.0.0.1:%d/" % self.ports[name]], capture_output=True, text=True).stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.procs.stop()


def get(port, path):
    """One GET on a connection of its own: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def measure_memory(args, workers):
    specs = servers(workers)
    s = Setup(specs, 18600)
    mem = {name: [] for name, _, _ in specs}
    ratio = {name: [] for name, _, _ in specs}
    try:
        for rnd in range(1, args.rounds + 1):
            pss = {}
            for name, _, _ in specs:
                rps = s.load(name, args.seconds)
                time.sleep(0.5)
                pids = descendants(s.pids[name])
                rss, pss[name] = memory(pids)
                mem[name].append((rss, pss[name], len(pids)))
                print("workers %d round %d %-22s %7.0f req/s  RSS %6.1f  PSS %6.1f MiB, %d processes"
                      % (workers, rnd, name, rps, rss, pss[name], len(pids)), file=sys.stderr)
            for name in pss:
                ratio[name].append(pss[name] / pss["uwsgi-fcgi"])
    finally:
        s.stop()
    print("\nDjango, %d workers: after %d s of load, median of %d rounds\n" % (workers, args.seconds, args.rounds))
    print("| server | RSS MiB | PSS MiB | PSS vs uwsgi-fcgi | processes |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in mem.items():
        print("| %s | %.1f | %.1f | %.2fx | %d |" % (name, statistics.median(r[0] for r in rows),
                                                     statistics.median(r[1] for r in rows),
                                                     statistics.median(ratio[name]), rows[-1][2]))


def measure_replacement(args):
    specs = [spec for spec in servers(1) if spec[2] == "fastcgi"]
    s = Setup(specs, 18650)
    print("\nDjango, 1 worker: ms from a kill -9 of the worker until the first request after it is answered (%d kills)\n"
          % args.kills)
    print("| server | median ms | largest ms |")
    print("|---|---:|---:|")
    try:
        for name, _, _ in specs:
            delays = replacement(s, name, args.kills)
            print("| %s | %.1f | %.1f |" % (name, statistics.median(delays), max(delays)))
            sys.stdout.flush()
    finally:
        s.stop()


def worker_of(s, name):
    """The worker of a server of 1 worker: for wsgibridge --preload, the
    child that is not the fork server, which the log names."""
    kids = descendants(s.pids[name])[1:]
    if "--preload" in name:
        with open(os.path.join(s.dir, "s%d.log" % list(s.pids).index(name))) as f:
            forkers = {int(p) for p in re.findall(r'fork server imported the app.* pid=(\d+)', f.read())}
        kids = [k for k in kids if k not in forkers]
    return kids[0] if len(kids) == 1 else None


def replacement(s, name, kills):
    """Kills the worker kills times under a client's GETs; returns the
    delays in ms."""
    stop = threading.Event()
    answers = []  # (sent, answered, status)

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status = get(s.ports[name], "/")[0]
            except OSError:
                status = 0
            answers.append((t0, time.monotonic(), status))
    t = threading.Thread(target=client)
    t.start()
    delays = []
    try:
        for _ in range(kills):
            time.sleep(2)
            pid = worker_of(s, name)
            if pid is None:
                continue
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            deadline = killed + 30
            while time.monotonic() < deadline:
                after = [a for a in answers if a[0] > killed and a[2] == 200]
                if after:
                    delays.append((after[0][1] - killed) * 1000)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        t.join()
    return delays


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", default="4,8")
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    for n in (int(w) for w in args.workers.split(",") if w):
        measure_memory(args, n)
    if args.kills:
        measure_replacement(args)


if __name__ == "__main__":
    main()

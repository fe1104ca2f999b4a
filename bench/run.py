#!/usr/bin/python3
"""wsgibridge's side-by-side benchmark against uWSGI and gunicorn.

Starts everything itself on loopback (nginx with 1 worker process and
access_log off; every server on a unix socket with 2 Python worker
processes), runs bounded loads with wrk, stops everything by pid, and
writes a markdown report. Rounds interleave the targets (A B C A B C ...)
so a noisy machine shifts them alike, and each target's req/s is also
given as a ratio to uWSGI's FastCGI mode measured in the same round.

Targets, per app:
  wsgibridge     wsgibridge fastcgi, the same nginx block as uwsgi-fcgi
  wsgibridge+    wsgibridge fastcgi, the README's recommended block
                 (keepalive upstream, fastcgi_keep_conn on,
                 fastcgi_request_buffering off)
  uwsgi-fcgi     uwsgi --plugin python3 --fastcgi-socket --master --processes 2
  uwsgi          uwsgi's native protocol (uwsgi_pass)
  gunicorn       gunicorn, 2 sync workers, via proxy_pass
  nginx          nginx answering by itself (return 200), the ceiling (hello)
  wsgibridge-http  wsgibridge http, 2 workers, via proxy_pass (gunicorn's place)
  nethttp        hello only: Go's net/http answering by itself (bench/nethttp),
                 via proxy_pass: the ceiling of any http mode with net/http
                 in front
  lighttpd       hello only: the wsgibridge daemon behind lighttpd, Caddy,
  caddy          H2O and HAProxy, configured as the README shows; mod_fcgid:
  h2o            Apache running the script form with mod_fcgid (up to 8
  haproxy        processes, each with one worker); front CPU is all of the
  mod_fcgid      front's processes
  baseline       with --baseline BIN: another wsgibridge binary (a build of an
  baseline+      earlier commit) behind the same blocks, so a change is
  baseline-http  measured against what it replaces in the same rounds
  variant        with --variant "FLAGS": this wsgibridge started with more
  variant+       flags ({dir} is the bench's folder), behind the same blocks
  variant-http

Per target: req/s, p50/p99 latency, CPU microseconds per request of the
front (nginx), the server (all its processes) and the load generator (wrk),
and RSS and PSS of the server's processes after the load.

The 1 MiB apps run twice: behind nginx's stock buffers, and (-inmem)
behind the block that keeps a whole response in nginx's memory.

Usage: bench/run.py [--rounds 3] [--seconds 10] [--apps hello,flask,...]
       [--targets wsgibridge,uwsgi-fcgi,...] [--baseline BIN] [--variant FLAGS]
       [--out FILE]   (from the repository root, after make build)
Needs Debian's nginx, wrk, uwsgi, uwsgi-plugin-python3, gunicorn,
python3-flask and python3-django.
"""

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import descendants, memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS_DIR = os.path.join(ROOT, "testdata", "apps")
PY = "/usr/bin/python3"

# What many sites add to nginx so that a whole response stays in memory
# rather than going through a temporary file: nginx then reads as fast as a
# server writes it, which its stock buffers never do.
IN_MEMORY = "fastcgi_buffers 64 32k; fastcgi_max_temp_file_size 0; client_body_buffer_size 2m;"

# name: (module, callable, path, wrk script or None, nginx's buffers,
# wsgibridge's flags for them, as the README gives them)
APPS = {
    "hello": ("hello", "application", "/", None, "", []),
    "flask": ("flaskapp", "application", "/", None, "", []),
    "django": ("djangoapp", "application", "/", None, "", []),
    "1mib-response": ("bulk", "big", "/", None, "", []),
    "1mib-post": ("bulk", "echo", "/", "post", "", []),
    "1mib-response-inmem": ("bulk", "big", "/", None, IN_MEMORY, ["--send-buffer", "256"]),
    "1mib-post-inmem": ("bulk", "echo", "/", "post", IN_MEMORY, ["--send-buffer", "256"]),
}
TARGETS = ["wsgibridge", "wsgibridge+", "uwsgi-fcgi", "uwsgi", "gunicorn", "nginx", "baseline", "baseline+",
           "variant", "variant+", "wsgibridge-http", "baseline-http", "variant-http",
           "lighttpd", "caddy", "h2o", "mod_fcgid", "nethttp", "haproxy"]
# The other FastCGI fronts, measured on hello only: the same wsgibridge
# daemon behind each, configured as the README shows (mod_fcgid runs its
# own processes of the script form).
FRONTS = ("lighttpd", "caddy", "h2o", "haproxy", "mod_fcgid")
# Ceilings that answer hello by themselves: nginx alone, and Go's net/http
# alone behind proxy_pass.
HELLO_ONLY = FRONTS + ("nginx", "nethttp")
BASE = "uwsgi-fcgi"
# The process that serves a target: the recommended block reaches the same
# wsgibridge; nginx answering by itself has no server behind it.
SERVER_OF = {"wsgibridge+": "wsgibridge", "baseline+": "baseline", "variant+": "variant", "nginx": None,
             "lighttpd": "wsgibridge", "caddy": "wsgibridge", "h2o": "wsgibridge", "haproxy": "wsgibridge",
             "mod_fcgid": None}
# What stands beside a wsgibridge target when asked for: the same blocks.
BESIDE = ("baseline", "variant")
PORTS = {t: 18300 + i for i, t in enumerate(TARGETS)}

POST_LUA = """wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def version(cmd):
    r = run(cmd)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total





class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="wsgibridge-bench-")
        os.makedirs(os.path.join(self.dir, "tmp"))
        with open(os.path.join(self.dir, "post.lua"), "w") as f:
            f.write(POST_LUA)
        self.procs = {}
        self.results = []  # (app, round, target, rps, p50, p99, cpu front/server/wrk per request, errors)
        self.mem = {}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.nethttp = os.path.join(self.dir, "nethttp")
        if "nethttp" in args.targets:
            r = run(["go", "build", "-o", self.nethttp, "./bench/nethttp"], cwd=ROOT)
            if r.returncode:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise SystemExit("bench: go build ./bench/nethttp failed: %s" % r.stderr.strip())

    def sock(self, name):
        return os.path.join(self.dir, name + ".sock")

    def start(self, name, cmd, log):
        with open(os.path.join(self.dir, log), "w") as out:
            self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=APPS_DIR,
                                                start_new_session=True)

    def stop_all(self):
        # SIGINT: uWSGI 2.0 takes SIGTERM as "reload"; the others stop on it.
        for name, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = {}

    def start_app(self, app):
        module, func, _, _, buffers, flags = APPS[app]
        spec = "%s:%s" % (module, func)
        own = os.path.join(ROOT, "bin", "wsgibridge")
        variant = self.args.variant.replace("{dir}", self.dir).split() if self.args.variant else None
        for name, binary, sock, extra in (("wsgibridge", own, "wb", []), ("baseline", self.args.baseline, "bl", []),
                                          ("variant", own if variant else None, "va", variant)):
            if binary:
                # The app's flags are the fastcgi mode's, this binary's.
                own_flags = flags if name == "wsgibridge" else []
                self.start(name, [binary, "fastcgi", "--bind", "unix:" + self.sock(sock), "--socket-mode", "0666",
                                  "--workers", "2", "--python", PY, "--chdir", APPS_DIR] + extra + own_flags + [spec],
                           name + ".log")
            if binary and name + "-http" in self.targets(app):
                # Behind nginx's proxy_pass, as gunicorn is.
                self.start(name + "-http", [binary, "http", "--bind", "unix:" + self.sock(sock + "h"), "--workers", "2",
                                            "--python", PY, "--chdir", APPS_DIR] + extra + [spec], name + "-http.log")
        if "nethttp" in self.targets(app):
            self.start("nethttp", [self.nethttp, self.sock("nh")], "nethttp.log")
        self.start("uwsgi-fcgi", ["uwsgi", "--plugin", "python3", "--fastcgi-socket", self.sock("uf"), "--chmod-socket=666",
                                  "--master", "--processes", "2", "--disable-logging", "--chdir", APPS_DIR,
                                  "--module", spec], "uwsgi-fcgi.log")
        self.start("uwsgi", ["uwsgi", "--plugin", "python3", "--socket", self.sock("un"), "--chmod-socket=666",
                             "--master", "--processes", "2", "--disable-logging", "--chdir", APPS_DIR,
                             "--module", spec], "uwsgi.log")
        self.start("gunicorn", ["gunicorn", "--workers", "2", "--worker-class", "sync", "--bind", "unix:" + self.sock("gu"),
                                "--chdir", APPS_DIR, "--log-level", "warning", spec], "gunicorn.log")
        user = "user root;" if os.geteuid() == 0 else ""
        d = self.dir
        conf = """worker_processes 1;
%(user)s
pid %(d)s/nginx.pid;
error_log %(d)s/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_max_body_size 8m;
    client_body_temp_path %(d)s/tmp; fastcgi_temp_path %(d)s/tmp; proxy_temp_path %(d)s/tmp;
    uwsgi_temp_path %(d)s/tmp; scgi_temp_path %(d)s/tmp;
    %(buffers)s
    upstream wb_keep { server unix:%(wb)s; keepalive 32; }
    server { listen 127.0.0.1:%(p0)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%(wb)s; } }
    server { listen 127.0.0.1:%(p1)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass wb_keep; fastcgi_keep_conn on; fastcgi_request_buffering off; } }
    server { listen 127.0.0.1:%(p2)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%(uf)s; } }
    server { listen 127.0.0.1:%(p3)d; location / { include /etc/nginx/uwsgi_params; uwsgi_pass unix:%(un)s; } }
    server { listen 127.0.0.1:%(p4)d; location / { proxy_pass http://unix:%(gu)s; } }
    server { listen 127.0.0.1:%(p5)d; location / { default_type text/plain; return 200 "Hello, world!"; } }
    upstream bl_keep { server unix:%(bl)s; keepalive 32; }
    server { listen 127.0.0.1:%(p6)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%(bl)s; } }
    server { listen 127.0.0.1:%(p7)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass bl_keep; fastcgi_keep_conn on; fastcgi_request_buffering off; } }
    upstream va_keep { server unix:%(va)s; keepalive 32; }
    server { listen 127.0.0.1:%(p8)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%(va)s; } }
    server { listen 127.0.0.1:%(p9)d; location / { include /etc/nginx/fastcgi_params; fastcgi_pass va_keep; fastcgi_keep_conn on; fastcgi_request_buffering off; } }
    server { listen 127.0.0.1:%(p10)d; location / { proxy_pass http://unix:%(wbh)s; } }
    server { listen 127.0.0.1:%(p11)d; location / { proxy_pass http://unix:%(blh)s; } }
    server { listen 127.0.0.1:%(p12)d; location / { proxy_pass http://unix:%(vah)s; } }
    server { listen 127.0.0.1:%(p17)d; location / { proxy_pass http://unix:%(nh)s; } }
}
""" % dict(user=user, d=d, buffers=buffers, wb=self.sock("wb"), uf=self.sock("uf"), un=self.sock("un"), gu=self.sock("gu"),
           bl=self.sock("bl"), va=self.sock("va"), wbh=self.sock("wbh"), blh=self.sock("blh"), vah=self.sock("vah"),
           nh=self.sock("nh"),
           **{"p%d" % i: PORTS[t] for i, t in enumerate(TARGETS)})
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.start("nginx", ["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d, "-g", "daemon off;"], "nginx.log")
        for front in FRONTS:
            if front in self.targets(app):
                self.start_front(front, spec)
        for t in self.targets(app):
            wait_for(PORTS[t], post=APPS[app][3] == "post", what=t)

    def start_front(self, front, spec):
        """Starts another FastCGI front before the wsgibridge daemon, as the
        README configures it."""
        d, port, wb = self.dir, PORTS[front], self.sock("wb")
        os.makedirs(os.path.join(d, front), exist_ok=True)
        conf = os.path.join(d, front, "conf")
        if front == "lighttpd":
            text = """server.document-root = "%(d)s"
server.port = %(port)d
server.bind = "127.0.0.1"
server.modules += ( "mod_fastcgi" )
server.stream-response-body = 2
fastcgi.server = ( "/" => (( "socket" => "%(wb)s", "check-local" => "disable", "fix-root-scriptname" => "enable" )) )
"""
            cmd = ["lighttpd", "-D", "-f", conf]
        elif front == "caddy":
            text = """{
	admin off
	auto_https off
}
http://127.0.0.1:%(port)d {
	reverse_proxy unix/%(wb)s {
		transport fastcgi
		flush_interval -1
	}
}
"""
            cmd = ["caddy", "run", "--config", conf, "--adapter", "caddyfile"]
        elif front == "h2o":
            text = """%(user)slisten:
  host: 127.0.0.1
  port: %(port)d
error-log: %(d)s/h2o/error.log
hosts:
  default:
    paths:
      "/":
        fastcgi.connect:
          port: %(wb)s
          type: unix
"""
            cmd = ["h2o", "-c", conf]
        elif front == "haproxy":
            text = """defaults
	mode http
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend web
	bind 127.0.0.1:%(port)d
	default_backend app
backend app
	use-fcgi-app wsgi
	server wsgi %(wb)s proto fcgi
fcgi-app wsgi
	pass-header Authorization
	docroot /
"""
            cmd = ["haproxy", "-db", "-f", conf]
        else:
            script = os.path.join(d, front, "app.wsgi")
            with open(script, "w") as f:
                f.write("#!%s\napp = %s\nchdir = %s\npython = %s\n" % (os.path.join(ROOT, "bin", "wsgibridge"), spec, APPS_DIR, PY))
            os.chmod(script, 0o755)
            os.makedirs(os.path.join(d, front, "ipc"), exist_ok=True)
            # Apache's user runs the script: it must reach it.
            for path, mode in ((d, 0o755), (os.path.join(d, front), 0o755), (os.path.join(d, front, "ipc"), 0o777)):
                os.chmod(path, mode)
            text = """ServerRoot "%(d)s/mod_fcgid"
ServerName 127.0.0.1
Listen 127.0.0.1:%(port)d
PidFile "%(d)s/mod_fcgid/apache.pid"
ErrorLog "%(d)s/mod_fcgid/error.log"
%(apache_user)s
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule fcgid_module /usr/lib/apache2/modules/mod_fcgid.so
TypesConfig /etc/mime.types
FcgidIPCDir "%(d)s/mod_fcgid/ipc"
FcgidProcessTableFile "%(d)s/mod_fcgid/ipc/shm"
FcgidOutputBufferSize 0
FcgidMaxProcessesPerClass 8
Alias / "%(script)s"
<Directory "%(d)s/mod_fcgid">
    Options +ExecCGI
    AddHandler fcgid-script .wsgi
    Require all granted
</Directory>
"""
            cmd = ["apache2", "-f", conf, "-DFOREGROUND"]
        root = os.geteuid() == 0
        with open(conf, "w") as f:
            f.write(text % dict(d=d, port=port, wb=wb, user="user: root\n" if root else "",
                                apache_user="User www-data\nGroup www-data" if root else "",
                                script=os.path.join(d, front, "app.wsgi")))
        env = dict(os.environ, HOME=os.path.join(d, front), XDG_DATA_HOME=os.path.join(d, front),
                   XDG_CONFIG_HOME=os.path.join(d, front))
        with open(os.path.join(d, front + ".log"), "w") as out:
            self.procs[front] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=APPS_DIR,
                                                 start_new_session=True, env=env)

    def targets(self, app):
        """The targets measured for app; a baseline or a variant goes with
        its block, when asked for."""
        def wanted(t):
            for beside in BESIDE:
                if t.startswith(beside):
                    return getattr(self.args, beside) and t.replace(beside, "wsgibridge") in self.args.targets
            return t in self.args.targets
        return [t for t in TARGETS if (t not in HELLO_ONLY or app == "hello") and wanted(t)]

    def wrk(self, target, app, seconds):
        """Runs wrk; returns its output, its own CPU seconds, and how many
        times its threads slept waiting for data."""
        cmd = ["wrk", "-t2", "-c32", "-d%ds" % seconds, "--latency"]
        if APPS[app][3] == "post":
            cmd += ["-s", os.path.join(self.dir, "post.lua")]
        cmd.append("http://127.0.0.1:%d/" % PORTS[target])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout.read()
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0
        return out, ru.ru_utime + ru.ru_stime, ru.ru_nvcsw

    def measure(self, app, rnd, target):
        self.wrk(target, app, 2)  # warm-up, not measured
        if target in FRONTS:
            # Its own processes (mod_fcgid's wsgibridge processes among them).
            nginx_pids = descendants(self.procs[target].pid)
        else:
            nginx_pids = descendants(self.procs["nginx"].pid)[1:]  # the worker, not the master
        server = SERVER_OF.get(target, target)
        server_pids = descendants(self.procs[server].pid) if server else []
        before = (cpu_ticks(nginx_pids), cpu_ticks(server_pids))
        out, wrk_cpu, wrk_sleeps = self.wrk(target, app, self.args.seconds)
        after = (cpu_ticks(nginx_pids), cpu_ticks(server_pids))
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
        errors = " ".join(l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l)
        n = int(total.group(1)) if total else 0
        per = lambda ticks: ticks / self.tick / n * 1e6 if n else 0
        self.results.append(dict(app=app, round=rnd, target=target, rps=float(m.group(1)) if m else 0.0,
                                 p50=to_ms(lat.get("50")), p99=to_ms(lat.get("99")),
                                 cpu_front=per(after[0] - before[0]), cpu_server=per(after[1] - before[1]),
                                 cpu_wrk=wrk_cpu / n * 1e6 if n else 0, wrk_sleeps=wrk_sleeps / n if n else 0,
                                 errors=errors))
        if server_pids:
            pids = descendants(self.procs[server].pid)
            rss, pss = memory(pids)
            top = memory([self.procs[server].pid])[0]
            old = self.mem.get((app, target), (0, 0, 0, 0))
            # With the number of processes: a worker being replaced counts twice.
            self.mem[(app, target)] = (max(old[0], rss), max(old[1], pss), max(old[2], top), max(old[3], len(pids)))
        print("%-14s round %d %-12s %9.0f req/s %s" % (app, rnd, target, self.results[-1]["rps"], errors),
              file=sys.stderr)

    def direct(self, app):
        """Calls the app in this process as fast as it can: the app's own ceiling."""
        module, func, _, kind, _, _ = APPS[app]
        code = """
import sys, time, io
sys.path.insert(0, %r)
from %s import %s as app
env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "localhost",
       "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost", "wsgi.version": (1, 0),
       "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
       "wsgi.run_once": False}
body = b"x" * 1048576 if %r == "post" else b""
def sr(s, h, e=None): return None
n, end = 0, time.time() + 2
while time.time() < end:
    e = dict(env)
    e["wsgi.input"] = io.BytesIO(body)
    if body:
        e["REQUEST_METHOD"] = "POST"; e["CONTENT_LENGTH"] = str(len(body))
    r = app(e, sr)
    for _ in r: pass
    if hasattr(r, "close"): r.close()
    n += 1
print(n / 2)
""" % (APPS_DIR, module, func, kind)
        r = run([PY, "-c", code])
        try:
            return float(r.stdout.strip())
        except ValueError:
            return 0.0

    def report(self, directs, gobench):
        a = self.args
        lines = ["# wsgibridge benchmark", "",
                 "Measured %s by `bench/run.py --rounds %d --seconds %d`." % (time.strftime("%Y-%m-%d"), a.rounds, a.seconds), "",
                 "## Machine and versions", "",
                 "- %d cores, %s, Linux %s" % (os.cpu_count(), cpu_model(), platform.release()),
                 "- %s; uWSGI %s; gunicorn %s; Python %s; wsgibridge at commit %s" % (
                     version(["nginx", "-v"]), version(["uwsgi", "--version"]),
                     version(["gunicorn", "--version"]).split()[-1].strip("()"), version([PY, "--version"]).split()[-1],
                     git_rev()),
                 ] + (["- baseline: another wsgibridge binary, `%s`" % os.path.basename(a.baseline)] if a.baseline else []) + (
                 ["- variant: this wsgibridge with `%s`" % a.variant] if a.variant else []) + [
                 "",
                 "## Settings", "",
                 "- nginx: 1 worker process, `access_log off`, upstreams on unix sockets; each server with 2 Python"
                 " worker processes (wsgibridge `--workers 2`; uWSGI `--master --processes 2 --disable-logging`;"
                 " gunicorn `--workers 2 --worker-class sync`). wsgibridge and its `+` are `wsgibridge fastcgi` behind"
                 " nginx's stock `fastcgi_pass` and behind the recommended block (kept connections, unbuffered"
                 " bodies); `-http` is `wsgibridge http` behind `proxy_pass`, as gunicorn is (HTTP/1.0, a connection"
                 " per request); `nethttp` is Go's net/http answering hello by itself behind the same `proxy_pass`"
                 " (`bench/nethttp`), the most any http mode with net/http in front can serve.",
                 "- Load: `wrk -t2 -c32 -d%ds --latency` after an unmeasured 2 s warm-up; %d rounds, targets"
                 " interleaved in each round; the POST app posts 1 MiB (`wrk -s`)." % (a.seconds, a.rounds),
                 "- nginx's buffers: its defaults (what exceeds its 8 buffers of 4 KiB may go through a temporary file),"
                 " except for the `-inmem` apps, which add `%s` to every server block alike; there wsgibridge (not a"
                 " baseline) runs with `--send-buffer 256`, as the README says for that block." % IN_MEMORY,
                 "- req/s: median over rounds (min-max); ratio: median of the per-round ratio to %s;"
                 " latency: medians; CPU: microseconds of CPU per request, from /proc before and after the load"
                 " (front = the nginx worker, server = all the server's processes, wrk = the load generator);"
                 " wrk sleeps: its threads' voluntary context switches per request, most of them a wake-up the front"
                 " pays for when it writes to a client that waits;"
                 " memory: RSS and PSS of the server's processes after the load, the largest over rounds, the RSS of"
                 " the supervising process alone (wsgibridge's Go daemon, uWSGI's master, gunicorn's arbiter), and the"
                 " most processes counted." % BASE,
                 ""]
        for app in a.apps:
            lines += ["## %s" % app, "",
                      "Called directly in one Python process: %.0f calls/s." % directs.get(app, 0), "",
                      "| target | req/s | vs %s | p50 ms | p99 ms | CPU us/req front / server / wrk | wrk sleeps/req | RSS / PSS MiB (supervisor RSS), processes | errors |" % BASE,
                      "|---|---:|---:|---:|---:|---|---:|---|---|"]
            for t in self.targets(app):
                rows = [r for r in self.results if r["app"] == app and r["target"] == t]
                if not rows:
                    continue
                rps = [r["rps"] for r in rows]
                ratios = []
                for r in rows:
                    base = [x["rps"] for x in self.results if x["app"] == app and x["round"] == r["round"] and x["target"] == BASE]
                    if base and base[0]:
                        ratios.append(r["rps"] / base[0])
                rss, pss, top, procs = self.mem.get((app, t), (0, 0, 0, 0))
                med = lambda k: statistics.median(r[k] for r in rows)
                lines.append("| %s | %.0f (%.0f-%.0f) | %.2fx | %.2f | %.2f | %.1f / %.1f / %.1f | %.1f | %s | %s |" % (
                    t, statistics.median(rps), min(rps), max(rps), statistics.median(ratios) if ratios else 0,
                    med("p50"), med("p99"), med("cpu_front"), med("cpu_server"), med("cpu_wrk"), med("wrk_sleeps"),
                    "%.1f / %.1f (%.1f), %d" % (rss, pss, top, procs) if rss else "-", " ".join(sorted({r["errors"] for r in rows if r["errors"]})) or ""))
            lines.append("")
        if gobench:
            lines += ["## Go benchmarks", "", "`go test -run '^$' -bench . -benchmem ./bridge`:", "", "```", gobench.strip(), "```", ""]
        return "\n".join(lines)


def wait_for(port, post, what, timeout=30):
    """Waits until the target on port answers a request like the load's."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request("http://127.0.0.1:%d/" % port, data=b"x" if post else None)
            urllib.request.urlopen(req, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit("bench: %s did not answer on port %d" % (what, port))


def to_ms(v):
    if not v:
        return 0.0
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_rev():
    r = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    return r.stdout.strip() or "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--targets", default=",".join(TARGETS), help="the targets to measure (uwsgi-fcgi always)")
    ap.add_argument("--baseline", default="", help="another wsgibridge binary to measure beside this one")
    ap.add_argument("--variant", default="", help="more flags for a second wsgibridge measured beside this one")
    ap.add_argument("--out", default="")
    ap.add_argument("--no-go", action="store_true", help="skip the Go benchmarks")
    args = ap.parse_args()
    args.apps = [a for a in args.apps.split(",") if a]
    args.targets = set(args.targets.split(",")) | {BASE}
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    for tool in ("nginx", "wrk", "uwsgi", "gunicorn"):
        if not shutil.which(tool):
            raise SystemExit("bench: %s is not installed (make bench installs it)" % tool)
    b = Bench(args)
    directs = {}
    try:
        for app in args.apps:
            b.start_app(app)
            try:
                for rnd in range(1, args.rounds + 1):
                    for t in b.targets(app):
                        b.measure(app, rnd, t)
            finally:
                b.stop_all()
            directs[app] = b.direct(app)
    finally:
        b.stop_all()
        shutil.rmtree(b.dir, ignore_errors=True)
    gobench = ""
    if not args.no_go:
        r = run(["go", "test", "-run", "^$", "-bench", ".", "-benchmem", "./bridge"], cwd=ROOT)
        gobench = "\n".join(l for l in r.stdout.splitlines() if l.startswith("Benchmark"))
    text = b.report(directs, gobench)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

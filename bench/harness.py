"""What the bench scripts share: the processes they start (each in its
session, its output in a log in the bench's folder, stopped by pid and
killed if it will not stop), the nginx they put in front, and how they
read a server's processes and memory."""

import os
import shutil
import signal
import subprocess


# The FastCGI params every server gets alike, the path in PATH_INFO:
# uWSGI takes nginx's stock SCRIPT_NAME (the whole path) for the mount
# point.
FASTCGI_PARAMS = " ".join("fastcgi_param %s %s;" % kv for kv in (
    ("REQUEST_METHOD", "$request_method"), ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
    ("SCRIPT_NAME", '""'), ("PATH_INFO", "$uri"), ("QUERY_STRING", "$query_string"), ("REQUEST_URI", "$request_uri"),
    ("SERVER_PROTOCOL", "$server_protocol"), ("SERVER_NAME", "$server_name"), ("SERVER_PORT", "$server_port"),
    ("REMOTE_ADDR", "$remote_addr"), ("HTTP_HOST", "$host")))


def descendants(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory(pids):
    """RSS and PSS of pids, in MiB."""
    rss = pss = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


class Procs:
    """The processes a bench script started, with their logs in dir."""

    def __init__(self, dir):
        self.dir = dir
        self.procs = []

    def start(self, cmd, log, cwd=None):
        """Starts cmd, its output into log; returns its pid."""
        with open(os.path.join(self.dir, log), "w") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        self.procs.append(p)
        return p.pid

    def start_nginx(self, servers, http=""):
        """Starts nginx (1 worker process, access_log off) with the server
        and upstream blocks in servers, and the directives in http."""
        d = self.dir
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("worker_processes 1;\n%s\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
                    "events { worker_connections 1024; }\nhttp {\n access_log off;\n %s\n"
                    " client_body_temp_path %s/tmp; fastcgi_temp_path %s/tmp;\n%s\n}\n"
                    % ("user root;" if os.geteuid() == 0 else "", d, d, http, d, d, "\n".join(servers)))
        return self.start(["nginx", "-c", conf, "-p", d, "-g", "daemon off;"], "nginx.log")

    def stop(self):
        """Stops them all (uWSGI stops on SIGINT, the others on SIGTERM),
        and removes the folder."""
        for p in self.procs:
            p.send_signal(signal.SIGINT if "uwsgi" in str(p.args) else signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

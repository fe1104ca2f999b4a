"""What the bench scripts beside run.py share: the processes they start
(each in its session, its output in a log in the bench's folder, stopped
by pid and killed if it will not stop) and the nginx they put in front."""

import os
import shutil
import signal
import subprocess


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

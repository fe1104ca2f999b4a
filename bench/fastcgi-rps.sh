#!/usr/bin/env bash
# Requests per second of the hello app through nginx (1 worker process,
# access_log off, upstreams on unix sockets, 2 Python workers each), side by
# side in one run with rounds interleaved, so a noisy machine shifts all
# targets alike:
#   wsgibridge   wsgibridge fastcgi, nginx block as for uWSGI (stock fastcgi_params)
#   wsgibridge+  the README's recommended block (keepalive upstream, fastcgi_keep_conn on,
#                fastcgi_request_buffering off)
#   uwsgi        uwsgi --plugin python3 --fastcgi-socket --master --processes 2 --disable-logging
# Load: wrk -t2 -c32 -d${SECONDS_PER_RUN:-10}s --latency after a 2 s warm-up.
# Needs Debian's nginx, wrk, uwsgi and uwsgi-plugin-python3.
# Usage: bench/fastcgi-rps.sh [ROUNDS]  (from the repository root, after make build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
secs=${SECONDS_PER_RUN:-10}
py=/usr/bin/python3
dir=$(mktemp -d)
pids=()
cleanup() {
	# SIGINT: uWSGI 2.0 takes SIGTERM as "reload", not "stop".
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/tmp"

"$root/bin/wsgibridge" fastcgi --bind "unix:$dir/wb.sock" --socket-mode 0666 --workers 2 \
	--python "$py" --chdir "$root/testdata/apps" hello 2>"$dir/wb.log" &
pids+=($!)
uwsgi --plugin python3 --fastcgi-socket "$dir/uwsgi.sock" --chmod-socket=666 --master --processes 2 \
	--disable-logging --chdir "$root/testdata/apps" --module hello:application >"$dir/uwsgi.log" 2>&1 &
pids+=($!)

user=""
[ "$(id -u)" = 0 ] && user="user root;"
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
$user
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
    upstream wb_keep { server unix:$dir/wb.sock; keepalive 32; }
    server {
        listen 127.0.0.1:18081;
        location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$dir/wb.sock; }
    }
    server {
        listen 127.0.0.1:18082;
        location / { include /etc/nginx/fastcgi_params; fastcgi_pass wb_keep; fastcgi_keep_conn on; fastcgi_request_buffering off; }
    }
    server {
        listen 127.0.0.1:18083;
        location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$dir/uwsgi.sock; }
    }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' &
pids+=($!)

for port in 18081 18082 18083; do
	for _ in $(seq 100); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" = 200 ] && break
		sleep 0.1
	done
	curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "target on port $port does not answer"; cat "$dir"/*.log; exit 1; }
done

declare -A name=([18081]=wsgibridge [18082]=wsgibridge+ [18083]=uwsgi)
results=$dir/results
for r in $(seq "$rounds"); do
	for port in 18081 18082 18083; do
		wrk -t2 -c32 -d2s "http://127.0.0.1:$port/" >/dev/null
		out=$(wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$port/")
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
		errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
		echo "${name[$port]} $r $rps $p99 $errs" | tee -a "$results" >&2
	done
done

"$py" - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r[0], []).append((float(r[2]), r[3], " ".join(r[4:])))
base = statistics.median(x[0] for x in by["uwsgi"])
print("| target | req/s median | min | max | p99 (per round) | vs uwsgi |")
print("|---|---:|---:|---:|---|---:|")
for k in ("wsgibridge", "wsgibridge+", "uwsgi"):
    v = [x[0] for x in by[k]]
    m = statistics.median(v)
    print("| %s | %.0f | %.0f | %.0f | %s | %.2fx |" % (k, m, min(v), max(v), " ".join(x[1] for x in by[k]), m / base))
errs = [x[2] for k in by for x in by[k] if x[2]]
if errs:
    print("\nerrors:", errs)
PY

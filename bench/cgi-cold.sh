#!/usr/bin/env bash
# Cold one-shot CGI latency, side by side: wsgibridge cgi against
# wsgiref.handlers.CGIHandler, for the hello, Flask and Django apps, and
# Python's own start-up as the floor. Each run is one whole CGI request
# (process start to exit) with the environment Apache would give it.
# Needs hyperfine and Debian's python3-flask and python3-django.
# Usage: bench/cgi-cold.sh [RUNS]  (from the repository root, after make build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-40}
py=/usr/bin/python3
bin=$root/bin/wsgibridge
cd "$root/testdata/apps"
export REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 SERVER_NAME=localhost SERVER_PORT=80 \
	SCRIPT_NAME=/app PATH_INFO=/ QUERY_STRING= REMOTE_ADDR=127.0.0.1 HTTP_HOST=localhost \
	GATEWAY_INTERFACE=CGI/1.1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
hyperfine -N --warmup 5 --runs "$runs" --export-json "$out" \
	-n "python3 start-up (-c pass)" "$py -c pass" \
	-n "hello: CGIHandler" "$py $root/bench/cgihandler.py hello" \
	-n "hello: wsgibridge cgi" "$bin cgi --python $py hello" \
	-n "flask: CGIHandler" "$py $root/bench/cgihandler.py flaskapp" \
	-n "flask: wsgibridge cgi" "$bin cgi --python $py flaskapp" \
	-n "django: CGIHandler" "$py $root/bench/cgihandler.py djangoapp" \
	-n "django: wsgibridge cgi" "$bin cgi --python $py djangoapp" >/dev/null
"$py" - "$out" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: r["median"] * 1000 for r in results}
print("| command | median ms | min ms | max ms | vs CGIHandler |")
print("|---|---:|---:|---:|---:|")
for r in results:
    name = r["command"]
    peer = name.split(":")[0] + ": CGIHandler"
    ratio = "%.3fx" % (med[name] / med[peer]) if peer in med and peer != name else ""
    print("| %s | %.1f | %.1f | %.1f | %s |" % (name, med[name], r["min"] * 1000, r["max"] * 1000, ratio))
PY

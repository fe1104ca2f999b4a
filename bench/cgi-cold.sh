#!/usr/bin/env bash
# Cold one-shot CGI latency, side by side: wsgibridge cgi against
# wsgiref.handlers.CGIHandler, for the hello, Flask and Django apps, and
# Python's own start-up as the floor. Each run is one whole CGI request
# (process start to exit) with the environment Apache would give it.
# Needs hyperfine and Debian's python3-flask and python3-django.
# Usage: bench/cgi-cold.sh [RUNS [BASELINE]]  (from the repository root,
# after make build); BASELINE, another wsgibridge binary (a build of an
# earlier commit), is measured beside it in the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-40}
baseline=${2:+$(realpath "$2")}
py=/usr/bin/python3
bin=$root/bin/wsgibridge
cd "$root/testdata/apps"
export REQUEST_METHOD=GET SERVER_PROTOCOL=HTTP/1.1 SERVER_NAME=localhost SERVER_PORT=80 \
	SCRIPT_NAME=/app PATH_INFO=/ QUERY_STRING= REMOTE_ADDR=127.0.0.1 HTTP_HOST=localhost \
	GATEWAY_INTERFACE=CGI/1.1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cmds=(-n "python3 start-up (-c pass)" "$py -c pass")
for app in hello flaskapp djangoapp; do
	name=${app%app}
	cmds+=(-n "$name: CGIHandler" "$py $root/bench/cgihandler.py $app"
		-n "$name: wsgibridge cgi" "$bin cgi --python $py $app")
	if [ -n "$baseline" ]; then
		cmds+=(-n "$name: baseline cgi" "$baseline cgi --python $py $app")
	fi
done
hyperfine -N --warmup 5 --runs "$runs" --export-json "$out" "${cmds[@]}" >/dev/null
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

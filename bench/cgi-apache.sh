#!/usr/bin/env bash
# CGI through Apache (mod_cgid, ScriptAlias), side by side in one run with
# rounds interleaved: wsgiref.handlers.CGIHandler, one-shot wsgibridge cgi,
# and wsgibridge cgi handing off to a warm pool it started itself
# (spawn = yes; measured after a warm-up), for the hello, Flask and Django
# apps. Load: wrk -t1 -c4 -d${SECONDS_PER_RUN:-5}s --latency per target
# after a 1 s warm-up. Reports req/s and median latency, and the ratio to
# CGIHandler for the same app.
# Needs Debian's apache2, wrk, python3-flask and python3-django.
# Usage: bench/cgi-apache.sh [ROUNDS]  (from the repository root, after make build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
secs=${SECONDS_PER_RUN:-5}
py=/usr/bin/python3
port=18190
dir=$(mktemp -d)
chmod 755 "$dir"
mkdir "$dir/cgi-bin" "$dir/htdocs" "$dir/apps" "$dir/run"
cp "$root/bin/wsgibridge" "$dir/"
cp "$root"/testdata/apps/{hello,flaskapp,djangoapp}.py "$dir/apps/"
user=""
if [ "$(id -u)" = 0 ]; then
	user=$'User www-data\nGroup www-data'
	chown www-data:www-data "$dir/run"
fi
chmod 700 "$dir/run"

declare -A module=([hello]=hello [flask]=flaskapp [django]=djangoapp)
for app in hello flask django; do
	m=${module[$app]}
	printf '#!%s\nimport sys\nsys.path.insert(0, "%s/apps")\nfrom wsgiref.handlers import CGIHandler\nfrom %s import application\nCGIHandler().run(application)\n' \
		"$py" "$dir" "$m" >"$dir/cgi-bin/$app-cgihandler.wsgi"
	printf '#!%s/wsgibridge\napp = %s\npython = %s\nchdir = %s/apps\n' "$dir" "$m" "$py" "$dir" >"$dir/cgi-bin/$app-oneshot.wsgi"
	printf '#!%s/wsgibridge\napp = %s\npython = %s\nchdir = %s/apps\npool = unix:%s/run/%s.sock\nspawn = yes\n' \
		"$dir" "$m" "$py" "$dir" "$dir" "$app" >"$dir/cgi-bin/$app-pool.wsgi"
done
chmod 755 "$dir"/cgi-bin/*

conf=$(<"$root/testdata/apache/cgi.conf")
conf=${conf//@DIR@/$dir}
conf=${conf//@PORT@/$port}
conf=${conf//@MODULES@//usr/lib/apache2/modules}
conf=${conf//@USER@/$user}
printf '%s\n' "$conf" >"$dir/httpd.conf"
apache=$(command -v apache2 || echo /usr/sbin/apache2)
"$apache" -f "$dir/httpd.conf" -DFOREGROUND &
apid=$!
cleanup() {
	kill -TERM "$apid" 2>/dev/null || true
	for s in "$dir"/run/*.stamp; do
		[ -e "$s" ] && kill -TERM "$(cut -d' ' -f1 "$s")" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

results=$dir/results
for r in $(seq "$rounds"); do
	for app in hello flask django; do
		for mode in cgihandler oneshot pool; do
			url="http://127.0.0.1:$port/$app-$mode/"
			code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
			[ "$code" = 200 ] || { echo "$url answers $code"; tail -20 "$dir/error.log"; exit 1; }
			wrk -t1 -c4 -d1s "$url" >/dev/null
			out=$(wrk -t1 -c4 -d"${secs}s" --latency "$url")
			rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
			p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
			errs=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
			echo "$app $mode $r $rps $p50 $errs" | tee -a "$results" >&2
		done
	done
done

"$py" - "$results" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit) and (unit != "s" or not v.endswith(("ms", "us"))):
            return float(v[: -len(unit)]) * f
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
for r in rows:
    data.setdefault((r[0], r[1]), []).append((float(r[3]), ms(r[4]), " ".join(r[5:])))
print("| app | server | req/s median (min-max) | median latency | vs CGIHandler req/s |")
print("|---|---|---:|---:|---:|")
names = {"cgihandler": "wsgiref CGIHandler", "oneshot": "wsgibridge cgi", "pool": "wsgibridge cgi, pool hand-off"}
for app in ("hello", "flask", "django"):
    base = statistics.median(x[0] for x in data[(app, "cgihandler")])
    for mode in ("cgihandler", "oneshot", "pool"):
        v = data[(app, mode)]
        rps = [x[0] for x in v]
        print("| %s | %s | %.0f (%.0f-%.0f) | %.2f ms | %.2fx |" % (app, names[mode], statistics.median(rps), min(rps), max(rps),
              statistics.median(x[1] for x in v), statistics.median(rps) / base))
errs = sorted({x[2] for v in data.values() for x in v if x[2]})
if errs:
    print("\nerrors:", errs)
PY

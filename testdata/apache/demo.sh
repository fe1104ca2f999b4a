#!/usr/bin/env bash
# Serves testdata/apps/demo.py through Apache (mod_cgid) and wsgibridge's
# script form on http://127.0.0.1:${PORT:-8000}/demo/ until Ctrl-C.
# Run by "make demo", after the binary is built in bin/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
port=${PORT:-8000}
httpd=$(command -v apache2 || echo /usr/sbin/apache2)

# A folder Apache's user (www-data when we are root) can read.
dir=$(mktemp -d "${TMPDIR:-/tmp}/wsgibridge-demo.XXXXXX")
chmod 755 "$dir"
mkdir "$dir/cgi-bin" "$dir/htdocs" "$dir/apps"
cp "$root/bin/wsgibridge" "$dir/"
cp "$root/testdata/apps/demo.py" "$dir/apps/"
cat > "$dir/cgi-bin/demo.wsgi" <<SCRIPT
#!$dir/wsgibridge
app = demo:application
python = /usr/bin/python3
chdir = $dir/apps
SCRIPT
chmod 755 "$dir/cgi-bin/demo.wsgi"

user=""
if [ "$(id -u)" = 0 ]; then user=$'User www-data\nGroup www-data'; fi
conf=$(<"$root/testdata/apache/cgi.conf")
conf=${conf//@DIR@/$dir}
conf=${conf//@PORT@/$port}
conf=${conf//@MODULES@//usr/lib/apache2/modules}
conf=${conf//@USER@/$user}
printf '%s\n' "$conf" > "$dir/httpd.conf"

"$httpd" -f "$dir/httpd.conf" -DFOREGROUND &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 0' INT TERM
echo "wsgibridge demo: open http://127.0.0.1:$port/demo/  (Ctrl-C stops; Apache's log: $dir/error.log)"
wait $pid

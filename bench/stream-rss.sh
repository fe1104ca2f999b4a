#!/usr/bin/env bash
# Peak memory of a one-shot CGI request moving a large body: an upload the
# app reads in 64 KiB pieces (/count), a download it yields (/big), and both
# at once (/echo). Prints the peak RSS (VmHWM) of the bridge and of its
# Python worker, read from /proc while the request runs.
# Usage: bench/stream-rss.sh [MiB]  (from the repository root, after make build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-1024}
bytes=$((mib << 20))
export REQUEST_METHOD=POST SERVER_PROTOCOL=HTTP/1.1 SERVER_NAME=localhost SERVER_PORT=80 \
	SCRIPT_NAME=/app QUERY_STRING= CONTENT_TYPE=application/octet-stream

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

measure() { # name path content-length stdin-bytes
	local name=$1 path=$2 length=$3 input=$4 out bridge=0 worker=0 pid kid
	out=$(mktemp)
	head -c "$input" /dev/zero | PATH_INFO=$path CONTENT_LENGTH=$length QUERY_STRING=$mib \
		"$root/bin/wsgibridge" cgi --chdir "$root/testdata/apps" probe >"$out" &
	pid=$!
	local start=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		bridge=$(hwm "$pid"); bridge=${bridge:-0}
		kid=$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1 || true)
		if [ -n "$kid" ]; then w=$(hwm "$kid"); [ -n "$w" ] && worker=$w; fi
		sleep 0.05
	done
	wait "$pid"
	awk -v n="$name" -v m="$mib" -v t=$((SECONDS - start)) -v b="$bridge" -v w="$worker" -v r="$(stat -c %s "$out")" \
		'BEGIN { printf "| %s | %d MiB | %d s | %.1f MiB | %.1f MiB | %d bytes |\n", n, m, t, b / 1024, w / 1024, r }'
	rm -f "$out"
}

echo "| request | size | time | bridge peak RSS | worker peak RSS | response |"
echo "|---|---:|---:|---:|---:|---:|"
measure "upload, app reads it (/count)" /count "$bytes" "$bytes"
measure "download, app yields it (/big)" /big 0 0
measure "echo, both at once (/echo)" /echo "$bytes" "$bytes"

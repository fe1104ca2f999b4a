"""The README's demo: a page that shows what the app received, and a form
that posts back to it. Standard library only."""

import html
import os
import sys
from urllib.parse import parse_qs

SHOWN = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
         "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "HTTP_HOST",
         "HTTP_USER_AGENT", "wsgi.url_scheme", "wsgi.multiprocess", "wsgi.run_once")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>wsgibridge demo</title></head>
<body style="font-family: sans-serif; max-width: 50em; margin: 2em auto">
<h1>Hello from a WSGI app</h1>
<p>Served by Python %(python)s, worker pid %(pid)d, through wsgibridge.</p>
%(said)s
<form method="post"><input name="text" placeholder="say something">
<button>Send</button></form>
<h2>environ</h2><table>%(rows)s</table>
</body></html>
"""


def application(environ, start_response):
    said = ""
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
        said = "<p>You said: <b>%s</b></p>" % html.escape(form.get("text", [""])[0])
    rows = "".join("<tr><td><code>%s</code></td><td><code>%s</code></td></tr>"
                   % (key, html.escape(repr(environ.get(key)))) for key in SHOWN)
    body = (PAGE % {"python": sys.version.split()[0], "pid": os.getpid(),
                    "said": said, "rows": rows}).encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]

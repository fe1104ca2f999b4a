"""The CGI params a web server sent for a request, made into the PEP 3333
environ the app gets, by the same rules as the Go side's
(bridge/request.go): what is dropped (httpoxy's HTTP_PROXY, names that are
not CGI's), what is refused (a NUL byte, a bad CONTENT_LENGTH, a web
server that sends no method), the mount point, the URL scheme and the
server's name. The C fast path makes the usual environ by the same rules.
"""

from wsgibridge.wsgi import BASE_ENVIRON

# A FastCGI worker serves many requests.
FASTCGI_ENVIRON = {**BASE_ENVIRON, "wsgi.run_once": False}


class Refused(Exception):
    """A request refused before the app sees it; status is what the client gets."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


HTTP_NAME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
DROPPED = frozenset(("HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"))
METHOD_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Valid by the rules below; a set lookup spares the usual request the checks.
COMMON_METHODS = frozenset(("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"))
COMMON_PROTOCOLS = frozenset(("HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/3.0"))
# Names already judged, so that the rules cost a lookup per variable on
# the usual request; bounded, as names come from clients (HTTP_*).
name_ok = {}


def valid_name(name):
    ok = name_ok.get(name)
    if ok is None:
        if not name or name.startswith("wsgi.") or "=" in name or name in DROPPED:
            ok = False
        elif name.startswith("HTTP_"):
            ok = len(name) > 5 and HTTP_NAME.issuperset(name[5:])
        else:
            ok = True
        if len(name_ok) < 4096:
            name_ok[name] = ok
    return ok


# For each set of names a web server sends (nginx sends the same ones
# every time), the names the rules drop; bounded like name_ok.
dropped_names = {}


def make_environ(params, mount):
    """The PEP 3333 environ for a request's CGI params, by the same rules as
    the Go side's (bridge/request.go): returns (environ, content length or
    -1, whether a body without a length runs to its end). params becomes
    the environ. The C fast path makes the usual environ by the same rules."""
    if "\0" in "".join(params) or "\0" in "".join(params.values()):
        raise Refused(400, "NUL byte in a variable")
    names = tuple(params)
    drop = dropped_names.get(names)
    if drop is None:
        drop = [name for name in names if not valid_name(name)]
        if len(dropped_names) < 256:
            dropped_names[names] = drop
    env = params
    for name in drop:
        del env[name]
    length = -1
    cl = env.pop("CONTENT_LENGTH", "")
    if cl:
        if not cl.isdigit() or not cl.isascii() or len(cl) > 18:
            raise Refused(400, "invalid CONTENT_LENGTH %r" % cl)
        length = int(cl)
        env["CONTENT_LENGTH"] = cl
    method = env.get("REQUEST_METHOD", "")
    if method not in COMMON_METHODS and (not method or not METHOD_CHARS.issuperset(method)):
        raise Refused(500, "gateway misconfigured: REQUEST_METHOD is %r" % method)
    proto = env.get("SERVER_PROTOCOL", "")
    if proto not in COMMON_PROTOCOLS and (proto[:5] != "HTTP/" or len(proto) == 5
                                          or proto[5:].strip("0123456789.")):
        raise Refused(500, "gateway misconfigured: SERVER_PROTOCOL is %r" % proto)
    script = env.get("SCRIPT_NAME", "")
    path = env.get("PATH_INFO", "")
    if mount is not None:
        path = path or env.get("DOCUMENT_URI", "") or script
        if path.startswith(mount) and (len(path) == len(mount) or path[len(mount)] == "/"):
            path = path[len(mount):]
        script = mount
    elif script.endswith("/"):
        script = script.rstrip("/")
        path = "/" + path.lstrip("/")
    env["SCRIPT_NAME"] = script
    env["PATH_INFO"] = path
    if "QUERY_STRING" not in env:
        env["QUERY_STRING"] = ""
    https = env.get("HTTPS")
    if https is not None and https.lower() in ("on", "1"):
        scheme = "https"
    else:
        scheme = "https" if env.get("REQUEST_SCHEME", "").lower() == "https" else "http"
    env["wsgi.url_scheme"] = scheme
    if not env.get("SERVER_NAME") or not env.get("SERVER_PORT"):
        host = env.get("HTTP_HOST", "")
        port = "443" if scheme == "https" else "80"
        name = host or "localhost"
        i = host.rfind(":")
        if i >= 0 and "]" not in host[i:]:
            name = host[:i]
            port = host[i + 1:] or port
        if not env.get("SERVER_NAME"):
            env["SERVER_NAME"] = name
        if not env.get("SERVER_PORT"):
            env["SERVER_PORT"] = port
    coding = env.get("HTTP_TRANSFER_ENCODING")
    to_eof = length < 0 and coding is not None and "chunked" in coding.lower()
    return env, length, to_eof

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
    unknown = False
    cl = env.pop("CONTENT_LENGTH", "")
    if cl == "-1":
        # A body of unknown length (Caddy sends it for a chunked upload,
        # and for HTTP/2 and HTTP/3 bodies): STDIN has its own end, so it
        # is read to there; respond gives the app the length it had.
        unknown = True
    elif cl:
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
    env["SCRIPT_NAME"], env["PATH_INFO"] = split_path(env, mount)
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
    to_eof = unknown or (length < 0 and coding is not None and "chunked" in coding.lower())
    return env, length, to_eof


# make_environ's mount: SCRIPT_NAME and PATH_INFO as the web server sent
# them (the CGI hand-off's daemon, which the CGI request's split suits).
KEEP = "keep"


def split_path(env, mount):
    """SCRIPT_NAME and PATH_INFO for the app. mount: KEEP; a mount point
    (--mount: the app runs there, PATH_INFO is the rest of the whole path,
    whatever split the web server made); or None, the rule for web servers
    as their guides configure them: a split the web server made is kept
    (mod_fcgid, lighttpd, Caddy's split), the whole path as SCRIPT_NAME
    with no PATH_INFO (nginx's stock fastcgi_params) becomes PATH_INFO,
    and a prefix the web server stripped (Caddy's handle_path: REQUEST_URI
    still has it) goes back into SCRIPT_NAME."""
    script = env.get("SCRIPT_NAME", "")
    path = env.get("PATH_INFO", "")
    if mount is None or mount == KEEP:
        if mount is None and not path:
            path, script = env.get("DOCUMENT_URI", "") or script, ""
        elif script.endswith("/"):
            script = script.rstrip("/")
            path = "/" + path.lstrip("/")
        if mount is None and "REQUEST_URI" in env:
            script = stripped_prefix(env["REQUEST_URI"], script + path) + script
        return script, path
    if path:
        script = script.rstrip("/")
        whole = script + "/" + path.lstrip("/") if script else path
    else:
        whole = env.get("DOCUMENT_URI", "") or script
    if whole.startswith(mount) and (len(whole) == len(mount) or whole[len(mount)] == "/"):
        whole = whole[len(mount):]
    return mount, whole


def stripped_prefix(uri, whole):
    """The prefix of uri's path that the web server stripped from the path
    it gave (whole): uri's path, decoded and normalised as web servers
    do, ends with whole after it; "" when it does not."""
    upath = uri.partition("?")[0]
    if upath == whole or not whole.startswith("/") or not upath.startswith("/"):
        return ""
    from urllib.parse import unquote_to_bytes
    upath = normalise(unquote_to_bytes(upath).decode("latin-1"))
    if len(upath) <= len(whole) or not upath.endswith(whole):
        return ""
    prefix = upath[:len(upath) - len(whole)]
    return prefix if prefix.startswith("/") and not prefix.endswith("/") else ""


def normalise(path):
    """path with its slashes merged and its dot segments resolved, as
    nginx does to the path it passes on."""
    out = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    norm = "/" + "/".join(out)
    return norm + "/" if path.endswith("/") and norm != "/" else norm

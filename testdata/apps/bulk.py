"""Benchmark apps that move 1 MiB: `big` answers 1 MiB, `echo` answers with
the request body."""

MIB = b"x" * (1 << 20)
TYPE = ("Content-Type", "application/octet-stream")


def big(environ, start_response):
    start_response("200 OK", [TYPE, ("Content-Length", str(len(MIB)))])
    return [MIB]


def echo(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [TYPE, ("Content-Length", str(len(body)))])
    return [body]

"""The frame protocol between the worker and the Go side, as the worker
sees it (bridge/protocol.go is the Go side's view). It covers the frames'
layout, kinds and flags and reading and writing them; what the frames
carry is the other modules' business.

After the worker's source, fd 3 carries frames from Go and fd 4 frames to
Go. Standard input is /dev/null and standard output goes to the error log
with standard error, so an app that prints can never corrupt a response.
The protocol fds are not inheritable, so a subprocess the app starts
cannot hold a response open.

Every frame is an 8-byte header and a payload:

    +--------+--------+-----------------+-----------------------------------+
    | type   | flags  | request id      | payload length                    |
    | uint8  | uint8  | uint16, big end | uint32, big endian                |
    +--------+--------+-----------------+-----------------------------------+

From Go: R (request: a marshal'd dict of str->str, the CGI environ), then
B (body bytes) frames and exactly one E (end of body). The worker must read
up to E before the next R, even if the app did not read the body.

To Go: Y (ready, once, after the app imported; payload: the app's own
source files, one per line, so the bridge can reload when they change) or
I (import failed, then exit), then per request: H (the CGI header block,
"Status:" line first), D (body bytes; flag FLUSH when the app yielded it
from a generator, so it reaches the client now), L (a message for the
bridge's log) and one F (finished) or X (aborted after headers were sent).
A FastCGI worker, which answers the web server itself, sends Go only L,
A (an access-log entry), C (the app's code changed) and F (it exits).
"""

import struct

HEADER = struct.Struct(">BBHI")

REQUEST, BODY, BODY_END = ord("R"), ord("B"), ord("E")
READY, IMPORT_FAILED = ord("Y"), ord("I")
HEAD, DATA, LOG, FINISHED, ABORTED = ord("H"), ord("D"), ord("L"), ord("F"), ord("X")
CHANGED = ord("C")  # FastCGI workers: the app's code changed; payload: the file
ACCESS = ord("A")  # FastCGI workers: method, uri, status, bytes, microseconds

# Request flags.
RUN_ONCE = 1
# BODY_END flag: the body broke off (the client went away, or sent a
# malformed body); payload: why.
BROKEN = 1
# DATA flag.
FLUSH = 1
# FINISHED flags: the response is an error page made by the worker; the
# worker exits after this request.
APP_ERROR, EXITING = 1, 2
# LOG flags (levels).
LOG_INFO, LOG_WARN, LOG_ERROR = 0, 1, 2

MAX_FRAME = 1 << 20


class ProtocolError(Exception):
    """The Go side sent something the protocol does not allow."""


def read_exact(rin, n):
    data = rin.read(n)
    if len(data) != n:
        raise ProtocolError("the bridge closed the pipe inside a frame")
    return data


def read_header(rin):
    return HEADER.unpack(read_exact(rin, 8))


def send(out, kind, payload=b"", flags=0, rid=0):
    """Writes one frame to out and flushes it."""
    out.write(HEADER.pack(kind, flags, rid, len(payload)) + payload)
    out.flush()

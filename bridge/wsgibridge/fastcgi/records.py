"""The FastCGI wire format (FastCGI 1.0, section 3): record headers, the
name-value pairs of PARAMS and GET_VALUES, and the records that carry a
response (STDOUT, END_REQUEST). Reading records off a connection is
connection's; what a request's records mean is request's.
"""

import struct

FCGI_BEGIN, FCGI_ABORT, FCGI_END, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 1, 2, 3, 4, 5, 6, 7
FCGI_DATA, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE = 8, 9, 10, 11
FCGI_RESPONDER, FCGI_KEEP_CONN = 1, 1
REQUEST_COMPLETE, CANT_MPX_CONN, UNKNOWN_ROLE = 0, 1, 3
RECORD = struct.Struct(">BBHHBx")
END_REQUEST = struct.Struct(">BBHHBxIB3x")
MAX_RECORD_CONTENT = 65528  # a multiple of 8: full records need no padding
MAX_PARAMS_BYTES = 256 * 1024
MAX_PARAMS = 1000


class ConnClosed(Exception):
    """The connection ended or broke, or carried what is not FastCGI; it
    is closed without a reply."""


def end_request(rid, status=REQUEST_COMPLETE):
    return END_REQUEST.pack(1, FCGI_END, rid, 8, 0, 0, status)


PADDING = [bytes(n) for n in range(8)]


# end_records by request id: web servers number the requests of a
# connection 1, or a few more.
ENDS = {}


def end_records(rid):
    """The empty STDOUT record that ends a response, and END_REQUEST."""
    tail = ENDS.get(rid)
    if tail is None:
        tail = RECORD.pack(1, FCGI_STDOUT, rid, 0, 0) + end_request(rid)
        if len(ENDS) < 64:
            ENDS[rid] = tail
    return tail


def stdout_records(rid, data, parts):
    """Appends data to parts as FCGI_STDOUT records, the content by
    reference, not copied."""
    if len(data) > MAX_RECORD_CONTENT:
        data = memoryview(data)
    for i in range(0, len(data), MAX_RECORD_CONTENT):
        chunk = data[i:i + MAX_RECORD_CONTENT]
        n = len(chunk)
        pad = -n & 7
        parts.append(RECORD.pack(1, FCGI_STDOUT, rid, n, pad))
        parts.append(chunk)
        if pad:
            parts.append(bytes(pad))


def decode_pairs(data, pairs, limit):
    """Adds the name-value pairs in data to the pairs dict (latin-1 str).
    A name sent twice keeps its last value, but an HTTP_* one, a header
    the client repeated (or spelled twice, X-A and X_A), gets its values
    joined in their order, as RFC 3875 4.1.18 asks."""
    text = str(data, "latin-1")  # one decode; the pairs are slices of it
    i, n, count, before = 0, len(data), 0, len(pairs)
    # Inline, not by a helper, and short lengths (one byte each, nearly
    # all of them) first: this loop runs for every variable of every request.
    try:
        while i < n:
            ln = data[i]
            lv = data[i + 1]
            if (ln | lv) >= 128:
                if ln >= 128:
                    ln = int.from_bytes(data[i:i + 4], "big") & 0x7FFFFFFF
                    i += 3
                lv = data[i + 1]
                if lv >= 128:
                    lv = int.from_bytes(data[i + 1:i + 5], "big") & 0x7FFFFFFF
                    i += 3
            i += 2
            j = i + ln
            i = j + lv
            pairs[text[j - ln:j]] = text[j:i]
            count += 1
    except IndexError:
        raise ConnClosed("malformed params") from None
    if i != n:
        raise ConnClosed("malformed params")
    if len(pairs) > limit:
        raise ConnClosed("more than %d params" % limit)
    if before + count != len(pairs):
        join_repeated(text, pairs)


def join_repeated(text, pairs):
    """Decodes the pairs in text again, the rare time a name came twice,
    joining the values of a repeated HTTP_* name (HTTP_COOKIE's with "; ")."""
    seen = {}
    i, n = 0, len(text)
    while i < n:
        ln, lv = ord(text[i]), ord(text[i + 1])
        if ln >= 128:
            ln = int.from_bytes(text[i:i + 4].encode("latin-1"), "big") & 0x7FFFFFFF
            i += 3
        lv = ord(text[i + 1])
        if lv >= 128:
            lv = int.from_bytes(text[i + 1:i + 5].encode("latin-1"), "big") & 0x7FFFFFFF
            i += 3
        i += 2
        name, value = text[i:i + ln], text[i + ln:i + ln + lv]
        i += ln + lv
        if name in seen and name.startswith("HTTP_"):
            value = seen[name] + ("; " if name == "HTTP_COOKIE" else ", ") + value
        seen[name] = value
    for name, value in seen.items():
        if name.startswith("HTTP_"):
            pairs[name] = value


# Eight bytes that are not a record (version 0): see cut_records.
NOT_A_RECORD = bytes(8)


def cut_records(rid, why):
    """What ends a response cut short: a STDERR record saying why (the web
    server logs it) and bytes that are not a record, so that every web
    server takes the response for failed. Ending the connection alone ends
    the response as if complete where the web server reads it to the
    connection's end (nginx without fastcgi_keep_conn), and a reset is for
    TCP only."""
    message = b"wsgibridge: the response is cut short: " + why[:1000] + b"\n"
    pad = -len(message) & 7
    return RECORD.pack(1, FCGI_STDERR, rid, len(message), pad) + message + PADDING[pad] + NOT_A_RECORD

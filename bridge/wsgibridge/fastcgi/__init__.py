"""The FastCGI responder (FastCGI 1.0, the responder role). Under
"wsgibridge fastcgi" each worker takes connections from the listening
socket itself and answers the web server directly, so a request crosses
no process but this one, as with PHP-FPM and uWSGI; the Go side
supervises (starts, stops, reloads, enforces the timeout) and hears only
log lines, access-log entries and code changes on fd 4.

    records     the wire format: record headers, name-value pairs, the
                response's STDOUT records and END_REQUEST
    connection  one connection: its read buffer, reads that never wait,
                writes that wait at most a minute
    environ     the CGI params of a request made into a PEP 3333 environ
    request     reading a request off a connection and running it
    response    a wsgi.Response sent as STDOUT records
    watch       the alarm that watches a running request: slow, aborted,
                past its timeout
    board       the page shared with the supervisor (bridge/board.go)
    server      the event loop: accepting, keeping and passing connections
    statuspath  the status and ping paths a worker answers itself
    fastpath    the optional C fast path (fastpath.c) and its loader
"""

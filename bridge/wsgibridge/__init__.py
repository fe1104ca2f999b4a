"""wsgibridge's Python worker: runs one WSGI application (PEP 3333) for
the Go side, which starts it, supervises it and reads what it reports.

The modules, one concern each:

    frames    the frame protocol between the worker and Go (fds 3 and 4)
    wsgi      the PEP 3333 semantics both protocols share: start_response,
              the checks of status and headers, running the app, stopping it
    pipe      requests sent by Go over the frames (the http and cgi modes)
    fastcgi/  the FastCGI responder: the worker answers the web server itself
    spool     the request-body spool of the FastCGI responder
    app       loading the app, and listing and watching its source files
    stacks    the Python stacks of every thread, for the supervisor
    main      the entry point: the fds, the signals, the import, the mode

The Go side sends these modules' source on fd 3 (bridge/python.go says
how) and a short bootstrap runs them, so no file of ours needs to be on
the machine; tracebacks name each module by its path in the repository.
"""

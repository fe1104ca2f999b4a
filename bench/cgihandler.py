"""Serves one CGI request with wsgiref.handlers.CGIHandler, the standard
library's CGI gateway: the peer wsgibridge's one-shot CGI mode is measured
against. Usage: python3 bench/cgihandler.py MODULE[:CALLABLE] (run in the
app's folder)."""

import importlib
import sys
from wsgiref.handlers import CGIHandler

sys.path.insert(0, "")
module, _, name = sys.argv[1].partition(":")
CGIHandler().run(getattr(importlib.import_module(module), name or "application"))

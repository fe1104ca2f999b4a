"""Loading the app (gunicorn's naming: MODULE[:CALLABLE] or
path/to/file.py[:CALLABLE]), listing the source files it imported from its
own folders (for the Go side's reload on change), and watching them for
a change. Reporting a failed import is main's.
"""

import os
import sys


def mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def load_app(spec):
    """Imports MODULE[:CALLABLE] or path/to/file.py[:CALLABLE]."""
    import importlib
    target, sep, name = spec.rpartition(":")
    if not sep:
        target, name = spec, ""
    name = name or "application"
    if target.endswith(".py") or os.sep in target:
        import importlib.util
        path = os.path.abspath(target)
        modname = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        modspec = importlib.util.spec_from_file_location(modname, path)
        if modspec is None:
            raise ImportError("cannot load %s as Python source" % path)
        module = importlib.util.module_from_spec(modspec)
        sys.modules[modname] = module
        modspec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    app = module
    for part in name.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AttributeError("module %r has no attribute %r" % (module.__name__, name)) from None
    if not callable(app):
        raise TypeError("%r in %r is %s, which is not callable" % (name, module.__name__, type(app).__name__))
    return app


def app_files(spec, pythonpath):
    """The source files of the modules imported from the app's own folders:
    the working directory, --pythonpath and the app file's folder."""
    target = spec.rpartition(":")[0] or spec
    roots = [os.getcwd()] + [os.path.abspath(d) for d in pythonpath]
    if target.endswith(".py") or os.sep in target:
        roots.append(os.path.dirname(os.path.abspath(target)))
    roots = tuple(os.path.join(r, "") for r in roots)
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and os.path.abspath(path).startswith(roots):
            files.add(os.path.abspath(path))
    return sorted(files)


def watch_list(files, imported_at):
    """The files to watch with their mtimes as imported. A file changed
    while the app imported (or just before: file times are coarse) counts
    as changed already, as its new code may not be what runs. The change
    time says so, not the mtime: an mtime can be set to anything, and one
    in the future (a copy from a machine whose clock is ahead, or a touch
    ahead) must neither hide a change made during the import nor reload
    every new worker of a file that is not changing."""
    import time
    now = time.time_ns()
    out = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append((path, None))
            continue
        seen = st.st_mtime_ns
        if imported_at - 20_000_000 < st.st_ctime_ns <= now:
            seen = -1
        out.append((path, seen))
    return out

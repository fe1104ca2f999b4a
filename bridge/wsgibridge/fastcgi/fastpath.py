"""Loading the C fast path (fastpath.c, beside this file): the FastCGI
worker's accept, its reading of the usual request and its making of the
usual environ, and the checks of the usual response headers, in C. It is
optional: where it cannot load, the Python does the same work.
"""

import os

from wsgibridge.frames import LOG_WARN


def load_fastpath(fd, log):
    """Loads the C fast path (fastpath.c), which the bridge passes
    as a shared object on fd, and returns the module; None,
    logged, when this Python cannot load it (a debug or free-threaded
    build cannot load the stable ABI): the worker does its work in
    Python then, which is slower but the same."""
    import _imp

    class Spec:  # what _imp reads of a ModuleSpec; importlib costs 1 MiB
        name = "_fastpath"
        origin = "/proc/self/fd/%d" % fd

    try:
        module = _imp.create_dynamic(Spec)
        _imp.exec_dynamic(module)
        return module
    except Exception as exc:
        log(LOG_WARN, "the C fast path did not load (%s: %s); requests are read in Python, "
            "which costs more CPU" % (type(exc).__name__, exc))
        return None
    finally:
        os.close(fd)

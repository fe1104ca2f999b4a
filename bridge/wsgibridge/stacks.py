"""The worker's Python stacks, for the supervisor, without stopping the
request: on SIGUSR2 faulthandler writes the stack of every thread to the
pipe the supervisor reads (bridge/stacks.go). It writes from its signal
handler, in C, so a dump comes also while the app is blocked in a C call
(a sleep, a socket read, a lock). The slow log, the status page's
/stacks and the kill of an app stuck past its timeout show them.
"""

# _signal, not signal: the signal module imports enum, 4 ms of a cold start.
import _signal


def install(fd):
    """Dumps the stacks to fd on SIGUSR2."""
    import faulthandler
    faulthandler.register(_signal.SIGUSR2, file=open(fd, "wb", buffering=0), all_threads=True, chain=False)

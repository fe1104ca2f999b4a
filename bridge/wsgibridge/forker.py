"""The fork server of --preload: a process that imported the app once and
forks the workers from it when the supervisor asks (bridge/forker.go),
so that the workers share the imported app's pages copy-on-write and a
new worker serves without importing the app again.

A request is one message on a SOCK_SEQPACKET socket: the worker's fds
(SCM_RIGHTS) and "TARGET,TARGET,...\\n" followed by the worker's command
line, NUL-separated; each fd goes to its target number in the worker.
The answer is "pid N", or "error WHY".

Each worker is forked twice, so that it is the supervisor's child (the
supervisor is a child subreaper): the supervisor then sees it exit and
why, and it lives on if this process is killed. A worker serves only
once the supervisor, having its pid, says go ("g" on the worker's fd 3):
one whose pid was lost with this process exits unseen by any client.
"""

import gc
import os
import sys

# Where a worker's fds wait before they go to their targets: above any
# target, so that no move overwrites an fd not yet moved.
_PARKED = 64

# What fork_worker returns in the worker.
IN_WORKER = "worker"

PR_SET_PDEATHSIG = 1
SIGKILL = 9


def parse_request(msg):
    """Splits a request's message into its targets and the command line."""
    head, _, argv = msg.partition(b"\n")
    targets = [int(t) for t in head.split(b",")] if head else []
    return targets, [a.decode("utf-8", "surrogateescape") for a in argv.split(b"\0")] if argv else []


def received_fds(ancdata):
    """The fds an SCM_RIGHTS message carried, in order."""
    import _socket
    fds = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(data) - len(data) % 4
            fds += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, n, 4)]
    return fds


def place(fds, targets):
    """Moves each fd to its target number. Stdout and stderr (1 and 2)
    stay inheritable, as an exec'd worker's are; the bridge's fds are not
    for the app's subprocesses."""
    import fcntl
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _PARKED) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(parked, targets):
        os.dup2(fd, target, inheritable=target <= 2)
        os.close(fd)


def die_with(supervisor):
    """Makes this process killed when the supervisor dies, as an exec'd
    worker is (Pdeathsig), once it is the supervisor's child; without
    ctypes, the worker still leaves when its pipes from the supervisor
    close."""
    import time
    deadline = time.monotonic() + 1
    while os.getppid() != supervisor and time.monotonic() < deadline:
        time.sleep(0.0002)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return
    if os.getppid() != supervisor:
        os._exit(1)


def serve_forks(fd):
    """Forks workers on the requests that come on fd until the supervisor
    closes it. It returns None in this process, when the supervisor is
    done with it, and the worker's command line in each worker."""
    # _socket, not socket: see main.py. Imported here, as the other
    # modes never need it.
    import _socket
    sock = _socket.socket(fileno=fd)
    supervisor = os.getppid()
    while True:
        msg, ancdata, _, _ = sock.recvmsg(64 * 1024, _socket.CMSG_SPACE(16 * 4))
        if not msg:
            sock.close()
            return None
        fds = received_fds(ancdata)
        targets, argv = parse_request(msg)
        if len(fds) != len(targets) or not argv:
            for f in fds:
                os.close(f)
            sock.send(b"error malformed request: %d fds for %d targets" % (len(fds), len(targets)))
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        # What the app made at import goes to the permanent generation, so
        # the workers' collections never write to those pages, which then
        # stay shared.
        gc.freeze()
        pid = fork_worker(sock, fds, targets, supervisor)
        if pid is IN_WORKER:
            return argv
        for f in fds:
            os.close(f)
        sock.send(b"pid %d" % pid if pid > 0 else b"error the fork failed")


def fork_worker(sock, fds, targets, supervisor):
    """Forks a worker through a child that exits at once; returns the
    worker's pid here (-1 if a fork failed) once the child is gone, so
    that the worker is the supervisor's child by then, and IN_WORKER in
    the worker, its fds in place."""
    r, w = os.pipe()
    try:
        child = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return -1
    if child == 0:
        worker = -1
        try:
            worker = os.fork()
            if worker == 0:
                os.close(r)
                os.close(w)
                become_worker(sock, fds, targets, supervisor)
                return IN_WORKER
            try:
                os.setpgid(worker, worker)
            except OSError:
                pass
            os.write(w, b"%d" % worker)
        except BaseException:
            os._exit(70 if worker == 0 else 1)
        os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        got = f.read()
    os.waitpid(child, 0)
    return int(got) if got else -1


def become_worker(sock, fds, targets, supervisor):
    """Makes the new process a worker: its own process group, as an exec'd
    worker's (a kill reaches what its app starts), its fds in place, and
    this server's socket closed."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    sock.close()
    place(fds, targets)
    die_with(supervisor)
    # The supervisor says go once it has the pid; if it never had it (it
    # gave up on the fork), the pipe closes and this worker never serves.
    if os.read(3, 1) != b"g":
        os._exit(0)

"""The fork server of --preload (wsgibridge.forker): its requests, how a
worker's fds go to their numbers, and a whole fork, with a process of the
test's standing in for the supervisor."""

import os
import socket
import sys
import unittest

from wsgibridge import forker

PR_SET_CHILD_SUBREAPER = 36


class RequestTest(unittest.TestCase):
    def test_parse_request(self):
        for msg, want in [
            (b"1,2,3,4\n--fastcgi\0slot=1\0--\0app", ([1, 2, 3, 4], ["--fastcgi", "slot=1", "--", "app"])),
            (b"3,4\napp", ([3, 4], ["app"])),
            (b"\n", ([], [])),
            (b"3\napp\0/srv/caf\xe9", ([3], ["app", "/srv/caf\udce9"])),
        ]:
            with self.subTest(msg=msg):
                self.assertEqual(want, forker.parse_request(msg))

    def test_received_fds_in_order(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        socket.send_fds(a, [b"x"], [w, r])
        _, ancdata, _, _ = b.recvmsg(16, socket.CMSG_SPACE(8))
        got = forker.received_fds(ancdata)
        self.addCleanup(lambda: [os.close(f) for f in got])
        self.assertEqual(2, len(got))
        self.assertEqual([os.fstat(w).st_ino, os.fstat(r).st_ino], [os.fstat(f).st_ino for f in got])


def in_child(test):
    """Runs test() in a forked child; returns what it wrote to the pipe
    it is given, and its exit status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            test(w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with open(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return out, os.waitstatus_to_exitcode(status)


class PlaceTest(unittest.TestCase):
    def test_fds_that_stand_on_each_others_targets(self):
        def test(out):
            # Three pipes' write ends; the first two swap numbers, the
            # third goes to a free one.
            pipes = [os.pipe() for _ in range(3)]
            ws = [p[1] for p in pipes]
            targets = [ws[1], ws[0], 40]
            forker.place(list(ws), targets)
            inheritable = [os.get_inheritable(t) for t in targets]
            for i, target in enumerate(targets):
                os.write(target, b"%d" % i)
                os.close(target)
            got = [os.read(p[0], 8) for p in pipes]
            os.write(out, repr((got, inheritable)).encode())
        out, code = in_child(test)
        self.assertEqual(0, code, out)
        self.assertEqual("([b'0', b'1', b'2'], [False, False, False])", out.decode())

    def test_stdio_stays_inheritable_the_rest_does_not(self):
        def test(out):
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            forker.place([w1, w2], [1, 41])
            os.write(out, repr((os.get_inheritable(1), os.get_inheritable(41))).encode())
        out, code = in_child(test)
        self.assertEqual(0, code, out)
        self.assertEqual("(True, False)", out.decode())


@unittest.skipUnless(sys.platform == "linux", "child subreapers are Linux's")
class ForkTest(unittest.TestCase):
    """A process of the test plays the supervisor: a child subreaper that
    starts the fork server and asks it for a worker."""

    def fork_one(self, go):
        """The supervisor asks for a worker, with a pipe to its fd 42 and
        its fd 3, on which it says go (go true) or closes; returns what
        it saw."""
        def supervisor(out):
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl")
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            server = os.fork()
            if server == 0:
                ours.close()
                argv = None
                try:
                    argv = forker.serve_forks(theirs.detach())
                except BaseException:
                    os._exit(2)
                if argv is None:
                    os._exit(0)
                # The worker: say what it is on fd 42, where the
                # supervisor's pipe was placed.
                os.write(42, repr((argv, os.getppid(), os.get_inheritable(42))).encode())
                os._exit(0)
            theirs.close()
            r, w = os.pipe()
            to_worker, worker_in = os.pipe()
            socket.send_fds(ours, [b"42,3\n--pipe\0--\0app"], [w, to_worker])
            os.close(w)
            os.close(to_worker)
            answer = ours.recv(64).decode()
            if go:
                os.write(worker_in, b"g")
            os.close(worker_in)
            worker = int(answer.split()[1])
            with open(r, "rb") as f:
                said = f.read().decode()
            # The worker is ours to wait for, not the fork server's.
            got, status = os.waitpid(worker, 0)
            ours.close()
            _, server_status = os.waitpid(server, 0)
            os.write(out, repr((answer.split()[0], said, got == worker, os.waitstatus_to_exitcode(status),
                                os.waitstatus_to_exitcode(server_status), os.getpid())).encode())
        out, code = in_child(supervisor)
        self.assertEqual(0, code, out)
        return eval(out.decode())

    def test_a_worker_is_the_supervisors_child_with_its_fds(self):
        word, said, waited, status, server_status, supervisor_pid = self.fork_one(go=True)
        self.assertEqual("pid", word)
        self.assertEqual(repr((["--pipe", "--", "app"], supervisor_pid, False)), said)
        self.assertTrue(waited)
        self.assertEqual(0, status)
        self.assertEqual(0, server_status, "the fork server ends when the supervisor closes its socket")

    def test_a_worker_not_told_to_go_never_serves(self):
        word, said, waited, status, _, _ = self.fork_one(go=False)
        self.assertEqual("pid", word)
        self.assertEqual("", said)
        self.assertTrue(waited)
        self.assertEqual(0, status)

    def test_a_malformed_request_is_answered_and_the_server_serves_on(self):
        def supervisor(out):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            server = os.fork()
            if server == 0:
                ours.close()
                os._exit(0 if forker.serve_forks(theirs.detach()) is None else 3)
            theirs.close()
            ours.send(b"3,4\napp")
            first = ours.recv(128)
            ours.close()
            _, status = os.waitpid(server, 0)
            os.write(out, repr((first, os.waitstatus_to_exitcode(status))).encode())
        out, code = in_child(supervisor)
        self.assertEqual(0, code, out)
        self.assertEqual(repr((b"error malformed request: 0 fds for 2 targets", 0)), out.decode())


if __name__ == "__main__":
    unittest.main()

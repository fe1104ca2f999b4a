"""The request-body spool (wsgibridge.spool)."""

import unittest

from wsgibridge import spool


class BodyTest(unittest.TestCase):
    def tearDown(self):
        self.assertEqual((spool.Body.held, spool.Body.collecting), (0, {}), "every body gave its memory back")

    def test_known_length(self):
        body = spool.Body(10)
        reused = bytearray(b"hijkl")
        for part in (b"abc", memoryview(b"defg"), reused):
            body.add(part)
        reused[:] = b"ZZZZZ"  # records are views of a buffer the next read reuses
        self.assertIsNone(body.file)
        self.assertEqual(body.reader().read(), b"abcdefghij", "cut to the length, and copied")
        short = spool.Body(10)
        short.add(b"abc")
        self.assertEqual(short.reader().read(), b"abc", "a body that ends early")

    def test_unknown_length_grows(self):
        body = spool.Body(-1)
        body.add(b"x" * 1000)
        body.add(memoryview(b"y" * 10))
        self.assertEqual(body.reader().read(), b"x" * 1000 + b"y" * 10)

    def test_memory_then_file_and_limit(self):
        body = spool.Body(spool.BODY_MEMORY + 10)
        body.add(b"a" * spool.BODY_MEMORY)
        self.assertIsNone(body.file)
        body.add(b"b" * 100)
        self.assertIsNotNone(body.file)
        with body.reader() as r:
            data = r.read()
        self.assertEqual(len(data), spool.BODY_MEMORY + 10, "cut to the limit")
        self.assertTrue(data.endswith(b"b" * 10))

    def test_bodies_being_collected_share_the_memory(self):
        half = spool.BODY_MEMORY // 2
        first, second, third = spool.Body(-1), spool.Body(-1), spool.Body(-1)
        first.add(b"a" * half)
        second.add(b"b" * half)
        self.assertFalse(second.fits(1), "past the shared memory another body waits")
        self.assertFalse(third.fits(1))
        self.assertTrue(first.fits(half), "the oldest may always grow")
        self.assertEqual(first.reader().read(), b"a" * half)
        self.assertTrue(second.fits(half), "the app took the oldest: the next is oldest now")
        self.assertTrue(third.fits(1), "and memory is free again")
        taken = spool.Body.taken
        second.spill()
        self.assertEqual(spool.Body.taken, taken + 1, "a spilled body frees its memory")
        self.assertEqual((spool.Body.held, spool.Body.collecting), (0, {}))
        second.add(b"c")
        with second.reader() as r:
            self.assertEqual(r.read(), b"b" * half + b"c")
        third.add(b"d")
        third.discard()
        self.assertEqual((spool.Body.held, spool.Body.collecting), (0, {}))

    def test_large_bodies_reuse_memory(self):
        """After keep_freed_blocks, 1 MiB bodies (received in 32 KiB
        records, then read whole) reuse the heap's pages. Without it glibc
        gives some back after each body here (224 page faults for these 20
        bodies), and under load all of them (480 per body, seen through
        nginx)."""
        import os
        import subprocess
        import sys
        code = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from wsgibridge import spool
spool.keep_freed_blocks()
piece = memoryview(b"x" * 32768)
def one():
    body = spool.Body(spool.BODY_MEMORY)
    for _ in range(spool.BODY_MEMORY // len(piece)):
        body.add(piece)
    assert len(body.reader().read()) == spool.BODY_MEMORY
one()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(spool.__file__)))
        out = subprocess.run([sys.executable, "-c", code, package_root],
                             capture_output=True, text=True, check=True).stdout
        self.assertLess(int(out), 20, "page faults for 20 bodies of 1 MiB")

"""The FastCGI responder's request-body spool: a body is collected whole
before the app runs (a web server may stop sending it once the response
begins), in memory up to BODY_MEMORY shared by the bodies a worker collects
at once, past that in an unlinked temporary file. When a body may grow is
decided here; reading the records is fastcgi.request's.
"""

import io

BODY_MEMORY = 1 << 20
BODY_STALL = 1.0  # seconds the oldest body may stall others before it goes to a file


class Body:
    """Collects a request body: in memory, as copies of the pieces that
    came, joined once when the app reads (no buffer of the whole length to
    zero first; see keep_freed_blocks for what the two copies cost
    malloc); past BODY_MEMORY, in an unlinked temporary file; keeping at
    most limit bytes (-1: all).

    The bodies a worker collects at once share BODY_MEMORY: the oldest may
    always grow, another only while they all fit (fits()), so that many
    uploads streamed at once wait in the web server and the kernel, not
    in the worker's memory, and are taken in turn."""

    held = 0  # bytes in memory of the bodies being collected
    collecting = {}  # those bodies, oldest first: when each last grew
    taken = 0  # counts the bodies that left collecting, freeing memory

    def __init__(self, limit):
        self.limit = limit
        self.size = 0
        self.file = None
        self.chunks = []

    def fits(self, n):
        """True if n more bytes may be added now."""
        return (self.file is not None or Body.held + n <= BODY_MEMORY
                or next(iter(Body.collecting), self) is self)

    def add(self, data, now=0.0):
        if self.limit >= 0:
            data = data[:self.limit - self.size]
        n = len(data)
        if not n:
            return
        if self.file is None and self.size + n > BODY_MEMORY:
            self.spill()
        if self.file is not None:
            self.file.write(data)
        else:
            self.chunks.append(bytes(data))
            Body.held += n
            Body.collecting[self] = now
        self.size += n

    def spill(self):
        """Moves what came so far to a temporary file, freeing its memory."""
        import tempfile
        self.file = tempfile.TemporaryFile()
        self.file.writelines(self.chunks)
        self.forget()

    def forget(self):
        if self.chunks is not None:
            self.chunks = None
            Body.held -= self.size
            if Body.collecting.pop(self, None) is not None:
                Body.taken += 1

    def reader(self):
        if self.file is None:
            data = b"".join(self.chunks)
            self.forget()
            return io.BytesIO(data)
        self.file.seek(0)
        return self.file

    def discard(self):
        """Drops a body that no app will read."""
        self.forget()
        if self.file is not None:
            self.file.close()


def keep_freed_blocks():
    """Frees one block of 2 * BODY_MEMORY, so that glibc's malloc keeps
    the memory of a request's large blocks for the next request. It gives
    memory back to the system when more than twice its mmap threshold lies
    free at the top of its heap, and raises that threshold (from 128 KiB,
    unless set by hand) to the size of each larger block that was mapped
    and freed. A request with a 1 MiB body has two such blocks alive at
    once (the pieces received, and the bytes the app reads): without this,
    freeing them gave the memory back after every request and the next
    faulted it in again, 480 page faults and over 1 ms of CPU per 1 MiB
    POST. After it, the heap keeps up to 4 MiB free at its top."""
    block = bytes(2 * BODY_MEMORY)
    del block

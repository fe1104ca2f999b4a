"""The board: memory each FastCGI worker shares with the supervisor and
with its peers, where a worker reports by its slot what the supervisor
and the other workers read without asking it: whether it is idle (its
peers hand it connections then), what it has served and how, and what it
runs. bridge/board.go is the Go side and draws the layout; the two must
agree.

Only the idle flags, the two words about the running request and the
count of accepted connections are written on every request; the counts by status and duration only when an
operator asked for them (Board.stats), and the running request's start
and line only once it has run STALL_AFTER.
"""

from bisect import bisect_left

SLOTS = 64
DEGRADED = SLOTS  # the byte after the idle flags: 1 while the pool is degraded
BLOCKS = 4096
BLOCK = 512
KEPT = BLOCKS + SLOTS * BLOCK  # each slot's table of kept connections (keep.py)
KEPT_SIZE = 128 * 8
SIZE = KEPT + SLOTS * KEPT_SIZE

SERVED, RUNNING, SINCE, SINCE_OF, CLASSES = 0, 1, 2, 3, 4
BUCKETS = CLASSES + 5
DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # seconds
MICROS = BUCKETS + len(DURATIONS) + 1
LINE = MICROS + 1
ACCEPTED = LINE + 1  # connections taken from the listening socket
LINE_AT = (ACCEPTED + 1) * 8


class Board:
    """A worker's view of the board: the whole page (its idle flags, a byte
    per slot, are read and written as the page's bytes) and its slot's
    block as words."""

    def __init__(self, page, slot, stats):
        self.page = page
        self.slot = slot
        self.stats = stats
        block = memoryview(page)[BLOCKS + slot * BLOCK:BLOCKS + (slot + 1) * BLOCK]
        self.words = block.cast("Q")
        self.line = block[LINE_AT:]
        self.kept = memoryview(page)[KEPT + slot * KEPT_SIZE:KEPT + (slot + 1) * KEPT_SIZE].cast("Q")

    def count(self, status, seconds):
        """Counts a request answered with status (b"200") that took seconds."""
        words = self.words
        words[BUCKETS + bisect_left(DURATIONS, seconds)] += 1
        words[MICROS] += int(seconds * 1e6)
        if 49 <= status[0] <= 53:  # b"1".."5"
            words[CLASSES + status[0] - 49] += 1

    def running(self, since_ns, method, path):
        """Tells what the request running for a while is, and since when
        (unix nanoseconds): method and path, the query dropped, cut to fit.
        SINCE_OF, written last, says which request they are of: the
        supervisor reads them only while it is the one running, so they
        need no clearing after it."""
        words = self.words
        words[SINCE_OF] = 0
        line = ("%s %s" % (method, path.partition("?")[0])).encode("latin-1", "replace")[:len(self.line)]
        self.line[:len(line)] = line
        words[LINE] = len(line)
        words[SINCE] = since_ns
        words[SINCE_OF] = words[RUNNING]


def open_board(fd, slot, stats):
    """Maps the board the supervisor passed on fd."""
    import mmap
    return Board(mmap.mmap(fd, SIZE), slot, stats)

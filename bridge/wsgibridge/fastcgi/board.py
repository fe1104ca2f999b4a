"""The board: a page of memory each FastCGI worker shares with the
supervisor and with its peers (bridge/board.go is the Go side), where a
worker reports by its slot what the supervisor and the other workers read
without asking it. One byte or word per slot, SLOTS slots:

    offset SLOT                  1 while the worker waits for work (idle)
    offset SERVED_AT + 8 * SLOT  the requests it has served, a little-endian
                                 uint64 that only grows
    offset RUNNING + SLOT        1 while its app runs under a timeout (the
                                 supervisor kills a worker whose app stays
                                 past it)

A busy worker passes its other connections on only while a peer is idle.
"""

import struct

SLOTS = 64
SERVED_AT = 64
SERVED = struct.Struct("<Q")
RUNNING = SERVED_AT + 8 * SLOTS


def open_board(fd):
    """Maps the board the supervisor passed on fd."""
    import mmap
    return mmap.mmap(fd, 4096)

"""The board as a worker writes it (wsgibridge.fastcgi.board)."""

import unittest

from wsgibridge.fastcgi import board


class BoardTest(unittest.TestCase):
    def setUp(self):
        self.page = bytearray(board.SIZE)
        self.board = board.Board(self.page, 3, True)

    def word(self, i, slot=3):
        at = board.BLOCKS + slot * board.BLOCK + 8 * i
        return int.from_bytes(self.page[at:at + 8], "little")

    def test_counts_by_status_and_duration(self):
        for status, seconds in ((b"200", 0.001), (b"404", 0.03), (b"499", 2.0), (b"200", 99.0), (b"-", 0.001)):
            self.board.count(status, seconds)
        self.assertEqual([self.word(board.CLASSES + i) for i in range(5)], [0, 2, 0, 2, 0], "by class; no status counts none")
        buckets = [self.word(board.BUCKETS + i) for i in range(len(board.DURATIONS) + 1)]
        self.assertEqual(buckets, [2, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1], "by duration, the last one beyond 30 s")
        self.assertEqual(self.word(board.MICROS), 1000 + 30000 + 2000000 + 99000000 + 1000)
        self.assertEqual(self.word(board.CLASSES, slot=2), 0, "another slot's block is not touched")

    def test_running_tells_its_request_without_the_query(self):
        self.board.words[board.RUNNING] = 17
        self.board.running(123456789, "GET", "/report?token=secret")
        line = bytes(self.page[board.BLOCKS + 3 * board.BLOCK + board.LINE_AT:][:self.word(board.LINE)])
        self.assertEqual(line, b"GET /report")
        self.assertEqual((self.word(board.SINCE), self.word(board.SINCE_OF)), (123456789, 17),
                         "the start, and which request it is of")
        self.board.running(1, "GET", "/" + "x" * 1000)
        self.assertEqual(self.word(board.LINE), board.BLOCK - board.LINE_AT, "a long line is cut to fit")

"""The FastCGI wire format (wsgibridge.fastcgi.records)."""

import unittest

from wsgibridge.fastcgi import records


class PairsTest(unittest.TestCase):
    def test_short_and_long_lengths(self):
        value = "v" * 200
        data = b"\x01\x02AXY" + b"\x04\x80\x00\x00\xc8PATH" + value.encode() + b"\x03\x02CAF\xc3\xa9"
        pairs = {}
        records.decode_pairs(data, pairs, 10)
        self.assertEqual(pairs, {"A": "XY", "PATH": value, "CAF": "\xc3\xa9"})

    def test_malformed(self):
        for data in (b"\x05\x01a", b"\x80\x00", b"\x01", b"\x01\x01ab\x00"):
            with self.assertRaises(records.ConnClosed, msg=data):
                records.decode_pairs(data, {}, 10)

    def test_too_many(self):
        with self.assertRaisesRegex(records.ConnClosed, "more than 2 params"):
            records.decode_pairs(b"\x01\x00a\x01\x00b\x01\x00c", {}, 2)


class RecordsTest(unittest.TestCase):
    def test_stdout_split_and_padded(self):
        data = b"x" * (records.MAX_RECORD_CONTENT + 3)
        parts = []
        records.stdout_records(7, data, parts)
        out = b"".join(parts)
        first = records.RECORD.unpack_from(out)
        self.assertEqual(first, (1, records.FCGI_STDOUT, 7, records.MAX_RECORD_CONTENT, 0))
        second = records.RECORD.unpack_from(out, 8 + records.MAX_RECORD_CONTENT)
        self.assertEqual(second, (1, records.FCGI_STDOUT, 7, 3, 5))
        self.assertEqual(len(out), 8 + records.MAX_RECORD_CONTENT + 8 + 3 + 5)

    def test_end_request(self):
        self.assertEqual(records.end_request(2, records.CANT_MPX_CONN),
                         bytes([1, 3, 0, 2, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))

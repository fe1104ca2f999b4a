"""Loading the app and watching its files (wsgibridge.app)."""

import os
import unittest

from wsgibridge import app


class LoadAppTest(unittest.TestCase):
    def test_not_callable(self):
        with self.assertRaises(TypeError):
            app.load_app("os:sep")

    def test_module_and_attribute(self):
        self.assertIs(app.load_app("os.path:join"), os.path.join)


class WatchListTest(unittest.TestCase):
    def test_changed_while_importing(self):
        import tempfile
        import time
        with tempfile.TemporaryDirectory() as d:
            old, future, new, new_future, gone = (
                os.path.join(d, n) for n in ("old.py", "future.py", "new.py", "new_future.py", "gone.py"))
            for path in (old, future):
                open(path, "w").close()
            now = time.time()
            os.utime(old, (now - 60, now - 60))
            os.utime(future, (now + 3600, now + 3600))
            # File times come from a clock that lags time_ns by a tick.
            time.sleep(0.05)
            imported_at = time.time_ns()
            for path in (new, new_future):
                open(path, "w").close()
            os.utime(new_future, (now + 2, now + 2))
            got = dict(app.watch_list([old, future, new, new_future, gone], imported_at))
            self.assertEqual(got[old], os.stat(old).st_mtime_ns, "unchanged: its time is kept")
            self.assertEqual(got[future], os.stat(future).st_mtime_ns,
                             "a future time set before the import is kept, or every new worker would reload")
            self.assertEqual(got[new], -1, "changed during the import: counts as changed")
            self.assertEqual(got[new_future], -1,
                             "changed during the import and touched ahead: counts as changed")
        self.assertIsNone(got[gone])
